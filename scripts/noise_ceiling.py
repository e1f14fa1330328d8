"""How much the noise words can pay at most: the ceiling of the "right - wrong words" test on noise.

    python scripts/noise_ceiling.py --data ../shared/data/train/bsd200 --data ../shared/data/train/t91 \\
        [--scale 2 --scale 4 ...] [--json docs/results/noise-words-ceiling.json]

``textsr bench --degradation noise`` gives a held-out photograph Gaussian noise
of sigma 5/255 after antialiased bicubic down-sampling and compares the default
model told the truth ("...; the picture is grainy and noisy") with it told the
opposite ("...; the picture is sharp and clean"). A model that understands the
words removes the grain in the first case and keeps it as detail in the second.
This script bounds that difference for each scale, with two oracle outputs per
held-out image (the split ``textsr bench --split val`` scores):

* right (oracle): the default model's output, true caption, for the noise-free
  LR: what a perfect denoiser followed by the same SR model would give;
* wrong (oracle): that output plus the LR's noise up-sampled bicubically: the
  grain kept, neither removed nor sharpened.

Their mean PSNR-Y difference (dB) is what the words can buy if the model
removed all of the noise when told it is there and kept all of it when told the
picture is clean. A practical denoiser removes part of it, so the measured
difference stays below this ceiling; a model that sharpens grain it calls
detail can fall below "wrong (oracle)". Same seeds as ``textsr bench``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_textsr.benchmark import degrade_to_uint8
from napari_textsr.inference import load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.training.data import load_captioned_folder, split_train_val
from napari_textsr.training.degradations import named_degradation


def ceiling(scale: int, folders: list[str], val_fraction: float, split_seed: int) -> dict:
    """Per-image oracle PSNR-Y (dB) and their means for one scale's default model."""
    upscaler = load_model("default", scale=scale)
    rows = []
    for folder in folders:
        _, val = split_train_val(load_captioned_folder(folder), val_fraction, seed=split_seed)
        for item in val:
            h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
            hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
            noisy = degrade_to_uint8(hr, named_degradation("noise", scale), item.name)
            clean = degrade_to_uint8(hr, named_degradation("bicubic-aa", scale), item.name)
            noise = torch.from_numpy((noisy.astype(np.float32) - clean.astype(np.float32)) / 255.0)
            noise_up = F.interpolate(noise.permute(2, 0, 1)[None], scale_factor=scale, mode="bicubic")
            right = upscaler.upscale(clean, item.captions[0]).image.astype(np.float32) / 255.0
            wrong = np.clip(right + noise_up[0].permute(1, 2, 0).numpy(), 0.0, 1.0)
            rows.append(
                {
                    "name": item.name,
                    "right_oracle": quality_scores(right, hr, border=scale).psnr_y,
                    "wrong_oracle": quality_scores(wrong, hr, border=scale).psnr_y,
                }
            )
    right = float(np.mean([r["right_oracle"] for r in rows]))
    wrong = float(np.mean([r["wrong_oracle"] for r in rows]))
    return {
        "scale": scale,
        "model": upscaler.description.to_dict(),
        "n_images": len(rows),
        "right_oracle": right,
        "wrong_oracle": wrong,
        "ceiling": right - wrong,
        "images": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="captioned folder (repeatable)")
    parser.add_argument("--scale", type=int, action="append", help="scales (default 2, 4, 8, 16)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for scale in args.scale or [2, 4, 8, 16]:
        result = ceiling(scale, args.data, args.val_fraction, args.split_seed)
        results.append(result)
        print(
            f"x{scale} ({result['n_images']} images): right (oracle) {result['right_oracle']:.2f} dB, "
            f"wrong (oracle) {result['wrong_oracle']:.2f} dB, ceiling of right - wrong {result['ceiling']:+.2f} dB",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
