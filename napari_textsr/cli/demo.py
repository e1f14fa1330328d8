"""``textsr demo``: the main job in one command.

Opens napari with a sample image, the "Text-guided super-resolution" widget
docked, its caption filled in and the default model selected. ``--headless``
does the same work without a screen: it upscales the sample with the default
model and writes the output and its attention maps to files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_textsr.cli import command_help


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=command_help("demo"),
        description="Open napari with a sample image, the super-resolution widget and the default model. "
        "With --headless DIR, upscale the sample and write the result and its attention maps to DIR instead.",
    )
    parser.add_argument("--sample", default="fluorescence", help="fluorescence, photograph or text")
    parser.add_argument("--model", default="default", help="model spec (default: the bundled model for --scale)")
    parser.add_argument("--scale", type=int, default=None, help="default: the factor the sample was reduced by")
    parser.add_argument("--caption", default=None, help="default: the sample's own caption")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--headless",
        type=Path,
        default=None,
        metavar="DIR",
        help="no window: write the upscaled sample and its attention maps to DIR",
    )
    parser.set_defaults(func=run)


def _model_scale(args: argparse.Namespace, sample_scale: int) -> int | None:
    from napari_textsr.inference import list_models

    if args.scale is not None or args.model != "default":
        return args.scale  # a named model has its own scale
    # The bundled default closest to the factor the sample was reduced by.
    scales = sorted({m.scale for m in list_models()}) or [sample_scale]
    return min(scales, key=lambda s: (abs(s - sample_scale), s))


def missing_display() -> str | None:
    """Why a napari window cannot open here (None if it can): Linux without an X or Wayland display.

    Qt aborts the whole process when it finds no display, so this is checked first.
    """
    import os

    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return "no display to open a napari window on (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def run(args: argparse.Namespace) -> int:
    from napari_textsr.samples import load_sample

    if args.headless is None:
        reason = missing_display()
        if reason is not None:
            print(
                f"textsr demo: {reason}.\n"
                "  Without a screen:   textsr demo --headless out/   (writes the upscaled sample and its attention maps)\n"
                "  With a virtual one: xvfb-run -a textsr demo",
                file=sys.stderr,
            )
            return 2

    sample = load_sample(args.sample)
    caption = sample.caption if args.caption is None else args.caption
    scale = _model_scale(args, sample.info.scale)
    if args.headless is not None:
        return _run_headless(args, sample, caption, scale)
    return _run_gui(args, sample, caption, scale)


def _run_headless(args, sample, caption: str, scale: int | None) -> int:
    from napari_textsr.durable import write_text_atomic
    from napari_textsr.imageio import write_image_file, write_map
    from napari_textsr.inference import load_model

    upscaler = load_model(args.model, scale=scale, device=args.device)
    result = upscaler.upscale(sample.image, caption, rgb=sample.info.rgb)
    out_dir = args.headless
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if sample.image.dtype == "uint8" else ".tif"
    stem = Path(sample.info.file).stem
    written = [write_image_file(out_dir / f"{stem}_input{suffix}", sample.image, rgb=sample.info.rgb)]
    written.append(
        write_image_file(
            out_dir / f"{stem}_x{upscaler.scale}{suffix}",
            result.image,
            rgb=sample.info.rgb,
            metadata=result.provenance(),
        )
    )
    for index, (name, values) in enumerate(result.attention.items(), start=1):
        safe = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "map"
        written += write_map(out_dir / f"{stem}_attention_{index:02d}_{safe}.png", values)
    write_text_atomic(out_dir / f"{stem}_provenance.json", json.dumps(result.provenance(), indent=2))
    print(
        f"{upscaler.description.name}: {sample.image.shape} -> {result.image.shape} "
        f"in {result.seconds:.2f} s, caption {caption!r}"
    )
    for path in written:
        print(f"  wrote {path}")
    return 0


def _run_gui(args, sample, caption: str, scale: int | None) -> int:
    import torch  # noqa: F401  (before Qt)

    # isort: split
    import napari

    from napari_textsr.inference import list_models

    viewer = napari.Viewer(title="napari-textsr demo")
    viewer.open_sample("napari-textsr", args.sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-textsr", "Text-guided super-resolution")
    widget.select_layer(sample.info.name)
    widget.caption_edit.setPlainText(caption)
    spec = args.model
    if spec == "default":
        bundled = [m for m in list_models() if m.scale == scale]
        spec = bundled[0].name if bundled else spec
    widget.select_model(spec)
    napari.run()
    return 0
