"""Whether an LR photograph shows that it was made small without antialiasing: its share of high frequencies.

    python benchmarks/bench_aliasing_evidence.py --data ../shared/data/train/bsd200 \
        --data ../shared/data/train/t91 --scale 2 --scale 4

Plain bicubic down-sampling (OpenCV INTER_CUBIC, torch ``antialias=False``)
folds detail above the LR's Nyquist frequency back into it, so an aliased LR
keeps more power near that frequency than an antialiased one. For each
held-out photograph (the split ``textsr bench --split val`` scores) made small
each of ``textsr bench``'s six ways (seeded per image), this prints the
range and median over photographs of the luma's log10 ratio of mean
spectral power at 0.375-0.5 cycles per pixel (Chebyshev radius, Hann window)
over that at 0.125-0.25. A way that could be read from the pixels, as JPEG
can (``napari_textsr.imageio.jpeg_quality_from_pixels``), would have a range
apart from the others'. Not a test: it explains why the project routes JPEG
inputs to their own model and not aliased ones (docs/training.md, "What models
for one way could still buy").
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_textsr.benchmark import degrade_to_uint8
from napari_textsr.training.data import load_captioned_folder, split_train_val
from napari_textsr.training.degradations import NAMED_DEGRADATIONS, named_degradation

# ITU-R BT.601 luma of 8-bit RGB, as PSNR-Y uses.
LUMA = np.array([65.481, 128.553, 24.966]) / 255


def high_frequency_share(lr: np.ndarray) -> float:
    """log10(mean power at 0.375-0.5 cycles/px / mean power at 0.125-0.25) of (H, W, 3) uint8's luma."""
    y = lr[..., :3].astype(np.float64) @ LUMA
    y -= y.mean()
    window = np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    power = np.abs(np.fft.fft2(y * window)) ** 2
    radius = np.maximum(np.abs(np.fft.fftfreq(y.shape[0]))[:, None], np.abs(np.fft.fftfreq(y.shape[1]))[None, :])
    return float(np.log10(power[radius > 0.375].mean() / power[(radius > 0.125) & (radius <= 0.25)].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="captioned folder (repeatable)")
    parser.add_argument("--scale", type=int, action="append", help="scales (default 2, 4)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    items = []
    for folder in args.data:
        items += split_train_val(load_captioned_folder(folder), args.val_fraction, seed=args.split_seed)[1]
    for scale in args.scale or [2, 4]:
        print(f"x{scale} ({len(items)} photographs): log10 high / middle spectral power of the LR luma")
        for way in NAMED_DEGRADATIONS:
            shares = []
            for item in items:
                h, w = item.image.shape[0] // scale * scale, item.image.shape[1] // scale * scale
                hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
                shares.append(high_frequency_share(degrade_to_uint8(hr, named_degradation(way, scale), item.name)))
            values = np.array(shares)
            print(
                f"  {way:11s} min {values.min():+.2f}  median {np.median(values):+.2f}  max {values.max():+.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
