"""Which caption helps? Mean PSNR-Y gain over bicubic of one model for several captions.

    python benchmarks/bench_caption_sweep.py --scale 2 --degradation noise --data ../shared/data/train/bsd200 \
        "{c}" "" "{c}, noisy" "{c}, clean" "{c}; the picture is grainy and noisy"
    python benchmarks/bench_caption_sweep.py --scale 8 --degradation jpeg --image 271031.png "{c}" "" "at sunset"

For the held-out photographs of a folder (the split of ``textsr bench --split
val``), each degraded the way ``textsr bench --degradation NAME`` degrades it,
prints for each caption template the mean PSNR-Y (dB, BT.601 luma, a border of
``scale`` pixels left out) of the model's output minus bicubic's, and the mean
absolute difference (8-bit grey levels) of its output from the first
template's. ``{c}`` is the image's own caption, so ``"{c}, noisy"`` is its
caption plus a training word and ``""`` the empty caption. docs/training.md
uses it to see what saying "noisy" does. Not a test: it describes a model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class CaptionScore:
    """One caption template's means over the images."""

    template: str
    gain_db: float  # PSNR-Y minus bicubic's
    moved: float  # mean |output - first template's output|, 8-bit grey levels


def sweep(upscaler, items: Sequence, degradation: str, templates: Sequence[str]) -> list[CaptionScore]:
    """Score ``upscaler`` on ``items`` (CaptionedImage, HR float32 in [0, 1]) with each caption template.

    ``degradation``: a name of ``napari_textsr.training.degradations.NAMED_DEGRADATIONS``,
    seeded per image as in ``textsr bench``. Raises ValueError for no templates or no images.
    """
    from napari_textsr.benchmark import bicubic_upscale, degrade_to_uint8
    from napari_textsr.metrics import quality_scores
    from napari_textsr.training.degradations import named_degradation

    if not templates or not items:
        raise ValueError("give at least one caption template and one image")
    scale = upscaler.scale
    degrade = named_degradation(degradation, scale)
    gains: dict[str, list[float]] = {t: [] for t in templates}
    moved: dict[str, list[float]] = {t: [] for t in templates}
    for item in items:
        h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
        hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
        lr = degrade_to_uint8(hr, degrade, item.name)
        bicubic = quality_scores(bicubic_upscale(lr, scale), hr, border=scale).psnr_y
        first = None
        for template in templates:
            out = upscaler.upscale(lr, template.format(c=item.captions[0])).image.astype(np.float32)
            first = out if first is None else first
            moved[template].append(float(np.abs(out - first).mean()))
            gains[template].append(quality_scores(out / 255.0, hr, border=scale).psnr_y - bicubic)
    return [CaptionScore(t, float(np.mean(gains[t])), float(np.mean(moved[t]))) for t in templates]


def select_images(items: Sequence, names: Sequence[str]) -> list:
    """The ``items`` (CaptionedImage) whose name is in ``names``, in their order.

    Raises ValueError naming any of ``names`` that no item has.
    """
    missing = sorted(set(names) - {item.name for item in items})
    if missing:
        raise ValueError(f"not among the held-out images: {', '.join(missing)}")
    return [item for item in items if item.name in names]


def main() -> None:
    import torch

    from napari_textsr.inference import load_model
    from napari_textsr.training.data import load_captioned_folder, split_train_val
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("templates", nargs="+", help='caption templates; {c} is the image\'s caption ("" = empty)')
    parser.add_argument("--model", default="default")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--degradation", default="bicubic-aa", choices=list(NAMED_DEGRADATIONS))
    parser.add_argument("--data", default="../shared/data/train/bsd200")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out images only")
    parser.add_argument(
        "--image", action="append", default=None, metavar="NAME", help="only this held-out image (repeatable)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    upscaler = load_model(args.model, scale=args.scale)
    _, held_out = split_train_val(load_captioned_folder(args.data))  # textsr bench's and training's split
    held_out = held_out[: args.limit]
    if args.image:
        try:
            held_out = select_images(held_out, args.image)
        except ValueError as error:
            parser.error(f"{error} ({args.data})")
    print(
        f"{upscaler.description.name} x{upscaler.scale}, {args.degradation}, {len(held_out)} held-out images: "
        "PSNR-Y minus bicubic (dB), mean |output - first template's output| (grey levels)"
    )
    for score in sweep(upscaler, held_out, args.degradation, args.templates):
        print(f"  {score.gain_db:+.2f}  {score.moved:5.2f}  {score.template!r}")


if __name__ == "__main__":
    main()
