"""``textsr upscale`` (one image file to another) and ``textsr info`` (describe a model)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from napari_textsr.cli import add_threads_option, command_help


def register(subparsers) -> None:
    upscale = subparsers.add_parser(
        "upscale",
        help=command_help("upscale"),
        description=(
            "Upscale IN (png, jpg, tif: 8/16-bit, float, multi-page stacks, RGB/RGBA) and write OUT "
            "(.tif keeps any dtype and stack; .png uint8 or 16-bit grey; .jpg uint8). Same dtype and "
            "intensity range as the input; the caption, model and settings are stored in OUT's metadata."
        ),
    )
    upscale.add_argument("input", type=Path, metavar="IN", help="image to upscale")
    upscale.add_argument("output", type=Path, metavar="OUT", help="where to write the result")
    upscale.add_argument("--caption", default="", metavar="TEXT", help="what the image shows (default: none)")
    upscale.add_argument(
        "--model", default="default", metavar="SPEC",
        help="checkpoint path, bundled model name, 'default' (bundled, for --scale) or "
             "'random:<method>:<scale>[:<preset>]' (untrained; default: %(default)s)",
    )
    upscale.add_argument("--scale", type=int, default=None, help="required scale (picks the default model)")
    upscale.add_argument("--tile", type=int, default=None, metavar="N",
                         help="tile side in input pixels; 0 = no tiling (default: from free memory)")
    upscale.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    upscale.add_argument("--precision", choices=("auto", "full", "half"), default="auto",
                         help="half = float16 autocast on GPUs (auto: half on GPUs, full on the CPU)")
    upscale.add_argument("--consistency", action="store_true",
                         help="back-project so that bicubic downsampling of OUT reproduces IN; prints the error")
    upscale.add_argument("--reference", default=None, metavar="PATH|flip",
                         help="image prompt instead of the caption: an image file, or 'flip' for the horizontally "
                              "flipped input (PDN's protocol for uncaptioned images; middle slice of a stack)")
    upscale.add_argument("--attention-dir", type=Path, default=None, metavar="DIR",
                         help="write the attention maps (and the consistency map) here")
    upscale.add_argument("--attention-format", choices=("tif", "png"), default="tif",
                         help="float32 TIFF (default) or 8-bit PNG scaled to each map's maximum")
    regions = upscale.add_argument_group(
        "region captions",
        "a caption per labelled region; the rest of the image keeps --caption (see docs/api-and-cli.md)",
    )
    regions.add_argument("--regions", type=Path, default=None, metavar="LABELS",
                         help="label image on the input grid (Y, X integers, 0 = background; .tif or .png)")
    regions.add_argument("--region-captions", type=Path, default=None, metavar="CSV",
                         help="CSV of 'label,caption' rows (a header row 'label,caption' is allowed)")
    regions.add_argument("--feather", type=float, default=None, metavar="PX",
                         help="width in output pixels of the blend at region borders (default: 8)")
    upscale.add_argument("--text-effect", type=Path, default=None, metavar="FILE",
                         help="also upscale without any caption and write OUT - uncaptioned (signed, output "
                              "intensity units, float32 .tif; mean over colour channels)")
    upscale.add_argument("--report", type=Path, default=None, metavar="REPORT.json",
                         help="write an evidence report: SHA-256 of IN, OUT (file and array) and the model, every "
                              "parameter, versions, device, precision, statistics. OUT's embedded metadata then "
                              "leaves out the run time, so reruns write the same bytes")
    upscale.add_argument("--deterministic", action="store_true",
                         help="ask PyTorch for deterministic kernels (bit-identical GPU reruns; the CPU is anyway)")
    upscale.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_option(upscale)
    upscale.set_defaults(func=run_upscale)

    info = subparsers.add_parser(
        "info", help=command_help("info"),
        description="Print the model's description (method, scale, config, encoder, tiling, training record) as JSON.",
    )
    info.add_argument("spec", metavar="SPEC", help="checkpoint path, bundled name, 'default' or 'random:...'")
    info.add_argument("--scale", type=int, default=None)
    info.add_argument("--device", default="cpu", help="device to load on (default: cpu)")
    add_threads_option(info)
    info.set_defaults(func=run_info)


def _half(precision: str) -> bool | None:
    return {"auto": None, "full": False, "half": True}[precision]


def run_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_textsr.imageio import read_image_file, write_image_file, write_map
    from napari_textsr.inference import load_model
    from napari_textsr.report import sha256_file

    if args.output.resolve() == args.input.resolve():
        raise ValueError("OUT must differ from IN")
    if args.deterministic:
        from napari_textsr.report import enable_deterministic

        enable_deterministic()
    source = read_image_file(args.input)
    regions = _regions(args)
    upscaler = load_model(args.model, scale=args.scale, device=args.device, half=_half(args.precision))
    reference = _reference(args.reference, source)
    with tqdm(total=None, unit="tile", desc="upscale", file=sys.stderr, disable=args.quiet, leave=False) as bar:

        def progress(event) -> None:
            if bar.total != event.total:
                bar.reset(total=event.total)
            bar.n = event.done
            bar.set_postfix_str(event.message, refresh=False)
            bar.refresh()

        result = upscaler.upscale(
            source.data,
            args.caption,
            rgb=source.rgb,
            tile=args.tile,
            consistency=args.consistency,
            reference=reference,
            attention=args.attention_dir is not None,
            progress=progress,
            regions=regions,
            text_effect=args.text_effect is not None,
        )
    provenance = result.provenance()
    provenance["input"] = str(args.input)
    if reference is not None:
        provenance["reference"] = args.reference
    if args.report is not None:  # the report keeps the times; the file stays the same on a rerun
        provenance.pop("time", None)
        provenance.pop("seconds", None)
        provenance["report"] = args.report.name  # the name only: a rerun elsewhere writes the same bytes
    write_image_file(args.output, result.image, source.rgb, metadata=provenance)
    written = [args.output]
    if args.text_effect is not None:
        write_map(args.text_effect, result.text_effect)
    if args.attention_dir is not None:
        stem = args.output.name.split(".")[0]
        suffix = args.attention_format
        # Numbered in the model's order, which also keeps repeated words apart.
        for i, (name, values) in enumerate(result.attention.items(), start=1):
            written += write_map(args.attention_dir / f"{stem}_attention{i:02d}_{_safe(name)}.{suffix}", values)
        if result.consistency_map is not None:
            written += write_map(args.attention_dir / f"{stem}_consistency.{suffix}", result.consistency_map)
    d = result.model
    line = (
        f"wrote {args.output} {result.image.shape} {result.image.dtype} "
        f"(x{result.scale}, {d.name}, {result.seconds:.1f} s"
        + (f", tile {result.tile}" if result.tile else "")
        + ")"
    )
    print(line)
    if result.consistency_error is not None:
        print(f"consistency error (RMS, fraction of the intensity range): {result.consistency_error:.4g}")
    if args.attention_dir is not None:
        print(f"wrote {len(written) - 1} map file(s) to {args.attention_dir}")
    if result.regions is not None:
        print(f"{len(result.regions['regions'])} region caption(s) blended (feather {result.regions['feather']:g} px)")
    if args.text_effect is not None:
        stats = result.text_effect_stats
        print(f"wrote {args.text_effect}: |text effect| mean {stats['mean_abs']:.4g}, "
              f"99th percentile {stats['p99_abs']:.4g} (output intensity units)")
    if args.report is not None:
        from napari_textsr.report import build_report, write_report

        parameters = {k: v for k, v in vars(args).items() if k != "func"}
        report = build_report(result, upscaler, parameters=parameters, input_path=args.input,
                              input_array=source.data, output_path=args.output)
        if args.regions is not None:
            report["input"]["regions_file_sha256"] = sha256_file(args.regions)
            report["input"]["region_captions_file_sha256"] = sha256_file(args.region_captions)
        write_report(args.report, report)
        print(f"wrote {args.report}: output sha256 {report['output']['file_sha256'][:16]}...")
    if not d.trained:
        print(f"note: {d.name} is untrained; its output shows the plumbing, not super-resolution", file=sys.stderr)
    return 0


def _regions(args: argparse.Namespace):
    """RegionCaptions from --regions LABELS and --region-captions CSV, or None."""
    if args.regions is None and args.region_captions is None:
        if args.feather is not None:
            raise ValueError("--feather needs --regions and --region-captions")
        return None
    if args.regions is None or args.region_captions is None:
        raise ValueError("--regions and --region-captions go together")
    from napari_textsr.imageio import read_image_file
    from napari_textsr.regions import DEFAULT_FEATHER, RegionCaptions

    labels = read_image_file(args.regions)
    if labels.rgb or labels.data.ndim != 2:
        raise ValueError(f"--regions must be one 2-D label image, got shape {labels.data.shape}")
    captions = read_region_captions(args.region_captions)
    feather = DEFAULT_FEATHER if args.feather is None else args.feather
    return RegionCaptions(labels.data, captions, feather)


def read_region_captions(path: Path) -> dict[int, str]:
    """A CSV of ``label,caption`` rows (UTF-8; a first row ``label,caption`` is a header) -> {label: caption}.

    ValueError names the line of a row without two fields, a label that is not
    a positive integer, or a label given twice.
    """
    import csv

    captions: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not field.strip() for field in row):
                continue
            if line == 1 and row[0].strip().lower() == "label":
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 'label,caption', got {len(row)} field(s)")
            try:
                label = int(row[0])
            except ValueError:
                raise ValueError(f"{path}:{line}: label {row[0]!r} is not an integer") from None
            if label <= 0:
                raise ValueError(f"{path}:{line}: labels are positive (0 is background), got {label}")
            if label in captions:
                raise ValueError(f"{path}:{line}: label {label} is given twice")
            captions[label] = row[1].strip()
    if not captions:
        raise ValueError(f"{path}: no 'label,caption' rows")
    return captions


def _reference(option: str | None, source):
    import numpy as np

    from napari_textsr.imageio import read_image_file

    if option is None:
        return None
    if option == "flip":
        data = source.data
        lead = data.ndim - (3 if source.rgb else 2)
        plane = data[tuple(n // 2 for n in data.shape[:lead])]
        return np.ascontiguousarray(plane[:, ::-1])
    reference = read_image_file(option)
    if reference.data.ndim != (3 if reference.rgb else 2):
        raise ValueError(f"--reference must be one image, not a stack of shape {reference.data.shape}")
    return reference.data


def _safe(name: str) -> str:
    """A map name ("DCM 1", "<sentence>", a word) as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "map"


def run_info(args: argparse.Namespace) -> int:
    from napari_textsr.inference import load_model

    upscaler = load_model(args.spec, scale=args.scale, device=args.device)
    print(json.dumps(upscaler.description.to_dict(), indent=2))
    return 0
