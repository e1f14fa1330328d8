"""The ``textsr`` command line.

Each subcommand lives in its own module with ``register(subparsers)`` which adds
its parser and sets ``func`` to the function that runs it. Modules are listed
here so ``textsr --help`` shows every command; heavy imports (torch models,
napari) happen inside the command functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Subcommand modules, in the order ``--help`` lists them. A module not yet
# present is skipped so partial installs still run.
COMMAND_MODULES = (
    "napari_textsr.cli.upscale",  # upscale, info
    "napari_textsr.cli.models",  # models
    "napari_textsr.cli.train",  # train
    "napari_textsr.cli.pretrain",  # pretrain-encoder
    "napari_textsr.cli.bench",  # bench
    "napari_textsr.cli.demo",  # demo (the main job: napari with sample + widget)
)


def build_parser() -> argparse.ArgumentParser:
    from napari_textsr._version import __version__

    parser = argparse.ArgumentParser(
        prog="textsr", description="Text-guided super-resolution (TGSR, CLIP-SR, PDN)."
    )
    parser.add_argument("--version", action="version", version=f"napari-textsr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"textsr {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
