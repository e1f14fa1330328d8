"""How low-resolution training inputs are made from high-resolution images.

Bicubic down-sampling with antialiasing, i.e. MATLAB's ``imresize`` convention
that SR benchmarks use (torch ``F.interpolate(mode="bicubic", antialias=True)``
computes the same widened kernel), optionally after a Gaussian blur (PDN's
"BD" setting uses sigma 1.3) and followed by Poisson-Gaussian noise (camera
noise of fluorescence microscopy). The settings are recorded in checkpoints
through :meth:`Degradation.to_dict`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["Degradation", "gaussian_blur"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), kernel radius ceil(3 sigma), mirrored borders."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    # "reflect" needs the pad to be smaller than the side; tiny images fall back to replicate.
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass
class Degradation:
    """HR -> LR: optional Gaussian blur, antialiased bicubic down-sampling, optional noise.

    scale: down-sampling factor (2, 4, 8, 16).
    blur_sigma: Gaussian blur (HR pixels) before down-sampling; 0 = none.
    noise_poisson_peak: Poisson noise with this many photons at intensity 1
        (smaller = noisier); None = none.
    noise_gaussian_sigma: additive Gaussian read noise (intensity units).
    The output is clipped to [0, 1], the range models take as input.
    """

    scale: int
    blur_sigma: float = 0.0
    noise_poisson_peak: float | None = None
    noise_gaussian_sigma: float = 0.0

    def __post_init__(self) -> None:
        if int(self.scale) != self.scale or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        if self.blur_sigma < 0 or self.noise_gaussian_sigma < 0:
            raise ValueError("blur_sigma and noise_gaussian_sigma must be >= 0")
        if self.noise_poisson_peak is not None and self.noise_poisson_peak <= 0:
            raise ValueError(f"noise_poisson_peak must be > 0 (or None), got {self.noise_poisson_peak}")

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """hr float (B, C, H, W) in [0, 1], H and W multiples of scale -> lr (B, C, H/s, W/s) in [0, 1].

        ``generator`` (on hr's device) makes the noise repeatable.
        """
        if hr.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got shape {tuple(hr.shape)}")
        h, w = hr.shape[-2:]
        s = self.scale
        if h % s or w % s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        x = hr.float()
        x = gaussian_blur(x, self.blur_sigma)
        if s > 1:
            x = F.interpolate(x, size=(h // s, w // s), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0)
        if self.noise_poisson_peak is not None:
            x = torch.poisson(x * self.noise_poisson_peak, generator=generator) / self.noise_poisson_peak
        if self.noise_gaussian_sigma > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + self.noise_gaussian_sigma * noise
        return x.clamp(0.0, 1.0)

    @property
    def noisy(self) -> bool:
        return self.noise_poisson_peak is not None or self.noise_gaussian_sigma > 0

    def __str__(self) -> str:
        parts = [f"bicubic x{self.scale} (antialiased)"]
        if self.blur_sigma:
            parts.insert(0, f"Gaussian blur sigma {self.blur_sigma:g}")
        if self.noise_poisson_peak is not None:
            parts.append(f"Poisson noise, peak {self.noise_poisson_peak:g}")
        if self.noise_gaussian_sigma:
            parts.append(f"Gaussian noise sigma {self.noise_gaussian_sigma:g}")
        return " + ".join(parts)

    def to_dict(self) -> dict:
        return {"kind": "bicubic-antialias", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "Degradation":
        values = dict(values)
        kind = values.pop("kind", "bicubic-antialias")
        if kind != "bicubic-antialias":
            raise ValueError(f"unknown degradation kind {kind!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown degradation setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)
