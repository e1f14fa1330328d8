"""``textsr distributed``: upscale an OME-Zarr volume, a zarr array or many files on a dask cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_textsr.cli import (
    add_consistency_option,
    add_file_words_option,
    command_help,
    consistency_choice,
    file_words_caption,
    shared_jpeg_quality,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "distributed",
        help=command_help("distributed"),
        description=(
            "Upscale IN (an OME-Zarr image, NGFF 0.4 or 0.5; a zarr array; or several grey image files of one "
            "shape, stacked) block by block on dask.distributed workers into the OME-Zarr OUT (NGFF 0.5), with the "
            "same result as one process. Each worker loads the model once; failed blocks are retried; running the "
            "same command again after an interruption continues where it stopped. Needs the distributed extra: "
            "pip install 'napari-textsr[distributed]'. See docs/distributed.md."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="input OME-Zarr/zarr, or image files")
    parser.add_argument("output", type=Path, metavar="OUT", help="output OME-Zarr (e.g. out.ome.zarr)")
    parser.add_argument("--caption", default="", metavar="TEXT", help="what the image shows (default: none)")
    add_file_words_option(parser)
    parser.add_argument(
        "--model",
        default="default",
        metavar="SPEC",
        help="checkpoint path, bundled model name, 'default' or 'random:<method>:<scale>[:<preset>]' "
        "(default: %(default)s); it must be readable on every worker. 'default' takes the bundled model "
        "trained for JPEG inputs when every input is a JPEG file of quality <= 60",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="upscaling factor: picks the default model of that scale (default x4) and refuses a --model of another",
    )
    parser.add_argument(
        "--scheduler",
        default="local",
        metavar="ADDRESS|local[:N]",
        help="a dask scheduler address (tcp://host:8786) or local[:N] for N local worker "
        "processes (default: local = half the CPU cores)",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="N",
        help="core block side in input pixels (default: 512); see docs/distributed.md for memory",
    )
    parser.add_argument("--retries", type=int, default=None, help="retries per failed block (default: 2)")
    parser.add_argument("--levels", type=int, default=None, help="pyramid levels of OUT (default: down to ~256 px)")
    parser.add_argument("--device", default="auto", help="device on the workers: auto (CUDA, MPS, CPU), cpu, cuda")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per worker process (default: dask's, 1 per worker thread)",
    )
    add_consistency_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT instead of resuming it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_distributed)


def run_distributed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_textsr.distributed import (
        DEFAULT_BLOCK,
        DEFAULT_RETRIES,
        BlocksFailed,
        WorkerModel,
        require_distributed,
        upscale_distributed,
    )

    try:
        require_distributed()
    except ImportError as error:
        print(f"textsr distributed: error: {error}", file=sys.stderr)
        return 1

    consistency = consistency_choice(args)
    source = args.inputs[0] if len(args.inputs) == 1 else list(args.inputs)
    if any(Path(p).resolve() == args.output.resolve() for p in args.inputs):
        raise ValueError("OUT must differ from IN")
    from napari_textsr.imageio import file_binning, jpeg_evidence, jpeg_quality
    from napari_textsr.loading import default_for_input
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY

    # The files' headers only: the inputs are read by the workers, block by block.
    evidence = [jpeg_evidence(jpeg_quality(p)) for p in args.inputs]
    binnings = {file_binning(p) for p in args.inputs}  # said only when every file records the same
    binning = binnings.pop() if len(binnings) == 1 else None
    caption = file_words_caption(args.caption, evidence, args.file_words, binning)
    if caption != args.caption:
        quality = shared_jpeg_quality(evidence)
        why = [
            *(["the inputs are JPEG files"] if quality is not None and quality <= FILE_WORDS_MAX_JPEG_QUALITY else []),
            *([f"their files record camera binning {binning}x{binning}"] if binning is not None else []),
        ]
        print(f"caption {caption!r}: {' and '.join(why)} (--no-file-words keeps the caption as typed)")
    # One model serves every input: the one for JPEG inputs only when every file is a heavy JPEG.
    model = str(default_for_input(args.model, args.scale, shared_jpeg_quality(evidence)))
    if model != args.model:
        print(f"model {model}: the default for inputs JPEG-compressed at quality <= {FILE_WORDS_MAX_JPEG_QUALITY}")
    spec = WorkerModel(model, args.scale, args.device, None, args.torch_threads)
    with tqdm(total=None, unit="block", desc="distributed", file=sys.stderr, disable=args.quiet) as bar:

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.n = done
            bar.refresh()

        try:
            result = upscale_distributed(
                source,
                args.output,
                caption,
                model=spec,
                scheduler=args.scheduler,
                block=args.block or DEFAULT_BLOCK,
                retries=DEFAULT_RETRIES if args.retries is None else args.retries,
                levels=args.levels,
                overwrite=args.overwrite,
                progress=progress,
                consistency=consistency,
            )
        except BlocksFailed as error:
            print(f"textsr distributed: error: {error}", file=sys.stderr)
            return 1
    out = result.output
    print(
        f"wrote {out.path} {out.shape} {out.dtype} axes {out.axis_names} "
        f"({len(out.levels)} level(s); {result.computed} block(s) upscaled, {result.skipped} already there; "
        f"{result.seconds:.1f} s)"
    )
    if result.provenance.get("consistency_kernel"):
        print(f"back-projected with {result.provenance['consistency_kernel']} downsampling (no consistency map)")
    if result.peak_rss:
        peak = max(result.peak_rss.values()) / 2**20
        print(
            f"peak memory per worker: {peak:.0f} MiB (blocks {result.block_shape[0]}x{result.block_shape[1]} "
            f"+ halo {result.halo})"
        )
    if not result.provenance.get("trained", True):
        print(
            f"note: {result.provenance.get('model')} is untrained; its output shows the plumbing, not super-resolution",
            file=sys.stderr,
        )
    return 0
