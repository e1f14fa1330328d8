"""``textsr pretrain-encoder``: train the small open_clip prompt encoder on captioned images."""

from __future__ import annotations

import argparse
import shlex

from napari_textsr.cli import command_help


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain-encoder",
        help=command_help("pretrain-encoder"),
        description=(
            "Train an open_clip model (default textsr-clip-s) with open_clip's contrastive loss on "
            "captioned image folders (images + captions.csv) and/or synthetic captioned scenes, on the CPU. "
            "Prints image->text retrieval accuracy on a held-out split before and after, and saves weights "
            "that load with --encoder ARCH:FILE (and open_clip.create_model(ARCH, pretrained=FILE))."
        ),
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DIR",
        help="captioned image folder (repeatable); 'synthetic:N[:SEED[:SIZE]]' also works",
    )
    parser.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="add N synthetic scenes (seeded by --seed)"
    )
    parser.add_argument(
        "--synthetic-size", type=int, default=256, metavar="PX", help="side of the synthetic scenes (default 256)"
    )
    parser.add_argument("--arch", default="textsr-clip-s", help="open_clip architecture (default textsr-clip-s)")
    parser.add_argument(
        "--init",
        default=None,
        metavar="SPEC",
        help="start from these weights (ARCH:FILE) instead of random init; "
        "the optimizer and schedule start afresh (use the same --seed to keep the same validation split)",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="weights file to write (.safetensors); a .json record goes beside it",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="encoder input size; fixed by the architecture (textsr-clip-s: 64), given only to check it",
    )
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW, warm-up then cosine)")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--crop-min", type=float, default=0.35, help="smallest random crop, fraction of the short side")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="retrieval evaluation interval (0: before/after only)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly where an interrupted run with the same --out and settings stopped",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--degradations",
        default=None,
        metavar="PRESET",
        help="also learn words for how an image was taken: crops made small by a draw from this "
        "degradation family (e.g. realistic), captions with degradation words, each image twice "
        "per batch degraded two ways (default: off)",
    )
    parser.add_argument(
        "--degradation-scale",
        type=int,
        default=2,
        choices=(2, 4),
        help="down-sampling factor of those degradations (default 2)",
    )
    parser.add_argument(
        "--word-loss",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="with --degradations: also train the text tower to tell degradation words apart and "
        "ignore their phrasing (each caption against a paraphrase of it; default 0: off)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import threading
    from pathlib import Path

    from napari_textsr.cli._signals import stop_on_signals
    from napari_textsr.training.pretrain_encoder import PretrainConfig, pretrain_encoder

    if not args.data and not args.synthetic:
        raise ValueError("no training data: give --data DIR (repeatable) and/or --synthetic N")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out.name}")
    config = PretrainConfig(
        arch=args.arch,
        out=out,
        data=list(args.data),
        synthetic=args.synthetic,
        synthetic_size=args.synthetic_size,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        crop_min=args.crop_min,
        image_size=args.image_size,
        init=args.init,
        seed=args.seed,
        num_threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        resume=args.resume,
        degradations=args.degradations,
        degradation_scale=args.degradation_scale,
        word_loss=args.word_loss,
        command=_command_line(args),
    )
    stop = threading.Event()
    # First Ctrl-C or SIGTERM: finish the step, save weights, record and train state, exit.
    with stop_on_signals(stop.set, stop.is_set):
        summary = pretrain_encoder(config, progress=not args.no_progress, stop=stop)
    if summary.steps < config.steps:
        print(f"stopped at step {summary.steps}/{config.steps}; resume with the same command and --resume")
        return 130
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The full command with every setting spelled out, so the record reproduces the run
    even when defaults change later."""
    parts = ["textsr", "pretrain-encoder"]
    for folder in args.data:
        parts += ["--data", folder]
    options = [
        ("--synthetic", args.synthetic),
        ("--synthetic-size", args.synthetic_size),
        ("--arch", args.arch),
        ("--init", args.init),
        ("--steps", args.steps),
        ("--out", args.out),
        ("--batch-size", args.batch_size),
        ("--lr", args.lr),
        ("--weight-decay", args.weight_decay),
        ("--val-fraction", args.val_fraction),
        ("--crop-min", args.crop_min),
        ("--seed", args.seed),
        ("--threads", args.threads),
        ("--degradations", args.degradations),
        ("--degradation-scale", args.degradation_scale if args.degradations else None),
        ("--word-loss", args.word_loss or None),
    ]
    for flag, value in options:
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)
