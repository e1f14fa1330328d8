"""Sample data contributions: the package's low-resolution samples with their captions
in the layer metadata (``metadata["caption"]`` pre-fills the widget's caption box).

Files and captions are read by :mod:`napari_textsr.samples`; ``sample_data/README.md``
gives their sources and licences, ``scripts/make_sample_data.py`` makes them.
"""

from __future__ import annotations

from napari_textsr.samples import load_sample


def _layer(key: str, **kwargs) -> list[tuple]:
    sample = load_sample(key)
    metadata = {
        "caption": sample.caption,
        "captions": sample.captions,
        "source": sample.info.source,
        "file": sample.info.file,
    }
    return [(sample.image, {"name": sample.info.name, "metadata": metadata, **kwargs}, "image")]


def fluorescence_sample() -> list[tuple]:
    """Synthetic fluorescence-like nuclei, 128 x 128 uint16, downsampled x4 with shot and read noise."""
    return _layer("fluorescence", colormap="gray")


def photograph_sample() -> list[tuple]:
    """Chelsea the cat from scikit-image (CC0, Stefan van der Walt), 100 x 150 RGB, downsampled x3."""
    return _layer("photograph", rgb=True)


def text_sample() -> list[tuple]:
    """Words rendered by us in Pillow's default font (Aileron, CC0), 40 x 192 uint8, downsampled x4."""
    return _layer("text", colormap="gray")
