"""Make README's pictures from the bundled models (CPU is fine; about a minute).

    python scripts/make_figures.py [--out docs/figures]

1. ``photograph_x4.png``: the photograph sample, x4: input (pixels enlarged),
   bicubic, PDN x4 output, and its first attention mask.
2. ``captions_x8.png``: held-out synthetic scenes (seed 90210, never used in
   training) degraded x8, restored by the default x8 model (TGSR) with the true caption, with the
   same scene's caption naming another pattern/shape/structure, and with the
   next scene's caption (``textsr bench``'s "other caption"), beside bicubic
   and the target, with PSNR-Y in each label.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from napari_textsr.benchmark import bicubic_upscale
from napari_textsr.inference import load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.samples import load_sample
from napari_textsr.synthetic import caption_alternatives, synthetic_dataset
from napari_textsr.training.degradations import Degradation

LABEL_HEIGHT = 49


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] or uint8, grey or RGB -> uint8 (H, W, 3)."""
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def heat(values: np.ndarray) -> np.ndarray:
    """A map scaled to its own range, black-red-yellow-white."""
    v = (values - values.min()) / max(float(np.ptp(values)), 1e-8)
    return to_rgb8(np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1))


def panel(image: np.ndarray, label: str, size: tuple[int, int]) -> Image.Image:
    tile = Image.fromarray(to_rgb8(image)).resize(size, Image.NEAREST)
    canvas = Image.new("RGB", (size[0], size[1] + LABEL_HEIGHT), "white")
    canvas.paste(tile, (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(label.split("\n")[:3]):
        draw.text((4, 2 + 15 * i), line, fill="black")
    return canvas


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    w = max(sum(p.width for p in row) + 6 * (len(row) - 1) for row in rows)
    h = sum(row[0].height for row in rows) + 6 * (len(rows) - 1)
    out = Image.new("RGB", (w, h), "white")
    y = 0
    for row in rows:
        x = 0
        for p in row:
            out.paste(p, (x, y))
            x += p.width + 6
        y += row[0].height + 6
    return out


def photograph_figure(out: Path) -> None:
    sample = load_sample("photograph")
    upscaler = load_model("pdn-x4")
    result = upscaler.upscale(sample.image, sample.caption)
    h, w = result.image.shape[:2]
    size = (w, h)
    first_map = next(iter(result.attention))
    row = [
        panel(sample.image, "input (100x150)", size),
        panel(bicubic_upscale(sample.image, 4), "bicubic x4", size),
        panel(result.image, "PDN x4 (bundled)", size),
        panel(heat(result.attention[first_map]), f"attention: {first_map}", size),
    ]
    grid([row]).save(out / "photograph_x4.png")


def captions_figure(out: Path, n_scenes: int = 3) -> None:
    upscaler = load_model("default", scale=8)  # TGSR x8
    rows = []
    items = synthetic_dataset(12, seed=90210, size=128)
    for position, item in enumerate(items):
        alternatives = caption_alternatives(item.captions[0])
        if alternatives is None or len(rows) >= n_scenes:
            continue
        family, captions, index = alternatives
        wrong = captions[(index + 1) % len(captions)]
        # What textsr bench calls "other caption": the next scene's.
        elsewhere = items[(position + 1) % len(items)].captions[0]
        hr = item.image
        lr = Degradation(scale=8)(torch.from_numpy(hr).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
        lr8 = np.round(lr.clamp(0, 1).numpy() * 255).astype(np.uint8)
        bicubic = bicubic_upscale(lr8, 8)
        right = upscaler.upscale(lr8, captions[index]).image
        other = upscaler.upscale(lr8, wrong).image
        unrelated = upscaler.upscale(lr8, elsewhere).image

        def quoted(caption: str) -> str:
            return "\n".join(textwrap.wrap(f'"{caption}"', 31)[:2])

        def score(x: np.ndarray, hr: np.ndarray = hr) -> str:
            x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
            return f"{quality_scores(x, hr, 8).psnr_y:.2f} dB"

        size = (192, 192)
        rows.append([
            panel(lr8, "input (16x16)", size),
            panel(bicubic, f"bicubic x8, {score(bicubic)}", size),
            panel(right, f"{quoted(captions[index])}\n{score(right)}", size),
            panel(other, f"{quoted(wrong)}\n{score(other)}", size),
            panel(unrelated, f"{quoted(elsewhere)}\n{score(unrelated)}", size),
            panel(hr, "target", size),
        ])
    grid(rows).save(out / "captions_x8.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photograph_figure(args.out)
    captions_figure(args.out)
    print(f"wrote {args.out / 'photograph_x4.png'} and {args.out / 'captions_x8.png'}")


if __name__ == "__main__":
    main()
