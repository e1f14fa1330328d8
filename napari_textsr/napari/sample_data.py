"""Sample data contributions: small low-resolution images with their captions in the layer metadata.

The files live in ``sample_data/`` at the top of the repository and inside the
installed package (``napari_textsr/sample_data``); ``captions.csv`` holds the
captions (``file,caption``; the first row of a file is the caption put in the
layer, every row is in ``metadata["captions"]``). ``scripts/make_sample_data.py``
makes them; ``sample_data/README.md`` gives their sources and licences.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def sample_path(file_name: str) -> Path:
    path = SAMPLE_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(f"sample file {file_name} is missing from {SAMPLE_DIR}")
    return path


@lru_cache(maxsize=1)
def sample_captions() -> dict[str, list[str]]:
    """File name -> its captions, in the order of ``captions.csv``."""
    captions: dict[str, list[str]] = {}
    with open(sample_path("captions.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            captions.setdefault(row["file"], []).append(row["caption"])
    return captions


def _read(file_name: str) -> np.ndarray:
    path = sample_path(file_name)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def _layer(file_name: str, name: str, source: str, **kwargs) -> list[tuple]:
    captions = sample_captions()[file_name]
    metadata = {"caption": captions[0], "captions": captions, "source": source, "file": file_name}
    return [(_read(file_name), {"name": name, "metadata": metadata, **kwargs}, "image")]


def fluorescence_sample() -> list[tuple]:
    """Synthetic fluorescence-like nuclei, 128 x 128 uint16, downsampled x4 with shot and read noise."""
    return _layer(
        "nuclei_lr.tif",
        "nuclei (low-res)",
        "synthetic (napari_textsr.synthetic.microscopy_scene), made by scripts/make_sample_data.py",
        colormap="gray",
    )


def photograph_sample() -> list[tuple]:
    """Chelsea the cat from scikit-image (CC0, Stefan van der Walt), 100 x 150 RGB, downsampled x3."""
    return _layer("cat_lr.png", "cat (low-res)", "scikit-image data.chelsea (CC0), downsampled x3", rgb=True)


def text_sample() -> list[tuple]:
    """Words rendered by us in Pillow's default font (Aileron, CC0), 40 x 192 uint8, downsampled x4."""
    return _layer("text_lr.png", "text (low-res)", "rendered by scripts/make_sample_data.py", colormap="gray")
