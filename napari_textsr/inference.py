"""The inference engine: napari-style arrays in, upscaled arrays of the same kind out.

>>> from napari_textsr import load_model
>>> upscaler = load_model("random:pdn:4:tiny")          # or a checkpoint path / bundled name
>>> result = upscaler.upscale(image, "DAPI-stained nuclei, two in mitosis")
>>> result.image.shape, result.attention.keys()

What happens to an image (see :class:`Upscaler` for the details):

* layout: (Y, X) grey, (Y, X, 3|4) RGB/RGBA, any leading axes (z, t, channels)
  iterated slice by slice; grey is fed as three equal channels and averaged back;
  RGBA's alpha is upscaled bicubically;
* intensities: uint8 RGB /255, everything else percentile-normalised once over
  the whole array and inverted afterwards (:mod:`napari_textsr.intensity`);
* tiles: padded by the receptive field, aligned, core-only paste
  (:mod:`napari_textsr.tiling`), so tiled == untiled for models whose tiling
  is exact; the tile size comes from free memory unless given;
* optional measurement consistency by back-projection
  (:mod:`napari_textsr.consistency`), per tile;
* progress after each tile from a generator; closing it cancels.

Nothing here imports Qt or napari.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import math
import os
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_textsr._generators import drive, relay
from napari_textsr._version import __version__
from napari_textsr.consistency import (
    BackProjection,
    back_project,
    consistency_caveat,
    resolve_kernel,
    upsample,
)
from napari_textsr.devices import autocast_dtype, available_memory_bytes, select_device
from napari_textsr.intensity import DEFAULT_PERCENTILES, IntensityMapping, check_dtype, compute_mappings
from napari_textsr.loading import (
    WEIGHTS_DIR,
    BundledModel,
    ModelDescription,
    ModelSpec,
    ModelSpecError,
    default_for_input,
    describe_model,
    list_models,
    load,
)
from napari_textsr.models import SROutput, TextSRModel, TilingInfo
from napari_textsr.prompts import PromptEmbedding, PromptEncoder
from napari_textsr.regions import RegionCaptions
from napari_textsr.tiling import Tile, auto_tile_size, plan_tiles

# Model lookup lives in napari_textsr.loading; its public names stay importable from here.
__all__ = [
    "WEIGHTS_DIR",
    "BundledModel",
    "ModelDescription",
    "ModelSpec",
    "ModelSpecError",
    "UpscaleCancelled",
    "UpscaleProgress",
    "UpscaleResult",
    "Upscaler",
    "list_models",
    "load_model",
]

# Working memory per tile on the CPU is capped so that a whole run (Python,
# torch, the output buffer and one tile) stays well under 4 GB.
DEFAULT_CPU_TILE_MEMORY = 1 << 30
# Smallest spatial side accepted whatever the model says: a 1-pixel line has
# no 2-D neighbourhood to super-resolve (and is usually a wrongly read axis).
MIN_SIDE = 2
# Assumed number of attention maps when sizing tiles (PDN default has 8).
_ASSUMED_ATTENTION_MAPS = 8
# Attention maps are returned on the output grid up to this many output pixels
# per slice (4096 x 4096); above it they are returned on the input grid (a
# factor scale**2 smaller; ``UpscaleResult.attention_scale`` says which) and a
# warning says so. At x4 a 4096² input would otherwise need 16 float32 bytes
# per input pixel per map: 8.6 GB for 8 maps.
MAX_ATTENTION_OUTPUT_PIXELS = 1 << 24
# Where attention maps are returned: "output" (the output grid, resampled
# bilinearly from the model's own grid) or "native" (the grid the model
# computes them on: the input's for PDN and CLIP-SR, the output's for TGSR;
# scale**2 times smaller for the former, and never resampled).
ATTENTION_GRIDS = ("output", "native")
# The output, its maps and one tile's working memory must fit in this fraction
# of the memory available when the run starts.
OUTPUT_MEMORY_FRACTION = 0.7


class UpscaleCancelled(Exception):
    """Raised by :meth:`Upscaler.upscale` when ``cancel`` asked to stop; no output is kept."""


# --------------------------------------------------------------------------- progress and result
@dataclass(frozen=True)
class UpscaleProgress:
    """Yielded after each tile.

    ``done``/``total`` count tiles over the whole call (all slices), so one
    progress bar goes from 0 to ``total`` once; ``slice_index`` is the 0-based
    slice being processed out of ``n_slices`` (1 for a single image).
    """

    done: int
    total: int
    slice_index: int
    n_slices: int
    message: str = ""
    tile_index: int = 0
    n_tiles: int = 1

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class UpscaleResult:
    """The output of one upscaling call.

    image: same dtype and kind as the input, leading axes kept, the two spatial
        axes multiplied by ``scale`` (channel axis kept for RGB/RGBA).
    attention: name -> float32 map on the output grid (or the grid
        ``attention_scale`` times the input's, see ``attention_grid``), leading
        axes kept, no channel axis (raw model values: masks in [0, 1], softmax
        weights, ...).
    consistency_map: float32, same shape as an attention map, or None:
        |bicubic upsampling of (input - downsample(raw output))|, averaged over
        colour channels, in units of the intensity normalisation range (1.0 =
        the input's percentile range, or 255 grey levels for uint8 RGB).
    consistency_error: RMS over all input pixels and channels of that residual
        before correction, same units; None without ``consistency``. With
        region captions, the global caption's run (each region's is in
        ``regions``).
    consistency_kernel: the resize the output was made consistent with (a
        name of :data:`~napari_textsr.training.degradations.RESIZE_KERNELS`),
        or None without ``consistency``.
    regions: with region captions (``regions=``), what was done: ``feather``
        (output pixels), ``labels_sha256`` and one record per region (label,
        caption, LR pixels, bounding box and crop ``[y0, y1, x0, x1]`` in input
        pixels); their attention maps are in ``attention`` as
        ``"region <label>: <name>"`` (zero outside the region's window).
    text_effect: with ``text_effect=True``, float32 (*leading, Y', X'): the
        output minus the output for the empty caption, in output intensity
        units (the output dtype's values; averaged over colour channels);
        ``text_effect_stats`` summarises its magnitude (mean, 99th percentile,
        maximum of the absolute value).
    """

    image: np.ndarray
    attention: dict[str, np.ndarray]
    caption: str
    scale: int
    consistency_map: np.ndarray | None
    consistency_error: float | None
    seconds: float
    model: ModelDescription
    tile: int = 0
    intensity: dict[str, Any] | None = None
    created: str = ""
    attention_scale: int = (
        0  # maps' grid relative to the input's (scale; 1 above MAX_ATTENTION_OUTPUT_PIXELS or for native LR maps)
    )
    caption_encoded: str | None = None  # the part of the caption the encoder used (None: all of it)
    regions: dict[str, Any] | None = None
    text_effect: np.ndarray | None = None
    text_effect_stats: dict[str, float] | None = None
    consistency_kernel: str | None = None

    def provenance(self) -> dict[str, Any]:
        """JSON-ready record of how this result was made (for layer metadata and file headers)."""
        record = {
            "caption": self.caption if self.caption_encoded is None else self.caption_encoded,
            "model": self.model.name,
            "method": self.model.method,
            "scale": self.scale,
            "encoder": self.model.encoder,
            "trained": self.model.trained,
            "model_source": self.model.source,
            "consistency_error": self.consistency_error,
            "tile": self.tile,
            "device": self.model.device,
            "intensity": self.intensity,
            "software": "napari-textsr",
            "software_version": __version__,
            "time": self.created,
            "seconds": round(self.seconds, 3),
            **({"consistency_kernel": self.consistency_kernel} if self.consistency_kernel is not None else {}),
            **({"self_ensemble": True} if self.model.self_ensemble else {}),
            **({"regions": self.regions} if self.regions is not None else {}),
            **({"text_effect": self.text_effect_stats} if self.text_effect_stats is not None else {}),
        }
        if self.caption_encoded is not None and self.caption_encoded != self.caption:
            record["caption_given"] = self.caption  # longer than the encoder's context
        return record


# --------------------------------------------------------------------------- input layout
@dataclass(frozen=True)
class _Layout:
    """How a napari array is read: leading axes, spatial size, colour channels."""

    shape: tuple[int, ...]
    dtype: np.dtype
    leading: tuple[int, ...]
    height: int
    width: int
    rgb: bool
    channels: int  # 1 (grey), 3 or 4

    @property
    def n_slices(self) -> int:
        return int(np.prod(self.leading)) if self.leading else 1

    def output_shape(self, scale: int) -> tuple[int, ...]:
        tail = (self.channels,) if self.rgb else ()
        return self.leading + (self.height * scale, self.width * scale) + tail

    def map_shape(self, scale: int) -> tuple[int, ...]:
        return self.leading + (self.height * scale, self.width * scale)


def _as_array(image: Any) -> Any:
    """numpy arrays and lazy array-likes (dask, zarr) pass through; anything else goes through np.asarray."""
    if isinstance(image, np.ndarray) or (
        hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")
    ):
        return image
    return np.asarray(image)


def _layout(image: Any, rgb: bool | None, min_size: int) -> _Layout:
    shape = tuple(int(n) for n in image.shape)
    dtype = check_dtype(image.dtype)
    if len(shape) < 2:
        raise ValueError(f"expected an image with at least 2 dimensions (Y, X), got shape {shape}")
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    if rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
        raise ValueError(
            f"rgb=True needs a last axis of 3 (RGB) or 4 (RGBA) channels and at least 3 dimensions, got shape {shape}"
        )
    spatial = shape[-3:-1] if rgb else shape[-2:]
    leading = shape[:-3] if rgb else shape[:-2]
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape})")
    if not rgb and len(shape) >= 3 and shape[-1] == 1:
        raise ValueError(
            f"the last axis of shape {shape} has length 1: a grey image with a colour-sample axis? "
            "pass image[..., 0] (grey) instead of reading that axis as X"
        )
    height, width = spatial
    min_size = max(min_size, MIN_SIDE)
    if height < min_size or width < min_size:
        raise ValueError(f"the image is {height}x{width} pixels but this model needs at least {min_size}x{min_size}")
    return _Layout(shape, dtype, leading, height, width, bool(rgb), shape[-1] if rgb else 1)


@dataclass
class _Prepared:
    """An input ready to be upscaled any number of times (statistics computed once)."""

    array: Any
    layout: _Layout
    colour: IntensityMapping
    alpha: IntensityMapping | None


def _cancel_check(cancel: Callable[[], bool] | threading.Event | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a callable returning bool or a threading.Event")


def _drive(
    generator: Generator[UpscaleProgress, None, UpscaleResult],
    progress: Callable[[UpscaleProgress], None] | None,
    is_cancelled: Callable[[], bool],
) -> UpscaleResult:
    def on_event(event: UpscaleProgress) -> None:
        if progress is not None:
            progress(event)
        if is_cancelled():
            raise UpscaleCancelled(f"cancelled after {event.done} of {event.total} tiles")

    return drive(generator, on_event)


# --------------------------------------------------------------------------- the upscaler
class Upscaler:
    """A loaded model and its prompt encoder, ready to upscale many images.

    Build one with :func:`load_model`, or directly from a model and encoder
    (``Upscaler(create_model("pdn", 4, "tiny", prompt_dim=enc.embed_dim), enc)``).

    ``device``: None keeps the model where it is; otherwise a device name
    (``auto`` = CUDA, MPS, CPU). ``half``: autocast to float16 on GPUs (None =
    yes on GPUs, never on the CPU). ``percentiles``: the intensity
    normalisation of non-uint8-RGB data. ``tile_memory``: working-memory budget
    of one tile in bytes for automatic tiling (default: a quarter of free memory,
    at most 1 GiB on the CPU, half of free memory on a GPU). ``self_ensemble``:
    average the model's outputs (and attention maps) over the eight rotations
    and mirror images of each tile, the geometric self-ensemble of EDSR+ (Lim et
    al., CVPR-W 2017, section 4.3): eight times the compute, a few hundredths to
    a tenth of a dB of PSNR (README.md, "Self-ensemble"); tiling stays exact.

    Calls are meant to come from one thread at a time (e.g. one napari worker).
    """

    def __init__(
        self,
        model: TextSRModel,
        encoder: PromptEncoder,
        *,
        device: str | torch.device | None = None,
        half: bool | None = None,
        description: ModelDescription | None = None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        back_projection: BackProjection = BackProjection(),
        tile_memory: int | None = None,
        self_ensemble: bool = False,
    ) -> None:
        if model.config.prompt_dim != encoder.embed_dim:
            raise ValueError(
                f"the model expects prompt embeddings of width {model.config.prompt_dim}, "
                f"but the encoder {encoder.spec} gives {encoder.embed_dim}"
            )
        if device is None:
            first = next(model.parameters(), None)
            self.device = first.device if first is not None else torch.device("cpu")
        else:
            self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.encoder = encoder.to(self.device)
        self.autocast_dtype = autocast_dtype(self.device, half)
        low, high = percentiles
        self.percentiles = (low, high)
        self.back_projection = back_projection
        self.tile_memory = tile_memory
        self.self_ensemble = bool(self_ensemble)
        is_half = self.autocast_dtype is not None
        if description is None:
            description = describe_model(
                model,
                encoder,
                self.device,
                name=f"{model.method} (in memory)",
                trained=False,
                half=is_half,
                source="memory",
            )
        description = dataclasses.replace(
            description, device=str(self.device), half=is_half, self_ensemble=self.self_ensemble
        )
        self.description = description

    @property
    def scale(self) -> int:
        return self.model.scale

    def with_self_ensemble(self, on: bool) -> "Upscaler":
        """This upscaler with ``self_ensemble`` set to ``on``: itself when it already is, else a
        shallow copy sharing the model and encoder (for a cached upscaler, e.g. napari's model store)."""
        if bool(on) == self.self_ensemble:
            return self
        other = copy.copy(self)
        other.self_ensemble = bool(on)
        other.description = dataclasses.replace(self.description, self_ensemble=bool(on))
        return other

    def __repr__(self) -> str:
        d = self.description
        return f"Upscaler({d.name!r}, method={d.method}, scale={d.scale}, device={d.device}, trained={d.trained})"

    # ------------------------------------------------------------------ public calls
    def iter_upscale(
        self,
        image: np.ndarray,
        caption: str = "",
        *,
        rgb: bool | None = None,
        tile: int | None = None,
        consistency: bool | str = False,
        reference: np.ndarray | None = None,
        attention: bool = True,
        percentiles: tuple[float, float] | None = None,
        out: Any | None = None,
        regions: RegionCaptions | None = None,
        text_effect: bool = False,
        attention_grid: str = "output",
    ) -> Generator[UpscaleProgress, None, UpscaleResult]:
        """Upscale ``image``, yielding :class:`UpscaleProgress` after each tile; returns the result.

        image: (*leading, Y, X) grey or (*leading, Y, X, 3|4) RGB/RGBA when
            ``rgb`` (None: last axis 3 or 4 and ndim >= 3); uint8, uint16, other
            integers or float16/32/64; numpy or a lazy array-like (dask, zarr)
            read tile by tile.
        caption: the text prompt ("" = the unconditional prompt).
        tile: core tile side in input pixels; None = from free memory; 0 = no tiling.
        consistency: back-project so that downsampling the output reproduces
            the input; fills ``consistency_map``, ``consistency_error`` and
            ``consistency_kernel``. True or ``"auto"``: with the resize the
            caption names ("binned", "pixelated" -> area; "aliased", "jagged"
            -> plain bicubic; else antialiased bicubic,
            :func:`napari_textsr.consistency.kernel_for_caption`); or a kernel
            name of :data:`napari_textsr.consistency.CONSISTENCY_KERNELS`.
            Region captions share the global caption's kernel. ValueError for
            an unknown name or a caption naming two kernels.
        reference: an image (grey or RGB, any dtype) used as an image prompt
            instead of the caption (PDN's caption-free protocol uses the
            horizontally flipped input).
        attention: also return the model's attention maps (float32 on the
            output grid: 4 bytes per output pixel per map; on the input grid
            above ``MAX_ATTENTION_OUTPUT_PIXELS`` output pixels per slice, with
            a warning).
        attention_grid: ``"output"`` (above) or ``"native"``: each map on the
            grid the model computes it on (``result.attention_scale`` times the
            input's: 1 for PDN and CLIP-SR, whose output-grid maps are bilinear
            upsamplings of these, ``scale`` for TGSR), so viewers can show them
            with a layer scale instead of holding ``scale**2`` times more
            pixels. Maps of a model with several grids come on the finest. With
            ``regions`` or ``text_effect`` the maps are on the output grid.
        percentiles: override the Upscaler's intensity normalisation.
        out: where to write the output instead of a new numpy array: any
            writable array-like of the output's shape and dtype supporting
            ``out[index] = values`` with tuples of ints and slices (a numpy
            memmap, a zarr array, :class:`napari_textsr.imageio.TiledTiffSink`).
            Each output pixel is written once, tile by tile, slice by slice,
            rows of tiles top to bottom; ``result.image`` is then ``out``. With
            ``attention=False`` the peak memory no longer grows with the output.

        regions: :class:`~napari_textsr.regions.RegionCaptions`, a caption per
            labelled region of the input grid; the rest keeps ``caption``. Each
            region is run on its bounding box plus the receptive field through
            the same tiles, and blended with its feathered mask (see
            :mod:`napari_textsr.regions`): inside a region, away from the
            feather band, the pixels equal upscaling the whole image with the
            region's caption (exactly, up to float summation order, for models
            whose ``TilingInfo.exact``; approximately for the others).
        text_effect: also run with the empty caption and return the signed
            difference (``text_effect``, ``text_effect_stats``).

        Float inputs may hold NaN (masked regions): the network sees them as
        the lowest normalised value, and the output is NaN (or the same
        non-finite value) on the nearest-neighbour upsampled mask.

        The result comes as ``StopIteration.value``. Closing the generator stops
        between tiles and nothing is returned. ValueError for bad input, raised
        at the first ``next()`` (this is a generator function, so napari's
        ``thread_worker`` can wrap it directly).
        """
        start = time.perf_counter()
        if attention_grid not in ATTENTION_GRIDS:
            raise ValueError(f"attention_grid must be one of {ATTENTION_GRIDS}, got {attention_grid!r}")
        if regions is not None and not isinstance(regions, RegionCaptions):
            raise TypeError(f"regions must be a RegionCaptions, got {type(regions).__name__}")
        projection = self.back_projection_for(consistency, caption)
        prepared = self._prepare(image, rgb, percentiles)
        prompt, encoded = self._prompt(caption, reference)
        if regions is None and not text_effect:
            result = yield from self._generate(
                prepared, caption, prompt, tile, projection, attention, start, "", out, attention_grid=attention_grid
            )
            result.caption_encoded = encoded
            return result
        if out is not None:
            raise ValueError(
                "out= writes one plain upscale tile by tile; it cannot be combined with regions or text_effect"
            )
        captioned = caption != "" or reference is not None
        result = yield from self._generate_composite(
            prepared, caption, prompt, captioned, regions, text_effect, tile, projection, attention, start
        )
        result.caption_encoded = encoded
        return result

    def upscale(
        self,
        image: np.ndarray,
        caption: str = "",
        *,
        progress: Callable[[UpscaleProgress], None] | None = None,
        cancel: Callable[[], bool] | threading.Event | None = None,
        **kwargs: Any,
    ) -> UpscaleResult:
        """Run :meth:`iter_upscale` to the end (same keyword arguments).

        ``progress(event)`` is called after each tile; when ``cancel()`` is true
        (or the Event is set) the run stops and :class:`UpscaleCancelled` is raised.
        """
        is_cancelled = _cancel_check(cancel)
        if is_cancelled():
            raise UpscaleCancelled("cancelled before start")
        return _drive(self.iter_upscale(image, caption, **kwargs), progress, is_cancelled)

    def upscale_captions(
        self,
        image: np.ndarray,
        captions: Sequence[str],
        *,
        progress: Callable[[UpscaleProgress], None] | None = None,
        cancel: Callable[[], bool] | threading.Event | None = None,
        rgb: bool | None = None,
        tile: int | None = None,
        consistency: bool | str = False,
        attention: bool = True,
        percentiles: tuple[float, float] | None = None,
    ) -> list[UpscaleResult]:
        """One result per caption, for comparing captions on the same image.

        The intensity statistics are computed once and shared, so differences
        between results come from the captions only. Progress restarts at 0 for
        each caption (its message names the caption).
        """
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence of strings, not one string")
        is_cancelled = _cancel_check(cancel)
        prepared = self._prepare(image, rgb, percentiles)
        results = []
        for i, caption in enumerate(captions):
            if is_cancelled():
                raise UpscaleCancelled(f"cancelled before caption {i + 1} of {len(captions)}")
            start = time.perf_counter()
            prompt, encoded = self._prompt(caption, None)
            label = f"caption {i + 1}/{len(captions)}: "
            projection = self.back_projection_for(consistency, caption)
            generator = self._generate(prepared, caption, prompt, tile, projection, attention, start, label)
            results.append(_drive(generator, progress, is_cancelled))
            results[-1].caption_encoded = encoded
        return results

    def upscale_block(
        self,
        block: np.ndarray,
        caption: str,
        intensity: IntensityMapping,
        *,
        alpha: IntensityMapping | None = None,
        rgb: bool | None = None,
        tile: int | None = None,
        consistency: bool | str = False,
    ) -> np.ndarray:
        """Upscale one block cut from a larger image, normalised as that whole image is.

        For drivers that split an image into blocks themselves (e.g.
        :mod:`napari_textsr.distributed`): every block is normalised with the
        whole image's intensity mapping, not one computed from the block, so
        the blocks' cores put together equal :meth:`upscale` of the whole image
        (exactly, up to float summation order, for models whose
        ``TilingInfo.exact``) when each block carries a halo of at least
        ``model.tiling_info().receptive_field`` input pixels where the image
        continues and its origin is a multiple of ``tiling_info().alignment``
        (:func:`napari_textsr.tiling.plan_tiles` cuts blocks so).

        block: (*leading, Y, X) grey or (*leading, Y, X, 3|4) RGB/RGBA when
            ``rgb`` (None: last axis 3 or 4 and ndim >= 3), halo included; any
            dtype :meth:`upscale` takes; a numpy array or array-like.
        caption: the text prompt ("" = the unconditional prompt); a caption
            longer than the encoder's context warns, as in :meth:`upscale`.
        intensity: the whole image's mapping of grey/RGB values, from
            :func:`napari_textsr.intensity.compute_mappings` (its first result).
        alpha: the whole image's alpha mapping (the second result of
            ``compute_mappings``); required for RGBA blocks, refused otherwise.
        tile: the engine's tiling inside the block, as in :meth:`upscale`
            (None: from free memory, 0: in one piece).

        Returns the upscaled block, halo included: (*leading, Y*s, X*s[, C])
        with s = ``self.scale``, in the block's dtype; the caller keeps the
        core (e.g. ``Tile.core_in_padded(s)``). ``consistency``: back-project
        as :meth:`upscale` does (no map or error is returned); the halo must
        then also cover ``back_projection_for(consistency, caption).extra_padding()``
        input pixels (no warning here: :meth:`back_projection_for` gives it
        once). No attention maps (a per-image option of :meth:`upscale`).
        ValueError for a block :meth:`upscale` refuses, or a
        mapping whose dtype is not the block's, or alpha given/missing
        against the block's channels.
        """
        array = _as_array(block)
        layout = _layout(array, rgb, self.model.tiling_info().min_size)
        if not isinstance(intensity, IntensityMapping):
            raise TypeError(f"intensity must be an IntensityMapping, got {type(intensity).__name__}")
        for name, mapping in (("intensity", intensity), ("alpha", alpha)):
            if mapping is not None and np.dtype(mapping.dtype) != layout.dtype:
                raise ValueError(f"the {name} mapping is for {np.dtype(mapping.dtype)}, the block is {layout.dtype}")
        if (layout.channels == 4) != (alpha is not None):
            raise ValueError(
                "an RGBA block needs the whole image's alpha mapping (alpha=)"
                if alpha is None
                else f"alpha= is only for RGBA blocks; this block has {layout.channels} channel(s)"
            )
        prompt, _encoded = self._prompt(caption, None)
        prepared = _Prepared(array, layout, intensity, alpha)
        projection = self.back_projection_for(consistency, caption, warn=False)
        generator = self._generate(prepared, caption, prompt, tile, projection, False, time.perf_counter(), "")
        return _drive(generator, None, lambda: False).image

    # ------------------------------------------------------------------ preparation
    def _prepare(self, image: Any, rgb: bool | None, percentiles: tuple[float, float] | None) -> _Prepared:
        array = _as_array(image)
        layout = _layout(array, rgb, self.model.tiling_info().min_size)
        colour, alpha = compute_mappings(array, layout.leading, layout.rgb, percentiles or self.percentiles)
        return _Prepared(array, layout, colour, alpha)

    def _prompt(self, caption: str, reference: np.ndarray | None) -> tuple[PromptEmbedding, str | None]:
        """(prompt, the caption text actually encoded, or None when all of it was)."""
        # Outside inference_mode: the encoder caches what it computes, and
        # inference tensors in that cache would break later training graphs.
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a string, got {type(caption).__name__}")
        if reference is not None:
            return self.encoder.encode_images(_reference_tensor(reference)).to(self.device), None
        fit = self.encoder.fit_caption(caption)
        if fit.truncated:
            warnings.warn(fit.message(), stacklevel=4)
        return self.encoder.encode([caption]).to(self.device), (fit.encoded if fit.truncated else None)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        try:
            return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
        except RuntimeError:  # a torch without autocast for this device (older MPS builds)
            self.autocast_dtype = None
            self.description = dataclasses.replace(self.description, half=False)
            return nullcontext()

    # ------------------------------------------------------------------ memory
    def _bytes_per_lr_pixel(self, info: TilingInfo, consistency: bool, attention: bool, channels: int) -> float:
        """Working memory of one padded LR pixel of a tile (activations, output, maps)."""
        s2 = self.scale**2
        model_bytes = float(info.bytes_per_lr_pixel or 4 * 64 * (4 + 2 * s2))
        if self.autocast_dtype is not None:
            model_bytes *= 0.6  # fp16 activations; some layers stay in float32
        extra = 4 * 3 * s2 * (3 if self.self_ensemble else 2)  # output copies (+ the ensemble's running sum)
        if consistency:
            extra += 4 * 3 * s2 * 5  # corrected output, upsampled residual, temporaries
        if attention:
            extra += 4 * s2 * _ASSUMED_ATTENTION_MAPS * 2
        return model_bytes + extra

    def _tile_budget(self) -> float:
        if self.tile_memory is not None:
            return float(self.tile_memory)
        free = available_memory_bytes(self.device)
        if self.device.type == "cuda":
            return 0.5 * free
        return min(0.25 * free, DEFAULT_CPU_TILE_MEMORY)

    def _resolve_tile(
        self, tile: int | None, layout: _Layout, padding: int, bytes_per_pixel: float, info: TilingInfo
    ) -> int:
        if tile is None:
            return auto_tile_size(
                layout.height, layout.width, padding, bytes_per_pixel, self._tile_budget(), info.alignment
            )
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 0:
            raise ValueError(
                f"tile must be None (automatic), 0 (no tiling) or a positive number of pixels, got {tile!r}"
            )
        tile = int(tile)
        if tile == 0:
            needed = layout.height * layout.width * bytes_per_pixel
            free = available_memory_bytes(self.device)
            if needed > free:
                raise ValueError(
                    f"upscaling {layout.height}x{layout.width} pixels in one piece needs about "
                    f"{_gb(needed)} but only {_gb(free)} is free on {self.device}; "
                    "use tiling (tile=None picks a tile size from free memory)"
                )
        return tile

    def _check_output_fits(
        self,
        layout: _Layout,
        scale: int,
        n_maps: int,
        map_scale: int,
        consistency: bool,
        in_memory: bool,
        tile_bytes: float,
    ) -> None:
        """ValueError unless output (when held in memory), maps, consistency map and one tile fit.

        Counts ``OUTPUT_MEMORY_FRACTION`` of the memory available now (the input
        is already in it, or read tile by tile). ``tile_bytes``: one tile's
        working memory on the CPU (0 when the model runs on a GPU).
        """
        out_pixels = int(np.prod(layout.map_shape(scale)))
        map_pixels = int(np.prod(layout.map_shape(map_scale)))
        image_bytes = out_pixels * layout.channels * layout.dtype.itemsize if in_memory else 0
        needed = image_bytes + 4 * (map_pixels * n_maps + out_pixels * int(consistency)) + tile_bytes
        free = available_memory_bytes(torch.device("cpu"))
        if needed > OUTPUT_MEMORY_FRACTION * free:
            parts = [f"{layout.output_shape(scale)} {layout.dtype}" if in_memory else "output written to out="]
            if n_maps:
                parts.append(f"{n_maps} float32 attention maps (pass attention=False to skip them)")
            if consistency:
                parts.append("a float32 consistency map")
            if tile_bytes:
                parts.append(f"one tile's working memory {_gb(tile_bytes)}")
            raise ValueError(
                f"the output ({' + '.join(parts)}) needs {_gb(needed)} but only {_gb(free)} of memory is free "
                f"({OUTPUT_MEMORY_FRACTION:.0%} of it may be used)"
            )

    # ------------------------------------------------------------------ the work
    def _predict(self, lr: torch.Tensor, prompt: PromptEmbedding) -> SROutput:
        """The model on one tile, or its geometric self-ensemble (``self_ensemble``).

        The ensemble runs the model on the tile turned by 0, 90, 180 and 270
        degrees, each also mirrored, turns every output (image and attention
        maps) back and averages them. Each run sees the same pixels, so an
        output pixel still depends only on its receptive field.
        """
        if not self.self_ensemble:
            return self.model(lr, prompt)
        image: torch.Tensor | None = None
        maps: dict[str, torch.Tensor] = {}
        for turns in range(4):
            for mirror in (False, True):
                x = torch.rot90(lr, turns, (-2, -1))
                out = self.model(x.flip(-1) if mirror else x, prompt)

                def back(t: torch.Tensor, turns: int = turns, mirror: bool = mirror) -> torch.Tensor:
                    return torch.rot90(t.float().flip(-1) if mirror else t.float(), -turns, (-2, -1))

                image = back(out.image) if image is None else image + back(out.image)
                for name, value in out.attention.items():
                    maps[name] = back(value) + maps[name] if name in maps else back(value)
        assert image is not None
        return SROutput(image=image / 8, attention={name: value / 8 for name, value in maps.items()})

    def back_projection_for(
        self, consistency: bool | str, caption: str = "", *, warn: bool = True
    ) -> BackProjection | None:
        """The back-projection ``consistency`` (as in :meth:`iter_upscale`) asks for with ``caption``, or None.

        Every call of the engine resolves its ``consistency`` here; drivers
        that plan blocks themselves use it for the halo,
        ``model.tiling_info().receptive_field + projection.extra_padding()``
        (:meth:`upscale_block`). Warns (unless ``warn`` is false) when the
        caption calls the image blurred, noisy or JPEG-compressed; ValueError
        for an unknown kernel, TypeError for a ``consistency`` of another type.
        """
        if not isinstance(consistency, (str, bool, np.bool_)):
            raise TypeError(f"consistency must be a bool or a kernel name, got {type(consistency).__name__}")
        if not isinstance(consistency, str):
            if not consistency:
                return None
            consistency = "auto"
        kernel = resolve_kernel(consistency, caption, default=self.back_projection.kernel)
        caveat = consistency_caveat(caption, kernel) if warn else None
        if caveat:
            warnings.warn(caveat, stacklevel=3)
        return dataclasses.replace(self.back_projection, kernel=kernel)

    def _padding(self, projection: BackProjection | None) -> int:
        """LR pixels of context an output pixel depends on (receptive field + back-projection reach)."""
        return self.model.tiling_info().receptive_field + (projection.extra_padding() if projection else 0)

    def _plan(
        self, layout: _Layout, tile: int | None, projection: BackProjection | None, attention: bool
    ) -> tuple[int, list[Tile]]:
        """(tile size, tiles) of one slice of ``layout``."""
        info = self.model.tiling_info()
        padding = self._padding(projection)
        bytes_per_pixel = self._bytes_per_lr_pixel(info, projection is not None, attention, layout.channels)
        tile_size = self._resolve_tile(tile, layout, padding, bytes_per_pixel, info)
        return tile_size, plan_tiles(layout.height, layout.width, tile_size, padding, info.alignment, info.min_size)

    def _generate(
        self,
        prepared: _Prepared,
        caption: str,
        prompt: PromptEmbedding,
        tile: int | None,
        projection: BackProjection | None,
        attention: bool,
        start: float,
        label: str,
        out: Any | None = None,
        attention_grid: str = "output",
    ) -> Generator[UpscaleProgress, None, UpscaleResult]:
        layout, array = prepared.layout, prepared.array
        colour, alpha = prepared.colour, prepared.alpha
        scale = self.scale
        consistency = projection is not None
        tile_size, tiles = self._plan(layout, tile, projection, attention)
        n_slices, n_tiles = layout.n_slices, len(tiles)
        total = n_slices * n_tiles

        bytes_per_pixel = self._bytes_per_lr_pixel(self.model.tiling_info(), consistency, attention, layout.channels)
        tile_bytes = 0.0 if self.device.type == "cuda" else self._tile_bytes(tiles, bytes_per_pixel)
        map_scale: int | None = None if attention_grid == "native" else scale  # native: known at the first tile
        if (
            attention
            and attention_grid == "output"
            and layout.height * layout.width * scale**2 > MAX_ATTENTION_OUTPUT_PIXELS
        ):
            map_scale = 1
            warnings.warn(
                f"attention maps on the input grid ({layout.height}x{layout.width}), not the output's: "
                f"{layout.height * scale}x{layout.width * scale} is over MAX_ATTENTION_OUTPUT_PIXELS "
                f"({MAX_ATTENTION_OUTPUT_PIXELS}); pass attention=False to skip them",
                stacklevel=4,
            )
        n_maps = _ASSUMED_ATTENTION_MAPS if attention else 0
        self._check_output_fits(layout, scale, n_maps, map_scale or scale, consistency, out is None, tile_bytes)
        if out is None:
            output = np.empty(layout.output_shape(scale), dtype=layout.dtype)
        else:
            if tuple(out.shape) != layout.output_shape(scale) or np.dtype(out.dtype) != layout.dtype:
                raise ValueError(
                    f"out must have shape {layout.output_shape(scale)} and dtype {layout.dtype}, "
                    f"got {tuple(out.shape)} {np.dtype(out.dtype)}"
                )
            output = out
        consistency_map = np.empty(layout.map_shape(scale), dtype=np.float32) if consistency else None
        maps: dict[str, np.ndarray] | None = None if attention else {}
        masked = layout.dtype.kind == "f"  # NaN / inf regions are put back after the network
        squared_error, error_count = 0.0, 0

        done = 0
        for slice_index, index in enumerate(np.ndindex(*layout.leading)):
            for tile_index, t in enumerate(tiles):
                raw = np.asarray(array[index + t.padded_slices()])
                lr = self._lr_tensor(raw, layout, colour)
                with torch.inference_mode():
                    with self._autocast():
                        prediction = self._predict(lr, prompt)
                    sr = prediction.image.float()
                    if not layout.rgb:  # grey: the output is the channel mean
                        sr = sr.mean(1, keepdim=True)
                        lr = lr[:, :1]
                    core_hr = t.core_in_padded(scale)
                    if projection is not None:
                        sr, residual = back_project(lr, sr, scale, projection)
                        core_residual = residual[(..., *t.core_in_padded(1))]
                        squared_error += float(core_residual.double().square().sum())
                        error_count += core_residual.numel()
                        disagreement = upsample(residual, scale).abs().mean(1)[0]
                        assert consistency_map is not None  # made above when consistency is on
                        consistency_map[index + t.core_slices(scale)] = disagreement[core_hr].cpu().numpy()
                    core = sr[0][(slice(None), *core_hr)].cpu().numpy()
                    if attention:
                        if map_scale is None:
                            map_scale = self._native_map_scale(prediction.attention, t, layout)
                        maps = self._paste_attention(maps, prediction.attention, t, index, map_scale, layout)
                    if alpha is not None:
                        a = torch.from_numpy(alpha.to_unit(raw[..., 3]))[None, None]
                        alpha_core = upsample(a, scale)[0, 0][core_hr].numpy()
                core_out = t.core_slices(scale)
                values = colour.from_unit(np.moveaxis(core, 0, -1) if layout.rgb else core[0])
                if layout.rgb and alpha is not None:
                    values = np.concatenate([values, alpha.from_unit(alpha_core)[..., None]], axis=-1)
                if masked:
                    values = _restore_non_finite(values, raw[t.core_in_padded(1)], scale, layout.rgb)
                output[index + core_out] = values
                done += 1
                where = f"slice {slice_index + 1}/{n_slices}, " if n_slices > 1 else ""
                yield UpscaleProgress(
                    done=done,
                    total=total,
                    slice_index=slice_index,
                    n_slices=n_slices,
                    message=f"{label}{where}tile {tile_index + 1}/{n_tiles}",
                    tile_index=tile_index,
                    n_tiles=n_tiles,
                )
        error = math.sqrt(squared_error / error_count) if consistency and error_count else None
        return UpscaleResult(
            image=output,
            attention=maps or {},
            caption=caption,
            scale=scale,
            consistency_map=consistency_map,
            consistency_error=error,
            consistency_kernel=projection.kernel if projection is not None else None,
            seconds=time.perf_counter() - start,
            model=self.description,
            tile=tile_size,
            intensity=colour.to_dict(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            attention_scale=map_scale or scale,
        )

    @staticmethod
    def _tile_bytes(tiles: Sequence[Tile], bytes_per_pixel: float) -> float:
        largest = max(t.padded_shape[0] * t.padded_shape[1] for t in tiles)
        return largest * bytes_per_pixel

    def _generate_composite(
        self,
        prepared: _Prepared,
        caption: str,
        prompt: PromptEmbedding,
        captioned: bool,
        regions: RegionCaptions | None,
        text_effect: bool,
        tile: int | None,
        projection: BackProjection | None,
        attention: bool,
        start: float,
    ) -> Generator[UpscaleProgress, None, UpscaleResult]:
        """Global run, one run per region crop, and the empty-caption run, each through :meth:`_generate`.

        Progress counts the tiles of all runs together; the runs share the
        whole image's intensity mapping, so crops see exactly the values the
        whole-image run sees.
        """
        from napari_textsr import regions as region_ops

        layout, scale = prepared.layout, self.scale
        info = self.model.tiling_info()
        plans: list[region_ops.RegionPlan] = []
        if regions is not None:
            if regions.labels.shape != (layout.height, layout.width):
                raise ValueError(
                    f"the region labels are {regions.labels.shape} but the image is "
                    f"{layout.height}x{layout.width} (labels live on the input grid)"
                )
            plans = region_ops.plan_regions(regions, scale, self._padding(projection), info.alignment, info.min_size)
        # (progress label, input, caption, prompt, attention)
        runs: list[tuple[str, _Prepared, str, PromptEmbedding, bool]] = [("", prepared, caption, prompt, attention)]
        for plan in plans:
            crop = region_ops.CropView(prepared.array, plan.crop[:2], plan.crop[2:], layout.rgb)
            cropped = _Prepared(crop, _layout(crop, layout.rgb, info.min_size), prepared.colour, prepared.alpha)
            label = f"region {plan.label}: "
            runs.append((label, cropped, plan.caption, self._prompt(plan.caption, None)[0], attention))
        # Without any caption anywhere, the output *is* the uncaptioned one.
        needs_baseline = text_effect and (captioned or any(p.caption for p in plans))
        if needs_baseline:
            runs.append(("without caption: ", prepared, "", self._prompt("", None)[0], False))
        counts = [p.layout.n_slices * len(self._plan(p.layout, tile, projection, a)[1]) for _, p, _, _, a in runs]
        total, done = sum(counts), 0
        results: list[UpscaleResult] = []
        for (label, part, text, part_prompt, part_attention), count in zip(runs, counts):
            generator = self._generate(part, text, part_prompt, tile, projection, part_attention, start, label)

            def counted(event: UpscaleProgress, before: int = done) -> tuple[UpscaleProgress]:
                return (dataclasses.replace(event, done=before + event.done, total=total),)  # over all runs

            results.append((yield from relay(generator, counted)))
            done += count

        result = results[0]
        image, consistency_map, maps = result.image, result.consistency_map, dict(result.attention)
        region_record = None
        if regions is not None:
            region_results = results[1 : 1 + len(plans)]
            region_ops.blend_into(image, consistency_map, regions, plans, region_results, layout.leading, scale)
            for plan, region_result in zip(plans, region_results):
                for name, values in region_result.attention.items():
                    full = np.zeros(layout.map_shape(scale), dtype=np.float32)
                    full[(..., *plan.core_slices(scale))] = values[(..., *plan.core_in_crop(scale))]
                    maps[f"region {plan.label}: {name}"] = full
            region_record = {
                "feather": regions.feather,
                "labels_sha256": regions.labels_sha256(),
                "regions": [
                    dataclasses.replace(plan, consistency_error=part.consistency_error).to_dict()
                    for plan, part in zip(plans, region_results)
                ],
            }
        effect = stats = None
        if text_effect:
            baseline = results[-1].image if needs_baseline else image
            effect = region_ops.text_effect_map(image, baseline, layout.rgb)
            stats = region_ops.effect_statistics(effect)
        return dataclasses.replace(
            result,
            image=image,
            attention=maps,
            consistency_map=consistency_map,
            regions=region_record,
            text_effect=effect,
            text_effect_stats=stats,
            seconds=time.perf_counter() - start,
        )

    def _lr_tensor(self, raw: np.ndarray, layout: _Layout, colour: IntensityMapping) -> torch.Tensor:
        """A padded tile as read from the array -> float32 (1, 3, h, w) model input on the device."""
        if layout.rgb:
            unit = colour.to_unit(raw[..., :3])
            tensor = torch.from_numpy(unit).permute(2, 0, 1)
        else:
            tensor = torch.from_numpy(colour.to_unit(raw))[None].expand(3, -1, -1)
        return tensor[None].contiguous().to(self.device)

    def _native_map_scale(self, attention: dict[str, torch.Tensor], t: Tile, layout: _Layout) -> int:
        """The finest grid (relative to the input's) of the model's maps for tile ``t``, at most
        ``scale``; the input grid when the output grid would exceed ``MAX_ATTENTION_OUTPUT_PIXELS``."""
        width = t.padded_shape[1]
        factors = [max(1, round(a.shape[-1] / width)) for a in attention.values()]
        factor = min(max(factors, default=self.scale), self.scale)
        if layout.height * layout.width * factor**2 > MAX_ATTENTION_OUTPUT_PIXELS:
            return 1
        return factor

    def _paste_attention(
        self,
        maps: dict[str, np.ndarray] | None,
        attention: dict[str, torch.Tensor],
        t: Tile,
        index: tuple[int, ...],
        scale: int,
        layout: _Layout,
    ) -> dict[str, np.ndarray]:
        """Paste one tile's maps into ``maps`` on the grid ``scale`` times the input's."""
        if maps is None:  # first tile: now the names are known
            maps = {name: np.empty(layout.map_shape(scale), dtype=np.float32) for name in attention}
        height, width = t.padded_shape
        core_hr = t.core_in_padded(scale)
        for name, store in maps.items():
            if name not in attention:
                raise RuntimeError(f"the model returned attention map {name!r} for one tile but not another")
            amap = attention[name][:1].float()
            if amap.ndim == 3:
                amap = amap[:, None]
            # Bilinear resampling is local, so with aligned tiles the stitched
            # maps equal the untiled ones wherever the model's maps are local.
            size = (height * scale, width * scale)
            resampled = (
                amap
                if tuple(amap.shape[-2:]) == size
                else F.interpolate(amap, size=size, mode="bilinear", align_corners=False)
            )
            store[index + t.core_slices(scale)] = resampled[0, 0][core_hr].cpu().numpy()
        return maps


def _restore_non_finite(values: np.ndarray, raw_core: np.ndarray, scale: int, rgb: bool) -> np.ndarray:
    """Put the input's NaN/inf back on the output, on the nearest-neighbour upsampled mask.

    values: output core (h*scale, w*scale[, C]); raw_core: the input core (h, w[, C]).
    """
    bad = ~np.isfinite(raw_core)
    if not bad.any():
        return values
    upsampled = np.repeat(np.repeat(raw_core, scale, axis=0), scale, axis=1)
    mask = np.repeat(np.repeat(bad, scale, axis=0), scale, axis=1)
    values = values.copy()
    values[mask] = upsampled[mask]
    return values


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3g} GB"


def _reference_tensor(reference: Any) -> torch.Tensor:
    """A reference image (Y, X) or (Y, X, 3|4), any supported dtype -> float32 (1, 3, Y, X) in [0, 1]."""
    array = np.asarray(reference)
    check_dtype(array.dtype)
    rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
    if array.ndim != 2 and not rgb:
        raise ValueError(f"reference must be (Y, X) grey or (Y, X, 3|4) RGB(A), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("the reference image is empty")
    colour, _ = compute_mappings(array, (), rgb)
    unit = np.clip(colour.to_unit(array[..., :3] if rgb else array), 0.0, 1.0)
    tensor = torch.from_numpy(unit).permute(2, 0, 1) if rgb else torch.from_numpy(unit)[None].expand(3, -1, -1)
    return tensor[None].contiguous()


# --------------------------------------------------------------------------- loading
def load_model(
    spec: str | os.PathLike | ModelSpec = "default",
    *,
    scale: int | None = None,
    device: str = "auto",
    half: bool | None = None,
    encoder: PromptEncoder | None = None,
    self_ensemble: bool = False,
    jpeg_quality: int | None = None,
) -> Upscaler:
    """Load a model once; the returned :class:`Upscaler` is reused for many images.

    spec (see :class:`napari_textsr.loading.ModelSpec`):
      * a path to a ``.textsr.safetensors`` checkpoint;
      * the name of a bundled model (see :func:`list_models`);
      * ``"default"``: the bundled model for ``scale`` (default x4), as
        :func:`napari_textsr.loading.pick_default` picks it: one named
        ``default*`` first, else by the method table's preference at that
        scale (:func:`napari_textsr.methods.default_preference`: PDN at
        every scale, where it measured best on held-out photographs);
      * ``"random:<method>:<scale>[:<preset>]"``: an untrained model with the
        ``textsr-tiny:none`` encoder (tests, demos of the plumbing, benchmarks).
    scale: the scale wanted (None: the model's own; x4 for ``"default"``); a
      model of another scale is refused (ValueError).
    half: float16 autocast (None: on CUDA only).
    encoder: a prompt encoder to use instead of the checkpoint's own (it must
      be the one the model was trained with; refused otherwise).
    self_ensemble: average over the eight rotations and mirror images of the
      input (EDSR+'s geometric self-ensemble; eight times the compute).
    jpeg_quality: the JPEG quality (1-100) the images to upscale went through
      (e.g. ``jpeg_evidence(file_quality, image).quality``,
      :func:`napari_textsr.imageio.jpeg_evidence`), None when unknown or none.
      With ``spec`` naming the default (``"default"`` or the general
      default's own name), quality <= 60 loads the bundled model trained for
      such inputs at ``scale`` where there is one, as ``textsr upscale`` and
      the dock do (:func:`napari_textsr.loading.default_for_input`); every
      other spec is loaded as named.
    Raises :class:`~napari_textsr.loading.ModelSpecError` (a ValueError) for a
    spec that names no model, FileNotFoundError for a missing checkpoint.
    """
    spec = default_for_input(spec, scale, jpeg_quality)
    loaded = load(spec, scale=scale, device=device, encoder=encoder)
    return Upscaler(
        loaded.model,
        loaded.encoder,
        device=loaded.device,
        half=half,
        description=loaded.description,
        self_ensemble=self_ensemble,
    )
