"""The package's sample images and their captions (no Qt: the napari sample hooks and
``textsr demo --headless`` both read them from here).

The files live in ``sample_data/`` (installed as ``napari_textsr/sample_data``);
``captions.csv`` holds ``file,caption`` rows, the first row of a file being its
main caption. ``sample_data/README.md`` gives sources and licences.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from napari_textsr.imageio import read_image_file

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


@dataclass(frozen=True)
class SampleInfo:
    key: str
    file: str
    name: str  # layer name
    source: str
    rgb: bool
    scale: int  # the factor the file was downsampled by: the natural scale to restore


SAMPLES: dict[str, SampleInfo] = {
    s.key: s
    for s in (
        SampleInfo(
            "fluorescence",
            "nuclei_lr.tif",
            "nuclei (low-res)",
            "synthetic (napari_textsr.synthetic.microscopy_scene), made by scripts/make_sample_data.py",
            rgb=False,
            scale=4,
        ),
        SampleInfo(
            "photograph", "cat_lr.png", "cat (low-res)", "scikit-image data.chelsea (CC0), downsampled x3", True, 3
        ),
        SampleInfo("text", "text_lr.png", "text (low-res)", "rendered by scripts/make_sample_data.py", False, 4),
    )
}


@dataclass
class Sample:
    info: SampleInfo
    image: np.ndarray  # as stored: (Y, X) grey or (Y, X, 3) RGB, uint8/uint16
    captions: list[str]  # first = main caption

    @property
    def caption(self) -> str:
        return self.captions[0]


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


def load_sample(key: str) -> Sample:
    """One of :data:`SAMPLES` (``fluorescence``, ``photograph``, ``text``) with its captions."""
    if key not in SAMPLES:
        raise ValueError(f"unknown sample {key!r}; choose from {sorted(SAMPLES)}")
    info = SAMPLES[key]
    return Sample(info=info, image=read_image_file(sample_path(info.file)).data, captions=sample_captions()[info.file])
