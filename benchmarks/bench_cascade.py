"""Whether two x2 steps with the bundled x2 models beat the bundled x4 default in one step.

    python benchmarks/bench_cascade.py --data ../shared/data/train/bsd200 \
        --data ../shared/data/train/t91 --degradation jpeg --degradation bicubic --json OUT.json

The x2 defaults gain more over bicubic than the x4 default does, and x2 has a
model for JPEG inputs (``pdn-x2-jpeg``), x4 not. So an x4 image could be made
in two x2 steps: the first by the model ``textsr upscale`` would pick for the
LR (the JPEG model when its pixels show quality <= 60), the second by the
general x2 default on the first step's output. For each held-out photograph
(the split ``textsr bench --split val`` scores) made small one of
``textsr bench``'s ways (seeded per image), this scores bicubic, the x4
default and the two steps with the true and the empty caption: PSNR-Y, a
border of 4 px cropped, as ``textsr bench``. Not a test: it is why the
project has no two-step mode (docs/training.md, "A last L2 stage, larger
patches, and x4 in two x2 steps").
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from napari_textsr.benchmark import bicubic_upscale, degrade_to_uint8
from napari_textsr.inference import Upscaler, load_model
from napari_textsr.loading import default_for_input
from napari_textsr.metrics import quality_scores
from napari_textsr.training.data import load_captioned_folder, split_train_val
from napari_textsr.training.degradations import named_degradation

CAPTIONS = ("true", "empty")


def two_steps(first: Upscaler, second: Upscaler, lr: np.ndarray, caption: str) -> np.ndarray:
    """(h, w, 3) uint8 LR -> (4h, 4w, 3) uint8: ``first`` (x2) on the LR, then ``second`` (x2) on its output."""
    if first.scale != 2 or second.scale != 2:
        raise ValueError(f"two x2 steps need two x2 models, got x{first.scale} and x{second.scale}")
    return second.upscale(first.upscale(lr, caption).image, caption).image


def first_step_model(lr: np.ndarray) -> str:
    """The x2 model ``textsr upscale`` picks for this LR: pdn-x2-jpeg when its pixels show heavy JPEG, else the default."""
    from napari_textsr.imageio import jpeg_quality_from_pixels

    return str(default_for_input("pdn-x2", 2, jpeg_quality_from_pixels(lr)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="captioned folder (repeatable)")
    parser.add_argument("--degradation", action="append", help="textsr bench ways (default jpeg, bicubic)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--json", help="write the per-way means and worst photographs here")
    args = parser.parse_args()
    items = []
    for folder in args.data:
        items += split_train_val(load_captioned_folder(folder), args.val_fraction, seed=args.split_seed)[1]
    direct = load_model("default", scale=4)
    x2 = {name: load_model(name, scale=2) for name in ("pdn-x2", "pdn-x2-jpeg")}
    results = {}
    for way in args.degradation or ["jpeg", "bicubic"]:
        degrade = named_degradation(way, 4)
        gains: dict[str, list[float]] = {
            f"{kind} {c}": [] for kind in ("one x4 step", "two x2 steps") for c in CAPTIONS
        }
        for item in items:
            h, w = item.image.shape[0] // 4 * 4, item.image.shape[1] // 4 * 4
            hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
            lr = degrade_to_uint8(hr, degrade, item.name)
            bicubic = quality_scores(bicubic_upscale(lr, 4), hr, border=4).psnr_y
            first = x2[first_step_model(lr)]
            for c, caption in zip(CAPTIONS, (item.captions[0], "")):
                outputs = {
                    "one x4 step": direct.upscale(lr, caption).image,
                    "two x2 steps": two_steps(first, x2["pdn-x2"], lr, caption),
                }
                for kind, out in outputs.items():
                    gains[f"{kind} {c}"].append(
                        quality_scores(out.astype(np.float32) / 255, hr, border=4).psnr_y - bicubic
                    )
        results[way] = {name: {"mean": float(np.mean(g)), "worst": float(np.min(g))} for name, g in gains.items()}
        print(f"x4, {way}, {len(items)} photographs, gain over bicubic in PSNR-Y (dB), mean (worst photograph):")
        for name, value in results[way].items():
            print(f"  {name:22s} {value['mean']:+.2f} ({value['worst']:+.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
