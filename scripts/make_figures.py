"""Make README's pictures from the bundled models (CPU is fine; about a minute).

    python scripts/make_figures.py [--out docs/figures]

1. ``photograph_x4.png``: the photograph sample, x4: input (pixels enlarged),
   bicubic, PDN x4 output, and its first attention mask.
2. ``captions_x8.png``: held-out synthetic scenes (seed 90210, never used in
   training) degraded x8, restored by TGSR x8 with the true caption, with the
   same scene's caption naming another pattern/shape/structure, and with the
   next scene's caption (``textsr bench``'s "other caption"), beside bicubic
   and the target, with PSNR-Y in each label.
3. ``regions_x4.png``: the photograph sample with two region captions (eyes,
   whiskers) over the global caption, the bundled default x4 model's output,
   the text-effect map (output minus the uncaptioned output), and the output
   minus the output with the global caption alone (what the region captions
   changed: nothing outside the regions and their feather band).

``--only NAME`` makes one of them (photograph, captions, regions).
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
from napari_textsr.regions import RegionCaptions
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
    upscaler = load_model("tgsr-x8")  # reads the caption word by word (the default x8 PDN barely does)
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
        rows.append(
            [
                panel(lr8, "input (16x16)", size),
                panel(bicubic, f"bicubic x8, {score(bicubic)}", size),
                panel(right, f"{quoted(captions[index])}\n{score(right)}", size),
                panel(other, f"{quoted(wrong)}\n{score(other)}", size),
                panel(unrelated, f"{quoted(elsewhere)}\n{score(unrelated)}", size),
                panel(hr, "target", size),
            ]
        )
    grid(rows).save(out / "captions_x8.png")


def signed_heat(values: np.ndarray, limit: float) -> np.ndarray:
    """A signed map on a blue-white-red scale, +-limit saturating."""
    v = np.clip(values / max(limit, 1e-8), -1, 1)
    red = np.clip(1 + np.minimum(v, 0), 0, 1)
    blue = np.clip(1 - np.maximum(v, 0), 0, 1)
    green = 1 - np.abs(v)
    return to_rgb8(np.stack([red, green, blue], -1))


# Regions of the photograph sample (100 x 150 input pixels), (row, column) vertices.
EYES = [
    np.array([[27, 40], [27, 68], [50, 70], [52, 45]]),  # the cat's right eye (image left)
    np.array([[37, 92], [33, 112], [55, 118], [58, 97]]),
]
MUZZLE = np.array([[70, 0], [70, 60], [100, 80], [100, 0]])
REGION_CAPTIONS = ("two green eyes with black pupils", "long white whiskers on striped fur")


def regions_figure(out: Path) -> dict:
    sample = load_sample("photograph")
    upscaler = load_model("default", scale=4)
    shape = sample.image.shape[:2]
    eyes = RegionCaptions.from_polygons(shape, EYES, ["eyes"] * 2).labels > 0
    muzzle = RegionCaptions.from_polygons(shape, [MUZZLE], ["muzzle"]).labels > 0
    regions = RegionCaptions.from_masks([eyes, muzzle], list(REGION_CAPTIONS))
    result = upscaler.upscale(sample.image, sample.caption, regions=regions, text_effect=True)
    h, w = result.image.shape[:2]
    size = (w, h)
    outlined = sample.image[..., :3].copy()
    for mask, colour in ((eyes, (255, 220, 0)), (muzzle, (0, 200, 255))):
        edge = mask & ~np.pad(mask, 1)[2:, 1:-1] | mask & ~np.pad(mask, 1)[:-2, 1:-1]
        edge |= mask & ~np.pad(mask, 1)[1:-1, 2:] | mask & ~np.pad(mask, 1)[1:-1, :-2]
        outlined[edge] = colour
    stats = result.text_effect_stats
    limit = stats["p99_abs"]
    quoted = [textwrap.shorten(c, 34) for c in REGION_CAPTIONS]
    row = [
        panel(
            outlined,
            f'input 100x150; yellow: "{quoted[0]}"\nblue: "{quoted[1]}"\n'
            f'elsewhere: "{textwrap.shorten(sample.caption, 40)}"',
            size,
        ),
        panel(result.image, f"{result.model.name} x4 with the three captions", size),
        panel(
            signed_heat(result.text_effect, limit),
            f"text effect: output - uncaptioned output (grey levels)\nred +, blue -, saturating at +-{limit:.1f}"
            f"\nmean |.| {stats['mean_abs']:.2f}, 99th pct {stats['p99_abs']:.2f}",
            size,
        ),
    ]
    # What the region captions changed over the global caption alone: zero
    # outside the regions and their feather band.
    plain = upscaler.upscale(sample.image, sample.caption, attention=False).image
    local = (result.image[..., :3].astype(np.float32) - plain[..., :3].astype(np.float32)).mean(-1)
    local_limit = float(np.percentile(np.abs(local[local != 0]), 99)) if np.any(local) else 1.0
    outside = feather_outside(regions, 4)
    row.append(
        panel(
            signed_heat(local, local_limit),
            f"output - output with the main caption only\nred +, blue -, saturating at +-{local_limit:.1f}"
            f"\nmax |.| outside regions + band: {np.abs(local[outside]).max():.0f}",
            size,
        )
    )
    grid([row]).save(out / "regions_x4.png")
    return {
        "text_effect": stats,
        "regions": result.regions,
        "seconds": result.seconds,
        "region_change_outside": float(np.abs(local[outside]).max()),
        "region_change_inside_mean_abs": float(np.abs(local[~outside]).mean()),
    }


def feather_outside(regions: RegionCaptions, scale: int) -> np.ndarray:
    """Output pixels beyond every region's feather band."""
    from napari_textsr.regions import feather_weights

    return feather_weights(regions.labels > 0, scale, regions.feather) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--only", choices=("photograph", "captions", "regions"), default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "photograph"):
        photograph_figure(args.out)
        print(f"wrote {args.out / 'photograph_x4.png'}")
    if args.only in (None, "captions"):
        captions_figure(args.out)
        print(f"wrote {args.out / 'captions_x8.png'}")
    if args.only in (None, "regions"):
        summary = regions_figure(args.out)
        print(f"wrote {args.out / 'regions_x4.png'}: {summary}")


if __name__ == "__main__":
    main()
