"""Write the plugin's sample images and their captions into ``sample_data/``.

    python scripts/make_sample_data.py

Deterministic: running it again gives the same files. Each image is a
*low-resolution* input, made by antialiased downsampling of a sharper original,
so a super-resolution model has something to restore. Licences: see
``sample_data/README.md``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

from napari_textsr.synthetic import microscopy_scene

OUT = Path(__file__).resolve().parent.parent / "sample_data"


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Antialiased bicubic downsampling (Pillow's reducing filter), float32 in, float32 out."""
    height, width = image.shape[:2]
    size = (width // factor, height // factor)
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(size, Image.BICUBIC))
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(size, Image.BICUBIC))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def fluorescence() -> tuple[np.ndarray, list[str]]:
    """Nuclei channel of a synthetic fluorescence scene: 512 px -> 128 px (x4), camera-like uint16."""
    scene = microscopy_scene(np.random.default_rng(0), 512, structures=["nuclei"])
    channel = scene.image[..., 2]  # the scene draws these nuclei in blue, the DAPI channel
    lr = np.clip(_downsample(channel, 4), 0.0, 1.0)
    rng = np.random.default_rng(1)
    photons = rng.poisson(lr * 400.0)  # shot noise at a modest exposure
    counts = 100 + photons * 8 + rng.normal(0, 4, lr.shape)  # camera offset, gain, read noise
    return np.clip(counts, 0, 65535).astype(np.uint16), scene.captions


def photograph() -> tuple[np.ndarray, list[str]]:
    """Chelsea the cat (scikit-image, CC0) downsampled x3 to 100 x 150."""
    from skimage.data import chelsea

    lr = _downsample(chelsea().astype(np.float32), 3)
    captions = [
        "close-up of a tabby cat's face",
        "close-up of a tabby cat's face with green eyes, a pink nose, striped brown fur and long white whiskers",
    ]
    return np.clip(np.rint(lr), 0, 255).astype(np.uint8), captions


def text_image() -> tuple[np.ndarray, list[str]]:
    """Black words rendered on white at 4x with Pillow's default font (Aileron), downsampled x4."""
    words = "Text-guided SR"
    font = ImageFont.load_default(size=92)
    canvas = Image.new("L", (768, 160), 255)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), words, font=font)
    draw.text(((768 - (right - left)) / 2 - left, (160 - (bottom - top)) / 2 - top), words, fill=0, font=font)
    lr = _downsample(np.asarray(canvas, dtype=np.float32), 4)
    captions = [f'the words "{words}"', f'the words "{words}" in black sans-serif letters on a white background']
    return np.clip(np.rint(lr), 0, 255).astype(np.uint8), captions


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rows = []
    nuclei, nuclei_captions = fluorescence()
    tifffile.imwrite(OUT / "nuclei_lr.tif", nuclei, compression="zlib")
    rows += [("nuclei_lr.tif", c) for c in reversed(nuclei_captions)]
    cat, cat_captions = photograph()
    Image.fromarray(cat).save(OUT / "cat_lr.png", optimize=True)
    rows += [("cat_lr.png", c) for c in reversed(cat_captions)]
    text, text_captions = text_image()
    Image.fromarray(text).save(OUT / "text_lr.png", optimize=True)
    rows += [("text_lr.png", c) for c in reversed(text_captions)]
    with open(OUT / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption"])
        writer.writerows(rows)
    for name in ("nuclei_lr.tif", "cat_lr.png", "text_lr.png", "captions.csv"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
