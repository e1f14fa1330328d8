"""How low-resolution training (and benchmark) inputs are made from high-resolution images.

Two types:

* :class:`Degradation`: one fixed pipeline HR -> LR, in Real-ESRGAN's first-order
  order (Wang et al. 2021, "Real-ESRGAN: Training Real-World Blind
  Super-Resolution with Pure Synthetic Data", sec. 3.1): Gaussian blur
  (isotropic or anisotropic; focus and optics) -> down-sampling with one of
  the common resize kernels -> Poisson-Gaussian noise (cameras, fluorescence)
  -> JPEG compression. With its defaults it is antialiased bicubic
  down-sampling, MATLAB's ``imresize`` convention that SR benchmarks use.
* :class:`DegradationFamily`: a distribution over such pipelines, drawn per
  training sample from a numpy generator (so seeded and resumable), with
  named presets (:data:`DEGRADATION_PRESETS`): ``bicubic`` (the benchmark
  convention only), ``realistic`` (every common way an image gets small,
  JPEG included) and ``microscopy`` (optics blur, binning and shot noise,
  no JPEG).

:data:`NAMED_DEGRADATIONS` are the fixed pipelines ``textsr bench
--degradation NAME`` scores. Both types are recorded in checkpoints through
``to_dict`` and rebuilt by :func:`degradation_from_dict`.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from napari_textsr.training.presets import DEFAULT_PRESET, DEGRADATION_PRESET_TITLES, describe_presets

__all__ = [
    "RESIZE_KERNELS",
    "CONTENT_KINDS",
    "Degradation",
    "DegradationFamily",
    "DegradationLike",
    "DEGRADATION_PRESETS",
    "DEGRADATION_PRESET_TITLES",
    "DEFAULT_PRESET",
    "describe_presets",
    "NAMED_DEGRADATIONS",
    "named_degradation",
    "format_degradation_options",
    "degradation_from_dict",
    "gaussian_blur",
    "resize_down",
]

# name -> (torch interpolate mode, antialias). "area" at an integer factor is box
# averaging (pixel binning); "bicubic" without antialiasing is what OpenCV's
# INTER_CUBIC and torch's default do when shrinking (aliased).
RESIZE_KERNELS: dict[str, tuple[str, bool]] = {
    "bicubic-aa": ("bicubic", True),
    "bicubic": ("bicubic", False),
    "bilinear-aa": ("bilinear", True),
    "bilinear": ("bilinear", False),
    "area": ("area", False),
}

# The parts of a pipeline a training caption may call part of the scene
# (Degradation.without, Degradation.content_target, CaptionPolicy).
CONTENT_KINDS: tuple[str, ...] = ("blur", "noise", "jpeg")


def resize_down(x: torch.Tensor, scale: int, kernel: str) -> torch.Tensor:
    """(B, C, s*h, s*w) -> (B, C, h, w) with a kernel of :data:`RESIZE_KERNELS`, unclipped.

    ``area`` at the integer factor is box averaging (pixel binning); the
    others are ``F.interpolate`` with or without antialiasing. The one
    resize of the training degradations and of measurement consistency
    (:func:`napari_textsr.consistency.downsample`).
    """
    mode, antialias = RESIZE_KERNELS[kernel]
    if mode == "area":
        return F.avg_pool2d(x, scale)
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=antialias)


def _gaussian_kernel_2d(sigma_x: float, sigma_y: float, angle: float, dtype, device) -> torch.Tensor:
    """Normalised 2D Gaussian (2r+1, 2r+1), r = ceil(3 max(sigma)), rotated by ``angle`` radians."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(t, t, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _pad_mode(x: torch.Tensor, radius: int) -> str:
    # "reflect" needs the pad to be smaller than the side; tiny images fall back to replicate.
    return "reflect" if min(x.shape[-2:]) > radius else "replicate"


def gaussian_blur(x: torch.Tensor, sigma: float, sigma_minor: float | None = None, angle: float = 0.0) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with mirrored borders; kernel radius ceil(3 sigma).

    ``sigma`` (pixels) alone: isotropic, separable. With ``sigma_minor``: an
    anisotropic Gaussian with standard deviations ``sigma`` along the direction
    ``angle`` (radians from the x axis) and ``sigma_minor`` across it.
    """
    if sigma <= 0:
        return x
    c = x.shape[1]
    if sigma_minor is None or sigma_minor == sigma:
        radius = max(1, math.ceil(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-(t**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        x = F.pad(x, (radius, radius, radius, radius), mode=_pad_mode(x, radius))
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if sigma_minor <= 0:
        raise ValueError(f"sigma_minor must be > 0, got {sigma_minor}")
    kernel = _gaussian_kernel_2d(sigma, sigma_minor, angle, x.dtype, x.device)
    radius = kernel.shape[-1] // 2
    x = F.pad(x, (radius, radius, radius, radius), mode=_pad_mode(x, radius))
    return F.conv2d(x, kernel[None, None].expand(c, 1, -1, -1), groups=c)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image of (B, C, H, W) in [0, 1] through a JPEG encode/decode at ``quality`` (Pillow, 4:2:0)."""
    from PIL import Image

    out = []
    for image in x:
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        grey = array.shape[2] == 1
        pil = Image.fromarray(array[..., 0] if grey else array)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            back = np.asarray(decoded.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        back = back[..., None] if grey else back
        out.append(torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1))
    return torch.stack(out).to(dtype=x.dtype, device=x.device)


@dataclass
class Degradation:
    """One fixed HR -> LR pipeline: blur, resize, noise, JPEG (each optional but the resize).

    scale: down-sampling factor (2, 4, 8, 16).
    blur_sigma: Gaussian blur standard deviation in HR pixels before resizing; 0 = none.
    blur_sigma_minor: None = isotropic; else the blur is anisotropic with
        ``blur_sigma`` along ``blur_angle`` (radians) and this across it.
    resize: a key of :data:`RESIZE_KERNELS` (default antialiased bicubic).
    noise_poisson_peak: Poisson (shot) noise with this many photons at
        intensity 1 (smaller = noisier); None = none.
    noise_gaussian_sigma: additive Gaussian (read) noise, intensity units ([0, 1]).
    noise_grey: the same noise in every channel (a grey sensor / luminance noise).
    jpeg_quality: JPEG-compress the LR at this quality (1-100); None = none.

    The output is clipped to [0, 1], the range models take as input.
    """

    scale: int
    blur_sigma: float = 0.0
    noise_poisson_peak: float | None = None
    noise_gaussian_sigma: float = 0.0
    blur_sigma_minor: float | None = None
    blur_angle: float = 0.0
    resize: str = "bicubic-aa"
    noise_grey: bool = False
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        if int(self.scale) != self.scale or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        if self.blur_sigma < 0 or self.noise_gaussian_sigma < 0:
            raise ValueError("blur_sigma and noise_gaussian_sigma must be >= 0")
        if self.blur_sigma_minor is not None and self.blur_sigma_minor <= 0:
            raise ValueError(f"blur_sigma_minor must be > 0 (or None), got {self.blur_sigma_minor}")
        if self.noise_poisson_peak is not None and self.noise_poisson_peak <= 0:
            raise ValueError(f"noise_poisson_peak must be > 0 (or None), got {self.noise_poisson_peak}")
        if self.resize not in RESIZE_KERNELS:
            raise ValueError(f"unknown resize kernel {self.resize!r}; choose from {sorted(RESIZE_KERNELS)}")
        if self.jpeg_quality is not None:
            if not 1 <= int(self.jpeg_quality) <= 100:
                raise ValueError(f"jpeg_quality must be in 1..100 (or None), got {self.jpeg_quality}")
            self.jpeg_quality = int(self.jpeg_quality)

    # A fixed pipeline is a family with one member (what PatchSampler draws from).
    def draw(self, rng: np.random.Generator) -> "Degradation":  # noqa: ARG002
        return self

    @property
    def max_blur_sigma(self) -> float:
        """The largest blur this pipeline applies (HR px): what a patch's margin must cover."""
        return max(self.blur_sigma, self.blur_sigma_minor or 0.0)

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """hr float (B, C, H, W) in [0, 1], H and W multiples of scale -> lr (B, C, H/s, W/s) in [0, 1].

        ``generator`` (on hr's device) makes the noise repeatable. Raises
        ValueError for another shape or a size that is not a multiple of the scale.
        """
        if hr.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got shape {tuple(hr.shape)}")
        h, w = hr.shape[-2:]
        s = self.scale
        if h % s or w % s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        x = gaussian_blur(hr.float(), self.blur_sigma, self.blur_sigma_minor, self.blur_angle)
        if s > 1:
            x = resize_down(x, s, self.resize)
        x = x.clamp(0.0, 1.0)
        if self.noise_poisson_peak is not None:
            x = torch.poisson(x * self.noise_poisson_peak, generator=generator) / self.noise_poisson_peak
        if self.noise_gaussian_sigma > 0:
            shape = (x.shape[0], 1, *x.shape[2:]) if self.noise_grey else x.shape
            noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + self.noise_gaussian_sigma * noise
        x = x.clamp(0.0, 1.0)
        if self.jpeg_quality is not None:
            x = _jpeg(x, self.jpeg_quality)
        return x

    def resize_only(self) -> "Degradation":
        """This pipeline's resize alone (no blur, noise or JPEG)."""
        return Degradation(scale=self.scale, resize=self.resize)

    def without(self, kinds: Iterable[str]) -> "Degradation":
        """This pipeline without the parts named in ``kinds`` (of :data:`CONTENT_KINDS`; ValueError for others).

        ``"blur"`` drops the blur, ``"noise"`` the Poisson and Gaussian noise,
        ``"jpeg"`` the JPEG; the resize always stays.
        """
        kinds = _check_content_kinds(kinds)
        changes: dict[str, Any] = {}
        if "blur" in kinds:
            changes.update(blur_sigma=0.0, blur_sigma_minor=None, blur_angle=0.0)
        if "noise" in kinds:
            changes.update(noise_poisson_peak=None, noise_gaussian_sigma=0.0, noise_grey=False)
        if "jpeg" in kinds:
            changes.update(jpeg_quality=None)
        return replace(self, **changes)

    def content_target(self, hr: torch.Tensor, lr: torch.Tensor, kinds: Iterable[str] = CONTENT_KINDS) -> torch.Tensor:
        """The HR image of a scene in which this pipeline's ``kinds`` of degradation are content, not degradation.

        hr float (B, C, H, W) in [0, 1]; lr (B, C, H/s, W/s): this pipeline's
        output for ``hr``; ``kinds``: which parts are kept, of
        :data:`CONTENT_KINDS` (noise and JPEG only together: both are the LR's
        residue; ValueError otherwise). Returns (B, C, H, W) in [0, 1]: the HR,
        blurred if ``"blur"`` is kept, plus (if noise and JPEG are kept) the
        LR's residue (``lr`` minus the resize of the blurred HR) up-sampled
        bicubically. With every kind kept its resize is ``lr`` up to that
        residue's round trip, so a model told the image is clean learns to keep
        grain and softness as detail (see
        :class:`~napari_textsr.training.captions.CaptionPolicy`).
        """
        kinds = _check_content_kinds(kinds)
        blurred = gaussian_blur(hr.float(), self.blur_sigma, self.blur_sigma_minor, self.blur_angle)
        target = blurred if "blur" in kinds else hr.float()
        if "noise" in kinds:
            residue = lr.float() - self.resize_only()(blurred)
            if self.scale > 1:
                residue = F.interpolate(residue, scale_factor=self.scale, mode="bicubic", align_corners=False)
            target = target + residue
        return target.clamp(0.0, 1.0)

    @property
    def noisy(self) -> bool:
        return self.noise_poisson_peak is not None or self.noise_gaussian_sigma > 0

    def __str__(self) -> str:
        parts = [f"{self.resize} x{self.scale}"]
        if self.blur_sigma:
            blur = f"Gaussian blur sigma {self.blur_sigma:.3g}"
            if self.blur_sigma_minor is not None:
                blur += f"x{self.blur_sigma_minor:.3g} at {math.degrees(self.blur_angle):.0f} deg"
            parts.insert(0, blur)
        if self.noise_poisson_peak is not None:
            parts.append(f"Poisson noise, peak {self.noise_poisson_peak:.3g}")
        if self.noise_gaussian_sigma:
            parts.append(f"Gaussian noise sigma {self.noise_gaussian_sigma * 255:.3g}/255")
        if self.jpeg_quality is not None:
            parts.append(f"JPEG quality {self.jpeg_quality}")
        return " + ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Degradation":
        values = dict(values)
        kind = values.pop("kind", "fixed")
        if kind not in ("fixed", "bicubic-antialias"):  # the latter: checkpoints before the family existed
            raise ValueError(f"unknown degradation kind {kind!r}")
        _check_known(cls, values)
        return cls(**values)


def _check_content_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple in :data:`CONTENT_KINDS` order; ValueError for unknown kinds or noise without JPEG."""
    given = set(kinds)
    unknown = given - set(CONTENT_KINDS)
    if unknown:
        raise ValueError(f"unknown degradation kind(s) {sorted(unknown)}; choose from {', '.join(CONTENT_KINDS)}")
    if ("noise" in given) != ("jpeg" in given):
        raise ValueError("noise and jpeg are kept or removed together (both are the LR's residue after resizing)")
    return tuple(k for k in CONTENT_KINDS if k in given)


def _check_known(cls, values: dict[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown degradation setting(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(known)}")


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


@dataclass
class DegradationFamily:
    """A distribution of :class:`Degradation` pipelines, one drawn per training sample.

    The draw (:meth:`draw`) follows Real-ESRGAN's first-order model: with
    probability ``p_blur`` a Gaussian blur with sigma uniform in
    ``blur_sigma_range`` HR px (anisotropic with probability ``p_anisotropic``,
    the minor sigma uniform in [0.3, 1] x the major one, any angle); a resize
    kernel drawn uniformly from ``resize_kernels``; with probability
    ``p_noise`` noise: Gaussian with sigma uniform in ``gaussian_sigma_range``
    (intensity units), and with probability ``p_poisson`` (of noisy draws)
    Poisson noise too, with a log-uniform peak in ``poisson_peak_range``
    photons; grey (luminance) noise with probability ``p_grey_noise``; and
    with probability ``p_jpeg`` JPEG at a quality uniform in
    ``jpeg_quality_range``. All draws come from the numpy generator passed in.
    """

    scale: int
    preset: str = "custom"
    resize_kernels: tuple[str, ...] = tuple(RESIZE_KERNELS)
    p_blur: float = 0.5
    blur_sigma_range: tuple[float, float] = (0.2, 3.0)
    p_anisotropic: float = 0.4
    p_noise: float = 0.4
    gaussian_sigma_range: tuple[float, float] = (1.0 / 255, 12.0 / 255)
    p_poisson: float = 0.4
    poisson_peak_range: tuple[float, float] = (30.0, 1000.0)
    p_grey_noise: float = 0.4
    p_jpeg: float = 0.35
    jpeg_quality_range: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        if int(self.scale) != self.scale or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        kernels = self.resize_kernels
        self.resize_kernels = (kernels,) if isinstance(kernels, str) else tuple(kernels)
        if not self.resize_kernels:
            raise ValueError("resize_kernels must name at least one kernel")
        for kernel in self.resize_kernels:
            if kernel not in RESIZE_KERNELS:
                raise ValueError(f"unknown resize kernel {kernel!r}; choose from {sorted(RESIZE_KERNELS)}")
        for name in ("p_blur", "p_anisotropic", "p_noise", "p_poisson", "p_grey_noise", "p_jpeg"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
            setattr(self, name, value)
        for name, low_limit in (
            ("blur_sigma_range", 0.0),
            ("gaussian_sigma_range", 0.0),
            ("poisson_peak_range", 1e-6),
            ("jpeg_quality_range", 1),
        ):
            low, high = (float(v) for v in getattr(self, name))
            if not low_limit <= low <= high:
                raise ValueError(f"{name} must be (low, high) with {low_limit} <= low <= high, got {(low, high)}")
            setattr(self, name, (low, high) if name != "jpeg_quality_range" else (int(low), int(high)))
        if self.jpeg_quality_range[1] > 100:
            raise ValueError(f"jpeg_quality_range must lie in 1..100, got {self.jpeg_quality_range}")

    @classmethod
    def preset_family(cls, name: str, scale: int) -> "DegradationFamily":
        """A named family (see :data:`DEGRADATION_PRESETS`); ValueError for an unknown name."""
        if name not in DEGRADATION_PRESETS:
            raise ValueError(f"unknown degradation preset {name!r}; choose from {sorted(DEGRADATION_PRESETS)}")
        return cls(scale=scale, preset=name, **DEGRADATION_PRESETS[name])

    @property
    def max_blur_sigma(self) -> float:
        return self.blur_sigma_range[1] if self.p_blur > 0 else 0.0

    def draw(self, rng: np.random.Generator) -> Degradation:
        """One pipeline; always consumes the same number of draws from ``rng`` (resumable)."""
        u = rng.random(8)
        kernel = self.resize_kernels[int(rng.integers(len(self.resize_kernels)))]
        sigma = float(rng.uniform(*self.blur_sigma_range))
        ratio, angle = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.0, math.pi))
        gauss = float(rng.uniform(*self.gaussian_sigma_range))
        peak = _loguniform(rng, *self.poisson_peak_range)
        quality = int(rng.integers(self.jpeg_quality_range[0], self.jpeg_quality_range[1] + 1))
        blur = u[0] < self.p_blur and sigma > 0
        anisotropic = blur and u[1] < self.p_anisotropic
        noise = u[2] < self.p_noise
        return Degradation(
            scale=self.scale,
            blur_sigma=sigma if blur else 0.0,
            blur_sigma_minor=max(sigma * ratio, 0.1) if anisotropic else None,
            blur_angle=angle if anisotropic else 0.0,
            resize=kernel,
            noise_poisson_peak=peak if noise and u[3] < self.p_poisson else None,
            noise_gaussian_sigma=gauss if noise else 0.0,
            noise_grey=bool(noise and u[4] < self.p_grey_noise),
            jpeg_quality=quality if u[5] < self.p_jpeg else None,
        )

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Degrade with one pipeline drawn from a generator seeded by ``generator`` (validation, previews)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
        return self.draw(np.random.default_rng(seed))(hr, generator=generator)

    def __str__(self) -> str:
        return f"degradation family {self.preset!r} x{self.scale}"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key, value in values.items():
            if isinstance(value, tuple):
                values[key] = list(value)
        return {"kind": "family", **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DegradationFamily":
        values = dict(values)
        if values.pop("kind", "family") != "family":
            raise ValueError("not a degradation family")
        _check_known(cls, values)
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(value)
        return cls(**values)

    def changes_from_preset(self) -> dict[str, Any]:
        """The settings (as :meth:`to_dict` writes them) that differ from the named family it is based on.

        ``preset`` names the base ('custom': the default family); empty for a preset itself.
        """
        base = self.preset if self.preset in DEGRADATION_PRESETS else DEFAULT_PRESET
        reference = DegradationFamily.preset_family(base, self.scale).to_dict()
        return {k: v for k, v in self.to_dict().items() if k not in ("kind", "scale", "preset") and v != reference[k]}

    def replace(self, **changes: Any) -> "DegradationFamily":
        """A copy with some settings changed (``preset`` becomes 'custom' unless given)."""
        changes.setdefault("preset", "custom" if changes else self.preset)
        return replace(self, **changes)


DegradationLike = Degradation | DegradationFamily

# Named families. "realistic" is the default of `textsr train` and the Train
# widget: every common way an image gets small (sharp and soft optics, the five
# resize kernels, camera noise, JPEG). "microscopy" leaves out JPEG and the
# aliasing kernels that cameras do not have (binning is "area"). "bicubic" is
# the SR benchmark convention alone (antialiased bicubic, nothing else).
DEGRADATION_PRESETS: dict[str, dict[str, Any]] = {
    "bicubic": dict(resize_kernels=("bicubic-aa",), p_blur=0.0, p_noise=0.0, p_jpeg=0.0),
    "realistic": dict(),
    "microscopy": dict(
        resize_kernels=("bicubic-aa", "area", "bilinear-aa"),
        p_blur=0.6,
        p_noise=0.6,
        p_poisson=0.8,
        poisson_peak_range=(10.0, 1000.0),
        p_grey_noise=1.0,
        p_jpeg=0.0,
    ),
}
# The fixed pipelines `textsr bench --degradation NAME` scores (the table of
# issue 9): noise and JPEG follow antialiased bicubic.
NAMED_DEGRADATIONS: dict[str, Callable[[int], Degradation]] = {
    "bicubic-aa": lambda s: Degradation(scale=s),
    "box": lambda s: Degradation(scale=s, resize="area"),
    "blur": lambda s: Degradation(scale=s, blur_sigma=1.3),
    "noise": lambda s: Degradation(scale=s, noise_gaussian_sigma=5.0 / 255),
    "jpeg": lambda s: Degradation(scale=s, jpeg_quality=60),
    "bicubic": lambda s: Degradation(scale=s, resize="bicubic"),
}
NAMED_DEGRADATION_TITLES: dict[str, str] = {
    "bicubic-aa": "antialiased bicubic (PIL / MATLAB imresize; the benchmark convention)",
    "box": "box averaging / binning",
    "blur": "Gaussian blur sigma 1.3 HR px, then antialiased bicubic (PDN's BD setting)",
    "noise": "antialiased bicubic, then Gaussian noise sigma 5/255",
    "jpeg": "antialiased bicubic, then JPEG quality 60",
    "bicubic": "plain bicubic without antialiasing (OpenCV INTER_CUBIC, torch antialias=False)",
}


def format_degradation_options(settings: dict[str, Any]) -> str:
    """``NAME=VALUE,...`` as ``textsr train --degradation-option`` reads it (ranges and kernel lists joined by ':')."""

    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ":".join(map(str, value))
        return "none" if value is None else str(value)

    return ",".join(f"{name}={text(value)}" for name, value in settings.items())


def named_degradation(name: str, scale: int) -> Degradation:
    """A pipeline of :data:`NAMED_DEGRADATIONS`; ValueError naming the choices for another name."""
    if name not in NAMED_DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose from {', '.join(NAMED_DEGRADATIONS)}")
    return NAMED_DEGRADATIONS[name](scale)


def degradation_from_dict(values: dict[str, Any]) -> DegradationLike:
    """Rebuild what ``to_dict`` stored (a fixed pipeline or a family); ValueError for anything else."""
    if not isinstance(values, dict):
        raise ValueError(f"a degradation record must be a dict, got {type(values).__name__}")
    if values.get("kind") == "family":
        return DegradationFamily.from_dict(values)
    return Degradation.from_dict(values)
