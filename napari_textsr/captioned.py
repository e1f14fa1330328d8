"""The captioned-image data type shared by the synthetic scenes and the training data loaders.

A leaf module (numpy only), so :mod:`napari_textsr.synthetic` and
:mod:`napari_textsr.training.data` can both use it without importing each other;
``napari_textsr.training.data`` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CaptionedImage", "DataError"]


class DataError(ValueError):
    """Training data that cannot be used, with a message saying what to fix."""


@dataclass
class CaptionedImage:
    """One training image and its captions.

    image: float32 (H, W, 3) in [0, 1] (grey replicated to 3 channels).
    captions: one or more captions; one is drawn per sample ("" is allowed: the
        unconditional prompt).
    name: file or layer name; the validation split is decided by it.
    augment: False when flips and 90-degree rotations would make a caption
        false (stripe direction, written text); the sampler then only crops.
    """

    image: np.ndarray
    captions: list[str]
    name: str
    augment: bool = True

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.float32:
            raise DataError(
                f"{self.name}: image must be float32 (H, W, 3), got {self.image.dtype} {self.image.shape}; "
                "use captioned_images_from_arrays() to convert napari layer data"
            )
        if isinstance(self.captions, str):
            self.captions = [self.captions]
        self.captions = [str(c) for c in self.captions]
        if not self.captions:
            raise DataError(f"{self.name}: at least one caption is needed (use '' for none)")
