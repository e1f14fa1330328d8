"""Intensity mapping between napari arrays and the models' [0, 1] float inputs.

Models see float32 values nominally in [0, 1]. uint8 RGB(A) images are mapped
with the fixed ``/ 255`` convention of photographs. Everything else (grey
uint8, uint16 and other integers, floats: microscopy data) is normalised by
percentiles computed once over the whole array, so every slice of a stack and
every tile of an image gets the same mapping, and the mapping is inverted on
the output. When the two percentiles coincide (a sparse image: a few bright
beads on zero) the mapping falls back to the minimum and maximum, so the
beads enter the network at 1, not at thousands. Values beyond the percentiles
are *not* clipped on the way in (the round trip keeps the full range).

The output is clipped only to what its dtype can hold (integers: the dtype's
limits, strictly inside them so float64 rounding never wraps), not to the
input's own range: a bright peak smaller than one input pixel may come back
brighter than the brightest input pixel. Float outputs get a documented
headroom instead, ``FLOAT_HEADROOM`` times the input's range above its maximum
(and below its minimum; non-negative inputs stay non-negative), so a float
image and the same image as uint16 give the same output to rounding.

Wide integers (32/64-bit) are offset in float64 before they are narrowed to
the network's float32 (4e9 + [0, 100) keeps all 100 levels).

Statistics are computed chunk by chunk (exact histograms for 8/16-bit
integers, a deterministic subsample of at most ``MAX_SAMPLES`` values for the
rest), so even a huge stack never gets a float copy in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

__all__ = [
    "DEFAULT_PERCENTILES",
    "FLOAT_HEADROOM",
    "output_limits",
    "IntensityMapping",
    "check_dtype",
    "compute_mappings",
]

DEFAULT_PERCENTILES = (1.0, 99.8)  # CSBDeep's convention for fluorescence images
MAX_SAMPLES = 1 << 22  # values kept for percentiles of float / wide-integer data
CHUNK_ELEMENTS = 1 << 22  # values read at a time while computing statistics
# Float outputs may exceed the input's range by this fraction of it (above the
# maximum; below the minimum unless the input is non-negative).
FLOAT_HEADROOM = 1.0


def check_dtype(dtype: Any) -> np.dtype:
    """The array's dtype if the engine supports it, else a ValueError saying which do."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" or dtype.kind == "f":
        return dtype
    raise ValueError(
        f"unsupported image dtype {dtype} ({_KIND_NAMES.get(dtype.kind, 'unknown kind')}); "
        "use uint8, uint16 or another integer type, or float16/32/64"
    )


_KIND_NAMES = {
    "b": "boolean",
    "c": "complex",
    "O": "Python objects",
    "U": "strings",
    "S": "bytes",
    "V": "structured",
    "M": "datetimes",
    "m": "timedeltas",
}


@dataclass(frozen=True)
class IntensityMapping:
    """An affine map between input values and model units, and its inverse.

    ``unit = (value - low) / (high - low)``; the inverse is clipped to
    ``[clip_min, clip_max]`` (input units: the dtype's limits for integers,
    the input range plus ``FLOAT_HEADROOM`` for floats) and cast to ``dtype``.
    ``mode`` is ``fixed`` (uint8 RGB, /255), ``percentile``, ``minmax`` (the
    percentiles coincided) or ``identity`` (RGBA alpha, upscaled in its own
    units and clipped to the input's alpha range).
    """

    dtype: np.dtype
    low: float
    high: float
    clip_min: float
    clip_max: float
    mode: str

    @property
    def span(self) -> float:
        span = self.high - self.low
        # A constant image has no contrast to normalise; any positive span
        # inverts exactly and keeps its value.
        return span if span > 0 else 1.0

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Input values (any shape, this mapping's dtype) -> float32 model units.

        Non-finite float values (NaN, inf: masked regions) become 0 (= ``low``).
        """
        if self.mode != "identity" and (
            self.dtype.itemsize >= 4 and self.dtype.kind in "ui" or self.dtype == np.float64
        ):
            # Offset in float64 first: float32 holds 24 bits, 4e9 + [0, 100) needs 32.
            unit = ((values.astype(np.float64) - self.low) * (1.0 / self.span)).astype(np.float32)
        else:
            unit = values.astype(np.float32, copy=True)
            if self.mode != "identity":
                unit -= np.float32(self.low)
                unit *= np.float32(1.0 / self.span)
        if self.dtype.kind == "f":
            np.nan_to_num(unit, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return unit

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Float model units (any shape) -> values of ``dtype`` (a new array).

        Computed in float64 for 32/64-bit integers and float64 so no precision
        is lost there; in float32 otherwise.
        """
        work = (
            np.float64
            if self.dtype.itemsize >= 4 and self.dtype.kind in "ui" or self.dtype == np.float64
            else np.float32
        )
        values = unit.astype(work, copy=True)
        if self.mode != "identity":
            np.multiply(values, work(self.span), out=values)
            np.add(values, work(self.low), out=values)
        np.clip(values, self.clip_min, self.clip_max, out=values)
        if self.dtype.kind in "ui":
            np.rint(values, out=values)
        return values.astype(self.dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "dtype": str(self.dtype),
            "low": self.low,
            "high": self.high,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
        }


def compute_mappings(
    array: Any,
    leading_shape: tuple[int, ...],
    rgb: bool,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> tuple[IntensityMapping, IntensityMapping | None]:
    """Colour and alpha mappings for a napari-style array.

    array: (*leading, Y, X) or (*leading, Y, X, 3|4) with ``rgb``; any
    array-like supporting numpy indexing (numpy, dask, zarr), read in chunks.
    Returns (mapping for the grey/RGB values, mapping for alpha or None).
    Raises ValueError when no value is finite.
    """
    dtype = check_dtype(array.dtype)
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    channels = array.shape[-1] if rgb else 0
    alpha = None
    if rgb and channels == 4:
        a_min, a_max = _min_max(_chunks(array, leading_shape, rgb, channel=3), dtype)
        alpha = IntensityMapping(dtype, 0.0, 1.0, a_min, a_max, "identity")
    if rgb and dtype == np.uint8:
        return IntensityMapping(dtype, 0.0, 255.0, 0.0, 255.0, "fixed"), alpha
    colour_size = int(np.prod(array.shape[:-1])) * 3 if rgb else int(np.prod(array.shape))
    stats = _percentile_stats(_chunks(array, leading_shape, rgb, channel=None), dtype, (low_p, high_p), colour_size)
    low, high, v_min, v_max = stats
    mode = "percentile"
    if not high > low:  # sparse data: both percentiles on the background
        low, high, mode = v_min, v_max, "minmax"
    clip_min, clip_max = output_limits(dtype, v_min, v_max)
    return IntensityMapping(dtype, low, high, clip_min, clip_max, mode), alpha


def output_limits(dtype: np.dtype, v_min: float, v_max: float) -> tuple[float, float]:
    """The range an output of ``dtype`` is clipped to, for an input covering [v_min, v_max].

    Integers: the dtype's limits, as the largest float64 values that convert
    back without wrapping (int64's 2**63 - 1 is not a float64; 2**63 - 1024 is).
    Floats: [v_min - h, v_max + h] with h = FLOAT_HEADROOM * (v_max - v_min)
    (at least FLOAT_HEADROOM * |v_max| for a constant image), the lower end at
    0 for a non-negative input.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
        if int(high) > info.max:
            high = float(np.nextafter(high, 0.0))
        if int(low) < info.min:  # pragma: no cover (min of signed types is a power of two)
            low = float(np.nextafter(low, 0.0))
        return low, high
    headroom = FLOAT_HEADROOM * ((v_max - v_min) or abs(v_max) or 1.0)
    top = float(np.finfo(dtype).max)
    return (0.0 if v_min >= 0 else max(v_min - headroom, -top)), min(v_max + headroom, top)


def _chunks(array: Any, leading_shape: tuple[int, ...], rgb: bool, channel: int | None) -> Iterator[np.ndarray]:
    """Blocks of rows of each slice (colour channels, or one channel), as numpy arrays."""
    height = array.shape[len(leading_shape)]
    row_elements = max(int(np.prod(array.shape[len(leading_shape) + 1 :])), 1)
    rows = max(CHUNK_ELEMENTS // row_elements, 1)
    for index in np.ndindex(*leading_shape):
        for y0 in range(0, height, rows):
            block = np.asarray(array[index + (slice(y0, y0 + rows),)])
            if rgb:
                block = block[..., 3] if channel == 3 else block[..., :3]
            yield block


def _min_max(chunks: Iterator[np.ndarray], dtype: np.dtype) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for block in chunks:
        if dtype.kind == "f":
            block = block[np.isfinite(block)]
        if block.size:
            lo = min(lo, float(block.min()))
            hi = max(hi, float(block.max()))
    if lo > hi:
        raise ValueError("the image has no finite values")
    return lo, hi


def _percentile_stats(
    chunks: Iterator[np.ndarray], dtype: np.dtype, percentiles: tuple[float, float], total_size: int
) -> tuple[float, float, float, float]:
    """(low percentile, high percentile, min, max) over all finite values."""
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        # Exact, like np.percentile(..., method="linear"), from a histogram.
        offset = int(np.iinfo(dtype).min)
        histogram = np.zeros(1 << (8 * dtype.itemsize), dtype=np.int64)
        for block in chunks:
            histogram += np.bincount((block.ravel().astype(np.int32) - offset), minlength=histogram.size)
        cumulative = np.cumsum(histogram)
        total = int(cumulative[-1])
        if total == 0:
            raise ValueError("the image is empty")

        def value_at(rank: int) -> int:  # value of the rank-th smallest element (0-based)
            return int(np.searchsorted(cumulative, rank, side="right")) + offset

        def percentile(p: float) -> float:
            position = p / 100.0 * (total - 1)
            below = int(np.floor(position))
            a, b = value_at(below), value_at(min(below + 1, total - 1))
            return a + (b - a) * (position - below)

        nonzero = np.flatnonzero(histogram)
        return (
            percentile(percentiles[0]),
            percentile(percentiles[1]),
            float(nonzero[0] + offset),
            float(nonzero[-1] + offset),
        )

    # Deterministic subsample: every step-th finite value of every block,
    # with exact minimum and maximum; memory stays at MAX_SAMPLES values.
    step = max(total_size // MAX_SAMPLES, 1)
    samples: list[np.ndarray] = []
    v_min, v_max = np.inf, -np.inf
    for block in chunks:
        flat = block.ravel()
        if dtype.kind == "f":
            flat = flat[np.isfinite(flat)]
        if not flat.size:
            continue
        v_min = min(v_min, float(flat.min()))
        v_max = max(v_max, float(flat.max()))
        samples.append(flat[::step].astype(np.float64))
    if not samples:
        raise ValueError("the image has no finite values")
    low, high = np.percentile(np.concatenate(samples), percentiles)
    return float(low), float(high), v_min, v_max
