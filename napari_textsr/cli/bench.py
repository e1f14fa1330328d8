"""``textsr bench``: PSNR/SSIM and caption effect of a model over captioned images."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from napari_textsr.cli import (
    add_consistency_option,
    add_self_ensemble_option,
    add_threads_option,
    command_help,
    consistency_choice,
)


def register(subparsers) -> None:
    from napari_textsr.training.degradations import NAMED_DEGRADATION_TITLES

    parser = subparsers.add_parser(
        "bench",
        help=command_help("bench"),
        description=(
            "For each captioned image: degrade it (--degradation: antialiased bicubic by default; seeded), upscale "
            "with bicubic and with the model given the image's caption, an empty caption, another image's caption, "
            "and the caption with right and with wrong degradation words in a phrasing training never used; report "
            "PSNR/SSIM (Y and RGB, border of SCALE px cropped), text-image similarity and speed, per image and on "
            "average, and the worst image against bicubic."
        ),
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DIR",
        help="captioned folder (images + captions.csv); repeatable",
    )
    parser.add_argument(
        "--split",
        choices=("all", "val", "train"),
        default="all",
        help="which part of each folder: the held-out validation split is 'val' (default: all)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction used by training")
    parser.add_argument("--split-seed", type=int, default=0, help="split seed used by training")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also score N synthetic captioned scenes (held out: use a seed training never used)",
    )
    parser.add_argument("--synthetic-seed", type=int, default=90210)
    parser.add_argument("--synthetic-size", type=int, default=256)
    parser.add_argument(
        "--model",
        metavar="SPEC",
        help="checkpoint path, bundled name or 'default' (the default, by either name, "
        "routes LR images whose pixels show JPEG quality <= 60 to the bundled model trained for them, as "
        "`textsr upscale` does)",
    )
    parser.add_argument("--scale", type=int, default=None, help="with --model default: which scale")
    parser.add_argument("--caption-index", type=int, default=0, help="which caption of each image (0: short)")
    parser.add_argument(
        "--degradation",
        action="append",
        default=None,
        metavar="NAME",
        help="how the LR is made: "
        + "; ".join(f"{k}: {v}" for k, v in NAMED_DEGRADATION_TITLES.items())
        + "; or 'all'. Repeatable (default bicubic-aa)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most N images per dataset")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--float32",
        action="store_true",
        help="no float16 autocast on a GPU, so the numbers match a CPU's (default: float16 on GPUs)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON")
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: print the pooled per-degradation table of an earlier run's --json report (README's "
        "tables are printed this way from the reports in docs/results/)",
    )
    add_consistency_option(parser, matched=True)
    add_self_ensemble_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=run)


def print_table(path: Path) -> int:
    """Print the pooled per-degradation PSNR-Y table of a saved ``--json`` report."""
    from napari_textsr.benchmark import BenchReport, degradation_table, routed_note

    reports = [BenchReport.from_dict(r) for r in json.loads(path.read_text(encoding="utf-8"))]
    if not reports:
        raise ValueError(f"{path} holds no bench report")
    first = reports[0]
    print(f"x{first.scale}, all datasets pooled, PSNR-Y (dB):")
    print(degradation_table(reports))
    print(f"model: {first.model.get('name')}; machine: {first.machine}; date: {first.date}; command: {first.command}")
    routed = routed_note(reports)
    if routed:
        print(routed)
    return 0


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_textsr.benchmark import VARIANTS, BenchReport, degradation_table, run_benchmark
    from napari_textsr.inference import load_model
    from napari_textsr.loading import default_for_input
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS

    if args.table is not None:
        return print_table(args.table)
    if args.model is None:
        raise ValueError("give --model SPEC (or --table JSON to print an earlier run's table)")
    if not args.data and not args.synthetic:
        raise ValueError("nothing to score: give --data DIR and/or --synthetic N")
    names = args.degradation or ["bicubic-aa"]
    if "all" in names:
        names = list(NAMED_DEGRADATIONS)
    consistency = consistency_choice(args, matched=True)  # ValueError for an unknown name, before any loading
    unknown = [n for n in names if n not in NAMED_DEGRADATIONS]
    if unknown:
        raise ValueError(
            f"unknown --degradation {', '.join(unknown)}; choose from {', '.join(NAMED_DEGRADATIONS)} or all"
        )
    upscaler = load_model(
        args.model,
        scale=args.scale,
        device=args.device,
        half=False if args.float32 else None,
        self_ensemble=args.self_ensemble,
    )
    # As `textsr upscale` does: the default's inputs that show heavy JPEG get the model trained for them.
    jpeg_spec = default_for_input(args.model, args.scale, FILE_WORDS_MAX_JPEG_QUALITY)
    jpeg_upscaler = None
    if str(jpeg_spec) != str(args.model):
        jpeg_upscaler = load_model(
            jpeg_spec,
            scale=upscaler.scale,
            device=args.device,
            half=False if args.float32 else None,
            self_ensemble=args.self_ensemble,
        )
        print(f"LR images whose pixels show JPEG quality <= {FILE_WORDS_MAX_JPEG_QUALITY} are upscaled by {jpeg_spec}")
    datasets = list(_datasets(args))
    reports = []
    for degradation in names:
        for name, items in datasets:
            with tqdm(total=len(items), desc=f"bench {name} {degradation}", unit="img", file=sys.stderr) as bar:
                report = run_benchmark(
                    upscaler,
                    items,
                    dataset=name,
                    degradation=degradation,
                    caption_index=args.caption_index,
                    progress=lambda done, total: bar.update(1),
                    jpeg_upscaler=jpeg_upscaler,
                    consistency=consistency if isinstance(consistency, str) else "",
                )
            report.command = shlex.join(["textsr", *sys.argv[1:]])
            reports.append(report)
            print(report.markdown())
            print()
        these = reports[-len(datasets) :]
        if len(these) > 1:
            pooled = BenchReport(these[0].model, "all", upscaler.scale, [i for r in these for i in r.images])
            means = {v: pooled.mean(v, "psnr_y") for v in VARIANTS}
            print(
                f"all {len(pooled.images)} images, {degradation}, PSNR Y (dB): "
                + ", ".join(f"{v.replace('_', ' ')} {means[v]:.2f}" for v in VARIANTS)
                + f"; true caption - bicubic {means['true_caption'] - means['bicubic']:+.2f}"
            )
            print()
    if len(names) > 1 or len(datasets) > 1:
        print(f"x{upscaler.scale}, all datasets pooled, PSNR-Y (dB):")
        print(degradation_table(reports))
    print(
        f"model: {upscaler.description.name} ({upscaler.description.method}, x{upscaler.scale}); "
        f"machine: {reports[0].machine}; date: {reports[0].date}"
    )
    if args.json:
        from napari_textsr.durable import write_text_atomic

        write_text_atomic(args.json, json.dumps([r.to_dict() for r in reports], indent=2))
    return 0


def _datasets(args: argparse.Namespace):
    from napari_textsr.synthetic import synthetic_dataset
    from napari_textsr.training.data import load_captioned_folder, split_train_val

    for folder in args.data:
        items = load_captioned_folder(folder)
        if args.split != "all":
            train, val = split_train_val(items, args.val_fraction, seed=args.split_seed)
            items = val if args.split == "val" else train
        yield f"{Path(folder).name} ({args.split})", items[: args.limit]
    if args.synthetic:
        items = synthetic_dataset(args.synthetic, seed=args.synthetic_seed, size=args.synthetic_size)
        yield f"synthetic (seed {args.synthetic_seed})", items[: args.limit]
