"""How much the degradation words can pay at most: the ceiling of the "right - wrong words" test.

    python scripts/words_ceiling.py --degradation noise --data ../shared/data/train/bsd200 \\
        --data ../shared/data/train/t91 [--scale 2 --scale 4 ...] [--json docs/results/noise-words-ceiling.json]

``textsr bench --degradation noise`` gives a held-out photograph Gaussian noise
of sigma 5/255 after antialiased bicubic down-sampling, ``--degradation blur``
a Gaussian blur of sigma 1.3 HR px before it, and compares the default model
told the truth ("...; the picture is grainy and noisy", "... out of focus")
with it told the opposite ("...; the picture is sharp and clean"). A model that
understands the words removes the grain or the softness in the first case and
keeps it as part of the scene in the second. This script bounds that
difference for each scale, with two oracle outputs per held-out image (the
split ``textsr bench --split val`` scores):

* right (oracle): the default model's output, true caption, for the LR made
  without the noise or the blur (antialiased bicubic alone): what a perfect
  denoiser or deblurrer followed by the same SR model would give;
* wrong (oracle): that output with the degradation kept: plus the LR's noise
  up-sampled bicubically (noise), or blurred by the same Gaussian of sigma
  1.3 HR px (blur); neither removed nor sharpened.

Their mean PSNR-Y difference (dB) is what the words can buy if the model
removed all of the degradation when told it is there and kept all of it when
told the picture is clean. A practical model removes part of it, so the
measured difference stays below this ceiling; a model that sharpens grain it
calls detail can fall below "wrong (oracle)". Same seeds as ``textsr bench``.
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
from napari_textsr.training.degradations import gaussian_blur, named_degradation

KINDS = ("noise", "blur")


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (1, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def _kept(kind: str, right: np.ndarray, hr: np.ndarray, item_name: str, scale: int, clean: np.ndarray) -> np.ndarray:
    """The right oracle with the degradation ``kind`` kept: (H, W, 3) float32 in [0, 1]."""
    if kind == "noise":
        noisy = degrade_to_uint8(hr, named_degradation("noise", scale), item_name)
        noise = _as_tensor((noisy.astype(np.float32) - clean.astype(np.float32)) / 255.0)
        kept = right + F.interpolate(noise, scale_factor=scale, mode="bicubic")[0].permute(1, 2, 0).numpy()
    else:
        sigma = named_degradation("blur", scale).blur_sigma
        kept = gaussian_blur(_as_tensor(right), sigma)[0].permute(1, 2, 0).numpy()
    return np.clip(kept, 0.0, 1.0)


def ceiling(kind: str, scale: int, folders: list[str], val_fraction: float, split_seed: int) -> dict:
    """Per-image oracle PSNR-Y (dB) and their means for one scale's default model."""
    upscaler = load_model("default", scale=scale)
    rows = []
    for folder in folders:
        _, val = split_train_val(load_captioned_folder(folder), val_fraction, seed=split_seed)
        for item in val:
            h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
            hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
            clean = degrade_to_uint8(hr, named_degradation("bicubic-aa", scale), item.name)
            right = upscaler.upscale(clean, item.captions[0]).image.astype(np.float32) / 255.0
            wrong = _kept(kind, right, hr, item.name, scale, clean)
            rows.append(
                {
                    "name": item.name,
                    "right_oracle": quality_scores(right, hr, border=scale).psnr_y,
                    "wrong_oracle": quality_scores(wrong, hr, border=scale).psnr_y,
                }
            )
    right_mean = float(np.mean([r["right_oracle"] for r in rows]))
    wrong_mean = float(np.mean([r["wrong_oracle"] for r in rows]))
    return {
        "degradation": kind,
        "scale": scale,
        "model": upscaler.description.to_dict(),
        "n_images": len(rows),
        "right_oracle": right_mean,
        "wrong_oracle": wrong_mean,
        "ceiling": right_mean - wrong_mean,
        "images": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--degradation", choices=KINDS, default="noise", help="the bench way (default noise)")
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
        result = ceiling(args.degradation, scale, args.data, args.val_fraction, args.split_seed)
        results.append(result)
        print(
            f"{args.degradation}, x{scale} ({result['n_images']} images): right (oracle) "
            f"{result['right_oracle']:.2f} dB, wrong (oracle) {result['wrong_oracle']:.2f} dB, "
            f"ceiling of right - wrong {result['ceiling']:+.2f} dB",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
