"""Which caption helps? Mean PSNR-Y gain over bicubic of one model for several captions.

For the held-out photographs of a folder (the same split as ``textsr bench
--split val``), each degraded the way ``textsr bench --degradation NAME``
degrades them, prints the mean PSNR-Y (dB, luma of BT.601, a border of
``scale`` pixels left out) of the model's output minus bicubic's, and the
mean absolute difference (8-bit grey levels) of its output from the first
template's, for each caption template: ``{c}`` is the image's own caption, so ``"{c}, noisy"`` is
its caption plus a training word and ``""`` the empty caption. Used in
docs/training.md to see what saying "noisy" does; e.g.::

    python scripts/caption_sweep.py --scale 2 --degradation noise --limit 4 \\
        "" "{c}" "{c}, noisy" "{c}, clean" "{c}; the picture is grainy and noisy"
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from napari_textsr.benchmark import bicubic_upscale, degrade_to_uint8
from napari_textsr.inference import load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.training.data import load_captioned_folder, split_train_val
from napari_textsr.training.degradations import NAMED_DEGRADATIONS, named_degradation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("templates", nargs="+", help='caption templates; {c} is the image\'s caption ("" = empty)')
    parser.add_argument("--model", default="default")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--degradation", default="bicubic-aa", choices=list(NAMED_DEGRADATIONS))
    parser.add_argument("--data", default="../shared/data/train/bsd200")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out images only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    upscaler = load_model(args.model, scale=args.scale)
    scale = upscaler.scale
    _, held_out = split_train_val(load_captioned_folder(args.data), 0.1, seed=0)
    degradation = named_degradation(args.degradation, scale)
    gains: dict[str, list[float]] = {t: [] for t in args.templates}
    moved: dict[str, list[float]] = {t: [] for t in args.templates}
    for item in held_out[: args.limit]:
        h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
        hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
        lr = degrade_to_uint8(hr, degradation, item.name)
        bicubic = quality_scores(bicubic_upscale(lr, scale), hr, border=scale).psnr_y
        first = None
        for template in args.templates:
            out = upscaler.upscale(lr, template.format(c=item.captions[0])).image.astype(np.float32)
            first = out if first is None else first
            moved[template].append(float(np.abs(out - first).mean()))
            gains[template].append(quality_scores(out / 255.0, hr, border=scale).psnr_y - bicubic)
    n = len(next(iter(gains.values())))
    print(
        f"{upscaler.description.name} x{scale}, {args.degradation}, {n} held-out images: "
        "PSNR-Y minus bicubic (dB), mean |output - first template's output| (grey levels)"
    )
    for template in args.templates:
        print(f"  {np.mean(gains[template]):+.2f}  {np.mean(moved[template]):5.2f}  {template!r}")


if __name__ == "__main__":
    main()
