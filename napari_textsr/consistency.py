"""Measurement consistency: make the output explain the input it came from.

The forward model is the resize that made the low-resolution image, one of
:data:`~napari_textsr.training.degradations.RESIZE_KERNELS` (``torch``'s
``F.interpolate`` with or without antialiasing; ``area`` at an integer factor
is box averaging, i.e. pixel binning). Antialiased bicubic (MATLAB
``imresize``'s convention, the benchmark's) is the default; ``"auto"`` takes
the kernel the caption names with the training vocabulary's words
(:func:`kernel_for_caption`: "binned", "pixelated" -> ``area``; "aliased",
"jagged" -> plain ``bicubic``). Iterative back-projection (Irani & Peleg
1991) adds the bicubically upsampled residual to the output until
downsampling it reproduces the input:

    y <- y + step * U(x - D(y))

Back-projecting with the wrong kernel costs more than it gains: on the 34
held-out photographs made small by plain bicubic, antialiased-bicubic
back-projection takes the x4 default 2.3 dB *below* its own output
(README, "Measurement consistency"), and it fits noise and JPEG blocks as if
they were detail.

Every operator is local, so the correction can run per tile: each iteration
widens the dependence of an output pixel by ``LR_REACH_PER_ITERATION``
low-resolution pixels, which the engine adds to the tile padding
(:func:`extra_padding`), keeping tiled == untiled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_textsr.training.degradations import RESIZE_KERNELS, resize_down

__all__ = [
    "BackProjection",
    "CONSISTENCY_KERNELS",
    "CONSISTENCY_KERNEL_TITLES",
    "DEFAULT_KERNEL",
    "KERNEL_WORDS",
    "downsample",
    "upsample",
    "back_project",
    "extra_padding",
    "kernel_for_caption",
    "resolve_kernel",
    "unmodelled_degradations",
    "consistency_caveat",
]

# D reads +-2 LR pixels around each LR pixel (antialiased bicubic, the widest
# kernel; plain bicubic, bilinear and area read less); U reads +-2 LR pixels.
LR_REACH_PER_ITERATION = 4

DEFAULT_KERNEL = "bicubic-aa"
# Words of the training vocabulary (TRAIN_VOCABULARY) -> the resize they describe.
KERNEL_WORDS: dict[str, str] = {"binned": "area", "aliased": "bicubic"}
CONSISTENCY_KERNELS: tuple[str, ...] = ("auto", *RESIZE_KERNELS)
# What the SR dock shows for each of CONSISTENCY_KERNELS.
CONSISTENCY_KERNEL_TITLES: dict[str, str] = {
    "auto": "as the caption says",
    "bicubic-aa": "antialiased bicubic",
    "bicubic": "bicubic, no antialiasing",
    "bilinear-aa": "antialiased bilinear",
    "bilinear": "bilinear, no antialiasing",
    "area": "binning (area)",
}


def kernel_for_caption(caption: str, default: str = DEFAULT_KERNEL) -> str:
    """The resize kernel a caption names, else ``default`` (antialiased bicubic).

    Whole words of :data:`~napari_textsr.training.captions.TRAIN_VOCABULARY`,
    case-insensitive: "binned", "pixelated", "coarse pixels" -> ``"area"``;
    "aliased", "jagged", "with jagged edges" -> ``"bicubic"`` (no
    antialiasing). A caption naming both kinds raises ValueError (one image
    was made small one way).
    """
    from napari_textsr.training.captions import TRAIN_VOCABULARY, caption_names

    named = {kernel for prop, kernel in KERNEL_WORDS.items() if caption_names(caption, TRAIN_VOCABULARY[prop])}
    if len(named) > 1:
        raise ValueError(
            f"the caption {caption!r} names two ways the image was made small ({', '.join(sorted(named))}); "
            "say one, or choose the consistency kernel explicitly"
        )
    return named.pop() if named else default


def unmodelled_degradations(caption: str) -> list[str]:
    """The kinds of degradation a caption names that the forward model leaves out: of "blur", "noise", "jpeg".

    Back-projection models only the resize; a blurred, noisy or JPEG-compressed
    input's blur, grain or blocks are fitted as if they were detail (README,
    "Measurement consistency", measures what that costs). The engine warns
    when the caption names any of them (words of
    :data:`~napari_textsr.training.captions.TRAIN_VOCABULARY`, whole words,
    case-insensitive).
    """
    from napari_textsr.training.captions import TRAIN_VOCABULARY, caption_names

    return [kind for kind in ("blur", "noise", "jpeg") if caption_names(caption, TRAIN_VOCABULARY[kind])]


_KIND_WORDS = {"blur": "blurred", "noise": "noisy", "jpeg": "JPEG-compressed"}


def consistency_caveat(caption: str, kernel: str) -> str | None:
    """The warning for back-projecting an input the caption calls blurred, noisy or JPEG-compressed, or None."""
    kinds = unmodelled_degradations(caption)
    if not kinds:
        return None
    return (
        f"the caption says the image is {' and '.join(_KIND_WORDS[k] for k in kinds)}: measurement consistency "
        f"models only the resize ({kernel}), so it fits that as if it were detail and usually lowers PSNR "
        "(README, 'Measurement consistency'); leave consistency off for such images"
    )


def resolve_kernel(choice: str, caption: str = "", default: str = DEFAULT_KERNEL) -> str:
    """A name of :data:`CONSISTENCY_KERNELS` -> a resize kernel.

    ``"auto"``: :func:`kernel_for_caption` (``default`` when the caption
    names none). Raises ValueError for an unknown name.
    """
    if choice == "auto":
        return kernel_for_caption(caption, default)
    if choice not in RESIZE_KERNELS:
        raise ValueError(f"unknown consistency kernel {choice!r}; choose one of {', '.join(CONSISTENCY_KERNELS)}")
    return choice


def downsample(image: torch.Tensor, scale: int, kernel: str = DEFAULT_KERNEL) -> torch.Tensor:
    """(B, C, s*h, s*w) -> (B, C, h, w) with a kernel of :data:`RESIZE_KERNELS` (default antialiased bicubic).

    The same operator the training degradations apply
    (:class:`~napari_textsr.training.degradations.Degradation`), so a
    correction with the right kernel undoes exactly what made the input.
    """
    return resize_down(image, scale, kernel)


def upsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic (B, C, h, w) -> (B, C, s*h, s*w)."""
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)


@dataclass(frozen=True)
class BackProjection:
    """Settings of the correction.

    ``kernel``: the forward model, a name of :data:`RESIZE_KERNELS`.
    With antialiased bicubic, the operator D(U(.)) has eigenvalues in about
    [0.23, 1.02] at every supported scale (measured by power iteration), so
    the Richardson step 2 / (0.23 + 1.02) ~ 1.6 is the fastest stable one:
    each iteration shrinks the residual by ~0.62, 10 iterations by ~100-300x.
    The narrower kernels (plain bicubic, bilinear, area) have D(U(.)) closer
    to the identity, where a step of 1.6 overshoots but still converges
    (tests/test_consistency.py measures the residual after 10 iterations for
    every kernel and scale).
    """

    iterations: int = 10
    step: float = 1.6
    kernel: str = DEFAULT_KERNEL

    def __post_init__(self) -> None:
        if self.kernel not in RESIZE_KERNELS:
            raise ValueError(f"unknown resize kernel {self.kernel!r}; choose one of {', '.join(RESIZE_KERNELS)}")

    def extra_padding(self) -> int:
        return extra_padding(self.iterations)


def extra_padding(iterations: int) -> int:
    """LR pixels of padding the correction needs beyond the model's receptive field."""
    return LR_REACH_PER_ITERATION * (iterations + 1)


def back_project(
    lr: torch.Tensor, sr: torch.Tensor, scale: int, settings: BackProjection = BackProjection()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct ``sr`` so that ``downsample(sr, scale, settings.kernel) ~= lr``.

    lr: float32 (B, C, h, w); sr: float32 (B, C, s*h, s*w).
    Returns (corrected sr, residual ``lr - downsample(sr)`` of the raw input sr,
    float32 (B, C, h, w)).
    """
    lr = lr.float()
    sr = sr.float()
    raw_residual = lr - downsample(sr, scale, settings.kernel)
    residual = raw_residual
    for i in range(settings.iterations):
        if i:
            residual = lr - downsample(sr, scale, settings.kernel)
        sr = sr + settings.step * upsample(residual, scale)
    return sr, raw_residual
