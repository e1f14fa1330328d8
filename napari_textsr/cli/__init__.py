"""The ``textsr`` command line.

Each subcommand lives in its own module with ``register(subparsers)`` which adds
its parser and sets ``func`` to the function that runs it. :data:`COMMANDS` lists
every command with its module and one-line help, so ``textsr --help`` shows them
all without importing any module; only the module of the command being run is
imported, and heavy imports (torch, open_clip, napari) happen inside the command
functions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from napari_textsr.imageio import JpegEvidence

# Every command: the module that registers it and its one line in ``textsr --help``,
# in the order ``--help`` lists them. Only the module of the command being run is
# imported, so ``textsr --help`` imports none of them; a module not yet present is
# skipped so partial installs still run.


@dataclass(frozen=True)
class Command:
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "upscale": Command("napari_textsr.cli.upscale", "super-resolve an image file guided by a caption"),
    "info": Command("napari_textsr.cli.upscale", "describe a model as JSON"),
    "models": Command("napari_textsr.cli.models", "list the bundled models"),
    "train": Command("napari_textsr.cli.train", "train or fine-tune a model on captioned images"),
    "pretrain-encoder": Command(
        "napari_textsr.cli.pretrain", "contrastively pretrain a small open_clip prompt encoder on captioned images"
    ),
    "bench": Command("napari_textsr.cli.bench", "score a model against bicubic, with true / empty / other captions"),
    "distributed": Command(
        "napari_textsr.cli.distributed", "upscale an OME-Zarr / zarr volume or many image files on a dask cluster"
    ),
    "demo": Command(
        "napari_textsr.cli.demo", "open napari with a sample, the widget docked and the default model ready"
    ),
}


def command_help(name: str) -> str:
    """The one-line help of a command (what its module passes to ``add_parser``)."""
    return COMMANDS[name].help


def add_self_ensemble_option(parser: argparse.ArgumentParser) -> None:
    """``--self-ensemble``: :class:`~napari_textsr.inference.Upscaler`'s ``self_ensemble``."""
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average over the 8 rotations and mirror images of the input (EDSR+): 8x the time, "
        "a few hundredths to a tenth of a dB more PSNR",
    )


def add_consistency_option(parser: argparse.ArgumentParser, *, matched: bool = False) -> None:
    """``--consistency`` and ``--consistency-kernel KERNEL``: the engine's ``consistency``.

    The kernel name is checked by :func:`consistency_choice` once the command
    runs (torch is imported only then). ``matched``: also offer ``matched``
    (``textsr bench``: the resize each degradation used).
    """
    what = "each output" if matched else "OUT"
    parser.add_argument(
        "--consistency",
        action="store_true",
        help=f"back-project {what} so that downsampling it reproduces its input, and report the error",
    )
    parser.add_argument(
        "--consistency-kernel",
        default=None,
        metavar="KERNEL",
        help="how the input was made small, for --consistency (given alone, it turns --consistency on): auto "
        "(default: from the caption's words, 'binned'/'pixelated' -> area, 'aliased'/'jagged' -> bicubic, "
        "else bicubic-aa), bicubic-aa, bicubic (no antialiasing: OpenCV INTER_CUBIC), bilinear-aa, bilinear, "
        "area (binning)"
        + (
            ", or matched (the resize the degradation used, as a user who knows how it was made would say)"
            if matched
            else ""
        )
        + ". The wrong kernel costs PSNR; so do noise and JPEG (README, 'Measurement consistency')",
    )


def consistency_choice(args: argparse.Namespace, *, matched: bool = False) -> str | bool:
    """The engine's ``consistency`` from ``--consistency`` / ``--consistency-kernel`` (False when neither).

    Raises ValueError for an unknown kernel name (checked before any work).
    """
    kernel = args.consistency_kernel
    if kernel is None:
        return "auto" if args.consistency else False
    from napari_textsr.consistency import CONSISTENCY_KERNELS

    names = (*CONSISTENCY_KERNELS, "matched") if matched else CONSISTENCY_KERNELS
    if kernel not in names:
        raise ValueError(f"--consistency-kernel: unknown kernel {kernel!r}; choose one of {', '.join(names)}")
    return kernel


def add_file_words_option(parser: argparse.ArgumentParser) -> None:
    """``--file-words/--no-file-words``: :func:`~napari_textsr.training.captions.caption_with_file_words` on or off."""
    parser.add_argument(
        "--file-words",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add to the caption what the input says about how the image was made: 'JPEG-compressed' for "
        "JPEG compression of quality 60 or lower (read from a JPEG file's header, or seen in the 8x8 blocks "
        "of an 8-bit image's pixels), unless the caption already says how the image was taken "
        "(default: on; the caption used is stored in the output's metadata)",
    )


def shared_jpeg_quality(evidence: Sequence[JpegEvidence | None]) -> int | None:
    """The JPEG quality that speaks for all of several inputs served by one caption and one model.

    None unless every input shows JPEG compression (one that does not, or an
    empty list, leaves nothing to say for all); otherwise the worst (lowest)
    quality, which decides.
    """
    if not evidence or any(e is None for e in evidence):
        return None
    return min(e.quality for e in evidence if e is not None)


def file_words_caption(
    caption: str, evidence: Sequence[JpegEvidence | None], enabled: bool, binning: int | None = None
) -> str:
    """The caption for inputs whose JPEG compression is ``evidence`` (None: none known).

    Words are added only when every input shows JPEG compression (a caption
    serves all of them) and ``enabled``; the worst (lowest) quality decides
    (:func:`shared_jpeg_quality`). ``binning``: the camera binning the
    input's file records (:attr:`napari_textsr.imageio.ImageFile.binning`),
    which adds "binned".
    """
    if not enabled:
        return caption
    from napari_textsr.training.captions import caption_with_file_words

    return caption_with_file_words(caption, shared_jpeg_quality(evidence), binning)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for a command that computes on the CPU; :func:`main` applies it before the command runs."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: $TEXTSR_NUM_THREADS, else the CPUs this process may use: "
        "its affinity mask capped by the cgroup CPU quota)",
    )
    parser.set_defaults(configure_threads=True)


def _command_in(argv: Sequence[str] | None) -> str | None:
    """The command named in ``argv`` (the first word that is not an option), if it is one."""
    for word in sys.argv[1:] if argv is None else argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = (), *, full: bool = False) -> argparse.ArgumentParser:
    """The ``textsr`` parser with the full parser of the command named in ``argv``
    (every command's with ``full=True``); other commands get a stub with their one-line help."""
    from napari_textsr._version import __version__

    parser = argparse.ArgumentParser(prog="textsr", description="Text-guided super-resolution (TGSR, CLIP-SR, PDN).")
    parser.add_argument("--version", action="version", version=f"napari-textsr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_in(argv)
    wanted = {c.module for c in COMMANDS.values()} if full else {COMMANDS[chosen].module} if chosen else set()
    for module_name in dict.fromkeys(c.module for c in COMMANDS.values()):  # modules in table order
        names = [name for name, c in COMMANDS.items() if c.module == module_name]
        module = None
        if module_name in wanted:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name != module_name:
                    raise
        if module is not None:
            module.register(subparsers)
        else:  # listed in --help; not parsed further in this run
            for name in names:
                subparsers.add_parser(name, help=COMMANDS[name].help, add_help=False)
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Print warnings as ``textsr COMMAND: warning: MESSAGE`` (not Python's file:line form) while a command runs."""
    previous = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:
        return f"textsr {command}: warning: {message}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "configure_threads", False):
            from napari_textsr.devices import configure_threads

            configure_threads(args.threads)
        with _one_line_warnings(args.command):
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`textsr models | head`): no message, and nothing more
        # flushed into the closed pipe at exit (the Python docs' recipe, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process the pipe ended
    except (ValueError, OSError) as error:
        # Bad input, or a file system that says no (a full disk, a missing or
        # unwritable path), is the user's to fix: one clear line, no traceback.
        print(f"textsr {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
