"""Region captions: a different caption for each part of an image, blended without seams.

A :class:`RegionCaptions` pairs a label image on the *input* grid (0 =
background) with a caption per label. The engine
(:meth:`napari_textsr.inference.Upscaler.iter_upscale` with ``regions=``)
upscales the whole image with the global caption, then, for each labelled
region, runs the model once more with the region's caption on the region's
bounding box grown by the feather reach and padded by the model's receptive
field (:func:`plan_regions`), through the engine's own tile loop. The crop's
core therefore holds exactly the pixels the untiled model would give for the
whole image with that caption (for models whose ``TilingInfo.exact`` is true,
up to float summation order). The outputs are combined per output pixel as
the weighted mean

    out = (sum_k w_k r_k + w_0 g) / (sum_k w_k + w_0),   w_0 = max(1 - sum_k w_k, 0)

where ``g`` is the global output, ``r_k`` region k's output and ``w_k`` its
feathered mask (:func:`feather_weights`): 1 more than ``feather / 2`` output
pixels inside the region, 0 as far outside, a linear ramp of signed distance
in between. So a region's interior holds exactly its caption's pixels, the
outside exactly the global caption's, and the seam band a convex combination
of the two (never beyond either).

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_FEATHER",
    "RegionCaptions",
    "RegionPlan",
    "CropView",
    "feather_weights",
    "plan_regions",
    "blend_regions",
    "blend_into",
    "text_effect_map",
    "effect_statistics",
]

# Width in output pixels of the band over which a region's weight ramps from 0
# to 1 (centred on the mask border): "a few output pixels", 2 input pixels at x4.
DEFAULT_FEATHER = 8.0


@dataclass(frozen=True)
class RegionCaptions:
    """Captions for labelled regions of an image.

    labels: integer array (Y, X) on the input image's spatial grid (the same
        labels apply to every slice of a stack); 0 is background.
    captions: label value -> caption. Pixels whose label has no caption (and
        background) get the global caption. A caption for a label that does
        not occur in ``labels`` is skipped with a warning.
    feather: width in output pixels of the blending band at each region's
        border (0 = hard edge). Raises ValueError for a non-2-D or non-integer
        ``labels``, label 0 or a negative label in ``captions``, a non-string
        caption or a negative ``feather``.
    """

    labels: np.ndarray
    captions: dict[int, str]
    feather: float = DEFAULT_FEATHER

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 2:
            raise ValueError(f"region labels must be a 2-D (Y, X) label image, got shape {labels.shape}")
        if labels.dtype.kind not in "uib":
            raise ValueError(f"region labels must be integers, got {labels.dtype}")
        captions = {}
        for key, caption in dict(self.captions).items():
            label = int(key)
            if label <= 0:
                raise ValueError(f"region label {key!r}: labels are positive (0 is background)")
            if not isinstance(caption, str):
                raise ValueError(f"the caption of region {label} must be a string, got {type(caption).__name__}")
            captions[label] = caption
        if not math.isfinite(self.feather) or self.feather < 0:
            raise ValueError(f"feather must be >= 0 output pixels, got {self.feather}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "captions", captions)

    @classmethod
    def from_masks(
        cls, masks: Sequence[np.ndarray], captions: Sequence[str], feather: float = DEFAULT_FEATHER
    ) -> "RegionCaptions":
        """One boolean (Y, X) mask per caption; mask i becomes label i + 1 (later masks win where they overlap)."""
        if len(masks) != len(captions):
            raise ValueError(f"{len(masks)} masks but {len(captions)} captions")
        if not masks:
            raise ValueError("no masks given")
        shape = np.asarray(masks[0]).shape
        labels = np.zeros(shape, dtype=np.int32)
        for i, mask in enumerate(masks):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != shape:
                raise ValueError(f"mask {i} has shape {mask.shape}, mask 0 has {shape}")
            labels[mask] = i + 1
        return cls(labels, {i + 1: c for i, c in enumerate(captions)}, feather)

    @classmethod
    def from_polygons(
        cls,
        shape: tuple[int, int],
        polygons: Sequence[np.ndarray],
        captions: Sequence[str],
        feather: float = DEFAULT_FEATHER,
    ) -> "RegionCaptions":
        """Polygons of (N, 2) (row, column) vertices in input pixels (napari's order, pixel centres at integers).

        A pixel belongs to a polygon when its centre lies inside it
        (``skimage.draw.polygon2mask``); polygon i becomes label i + 1.
        """
        from skimage.draw import polygon2mask

        masks = []
        for i, vertices in enumerate(polygons):
            vertices = np.asarray(vertices, dtype=float)
            if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
                raise ValueError(f"polygon {i} must be (N >= 3, 2) (row, column) vertices, got shape {vertices.shape}")
            masks.append(polygon2mask(tuple(int(n) for n in shape), vertices))
        return cls.from_masks(masks, captions, feather)

    def present(self) -> list[tuple[int, str]]:
        """(label, caption) of every captioned label that occurs, in label order; warns about the others."""
        occurring = set(np.unique(self.labels).tolist())
        missing = sorted(label for label in self.captions if label not in occurring)
        if missing:
            warnings.warn(f"region label(s) {missing} have captions but no pixels; skipped", stacklevel=3)
        return [(label, self.captions[label]) for label in sorted(self.captions) if label in occurring]

    def labels_sha256(self) -> str:
        """SHA-256 of the label image (dtype, shape and bytes), to identify it in provenance."""
        digest = hashlib.sha256(f"{self.labels.dtype.str}{self.labels.shape}".encode())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class RegionPlan:
    """Where one region is computed, in input pixels of the slice (half-open ``[y0, y1, x0, x1]``).

    bbox: the region's bounding box; core: bbox grown by the feather reach
    (where the region's weight can be non-zero), clipped to the image; crop:
    core padded by the receptive field (and back-projection reach), origin
    aligned, clipped: what the model reads.
    """

    label: int
    caption: str
    pixels: int
    bbox: tuple[int, int, int, int]
    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    consistency_error: float | None = None

    def core_in_crop(self, scale: int = 1) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.core
        cy, cx = self.crop[0], self.crop[2]
        return slice((y0 - cy) * scale, (y1 - cy) * scale), slice((x0 - cx) * scale, (x1 - cx) * scale)

    def core_slices(self, scale: int = 1) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.core
        return slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale)

    def to_dict(self) -> dict[str, Any]:
        values = {
            "label": self.label,
            "caption": self.caption,
            "pixels": self.pixels,
            "bbox": list(self.bbox),
            "crop": list(self.crop),
        }
        if self.consistency_error is not None:
            values["consistency_error"] = self.consistency_error
        return values


def plan_regions(
    regions: RegionCaptions,
    scale: int,
    padding: int,
    alignment: int = 1,
    min_size: int = 1,
) -> list[RegionPlan]:
    """The crop of each captioned region (see :class:`RegionPlan`).

    padding: LR pixels of context the model (plus any back-projection) needs
    on each side for its core output to equal the whole-image output; rounded
    up to ``alignment``, and crop origins are multiples of ``alignment``, as in
    :func:`napari_textsr.tiling.plan_tiles`. Crops are grown to ``min_size``.
    """
    from napari_textsr.tiling import round_up

    height, width = regions.labels.shape
    alignment = max(int(alignment), 1)
    padding = round_up(max(int(padding), 0), alignment)
    # Weights reach feather / 2 + 1/2 output pixels beyond the mask.
    reach = math.ceil((regions.feather / 2 + 1) / scale)
    plans = []
    for label, caption in regions.present():
        mask = regions.labels == label
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        core = (max(y0 - reach, 0), min(y1 + reach, height), max(x0 - reach, 0), min(x1 + reach, width))
        cy0, cy1 = _crop_span(core[0], core[1], height, padding, alignment, min_size)
        cx0, cx1 = _crop_span(core[2], core[3], width, padding, alignment, min_size)
        pixels = int(np.count_nonzero(mask))
        plans.append(RegionPlan(label, caption, pixels, (y0, y1, x0, x1), core, (cy0, cy1, cx0, cx1)))
    return plans


def _crop_span(start: int, end: int, size: int, padding: int, alignment: int, min_size: int) -> tuple[int, int]:
    p0 = max(start - padding, 0) // alignment * alignment
    p1 = min(end + padding, size)
    if p1 - p0 < min_size:
        p1 = min(max(p1, p0 + min_size), size)
        p0 = max(min(p0, p1 - min_size), 0) // alignment * alignment
    return p0, p1


class CropView:
    """A lazy spatial crop of a napari-style array (numpy, dask, zarr): only what is indexed is read.

    array: (*leading, Y, X) or (*leading, Y, X, C) when ``rgb``; ``rows``/``cols``
    are the crop's (start, stop) in Y and X. Indexing takes what the engine
    passes: integers for leading axes, then two slices with step 1.
    """

    def __init__(self, array: Any, rows: tuple[int, int], cols: tuple[int, int], rgb: bool) -> None:
        self.array, self.rows, self.cols, self.rgb = array, rows, cols, rgb
        self.dtype = array.dtype
        shape = tuple(int(n) for n in array.shape)
        spatial = len(shape) - (3 if rgb else 2)
        self._spatial = spatial
        crop = (rows[1] - rows[0], cols[1] - cols[0])
        self.shape = shape[:spatial] + crop + shape[spatial + 2 :]

    def __getitem__(self, key: tuple) -> Any:
        key = tuple(key) if isinstance(key, tuple) else (key,)
        lead, rest = key[: self._spatial], key[self._spatial :]
        if len(rest) < 2:
            raise IndexError("a crop is indexed with the leading indices and two spatial slices")
        shifted = []
        for s, (start, stop) in zip(rest[:2], (self.rows, self.cols)):
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise IndexError("spatial indices of a crop must be slices with step 1")
            a, b, _ = s.indices(stop - start)
            shifted.append(slice(start + a, start + b))
        return self.array[lead + tuple(shifted) + rest[2:]]


def feather_weights(mask: np.ndarray, scale: int, feather: float) -> np.ndarray:
    """Blending weight on the output grid of a region given on the input grid.

    mask: bool (h, w) input-grid window holding the whole region. Beyond the
    window is *not* counted as outside, which is right at the image edge; the
    core window of :func:`plan_regions` leaves the feather reach clear of the
    region everywhere else. Returns float32
    (h * scale, w * scale): with ``d`` the signed Euclidean distance in output
    pixels from the nearest-neighbour upsampled mask's border (positive
    inside, measured between pixel centres minus 1/2),
    ``w = clip(1/2 + d / feather, 0, 1)``; ``feather = 0`` gives the mask itself.
    """
    from scipy.ndimage import distance_transform_edt

    inside = np.repeat(np.repeat(np.asarray(mask, dtype=bool), scale, axis=0), scale, axis=1)
    if feather <= 0 or inside.all() or not inside.any():
        return inside.astype(np.float32)
    distance_in = distance_transform_edt(inside)  # inside pixels: distance to the nearest outside one
    distance_out = distance_transform_edt(~inside)
    signed = np.where(inside, distance_in - 0.5, 0.5 - distance_out)
    return np.clip(0.5 + signed / feather, 0.0, 1.0).astype(np.float32)


def region_window_mask(labels: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """The region's mask over its core window (input grid), for :func:`feather_weights`."""
    y0, y1, x0, x1 = plan.core
    return labels[y0:y1, x0:x1] == plan.label


def blend_regions(
    base: np.ndarray,
    parts: Sequence[tuple[tuple[slice, slice], np.ndarray, np.ndarray]],
    dtype: npt.DTypeLike,
) -> np.ndarray:
    """Weighted mean of a base output and region outputs over one window (formula in the module doc).

    base: (H, W[, C]) the global output on the window; parts: (where, values,
    weight): ``where`` the region's core within the window, ``values`` the
    region's output there ((h, w[, C]), like ``base``), ``weight`` float32
    (h, w). Returns the window in ``dtype``: integers rounded and clipped to
    the dtype's range. Where one weight is 1 and the others 0 the result is
    that input exactly.
    """
    colour = base.ndim == 3
    total = np.zeros(base.shape[:2], dtype=np.float64)
    numerator = np.zeros(base.shape, dtype=np.float64)
    for where, values, weight in parts:
        w = weight.astype(np.float64)
        total[where] += w
        numerator[where] += (w[..., None] if colour else w) * values
    w0 = np.maximum(1.0 - total, 0.0)
    numerator += (w0[..., None] if colour else w0) * base
    denominator = total + w0
    blended = numerator / (denominator[..., None] if colour else denominator)
    target = np.dtype(dtype)
    if target.kind in "ui":
        info = np.iinfo(target)
        return np.clip(np.rint(blended), info.min, info.max).astype(target)
    return blended.astype(target)


def blend_into(
    image: Any,
    consistency_map: np.ndarray | None,
    regions: RegionCaptions,
    plans: Sequence[RegionPlan],
    results: Sequence[Any],
    leading: tuple[int, ...],
    scale: int,
) -> None:
    """Blend each region's output (``results[k].image`` on ``plans[k].crop``) into ``image`` in place.

    image: the global output (*leading, Y', X'[, C]), numpy or any array
    written by slice assignment; only the union of the regions' core windows is
    read and rewritten, slice by slice. ``consistency_map`` (float32, no
    channel axis) is blended the same way when given.
    """
    if not plans:
        return
    weights = [feather_weights(region_window_mask(regions.labels, plan), scale, regions.feather) for plan in plans]
    y0, x0 = min(p.core[0] for p in plans), min(p.core[2] for p in plans)
    y1, x1 = max(p.core[1] for p in plans), max(p.core[3] for p in plans)
    window = (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
    places = [
        (
            slice((p.core[0] - y0) * scale, (p.core[1] - y0) * scale),
            slice((p.core[2] - x0) * scale, (p.core[3] - x0) * scale),
        )
        for p in plans
    ]
    for index in np.ndindex(*leading):
        base = np.asarray(image[index + window])
        parts = [
            (where, np.asarray(r.image[index + p.core_in_crop(scale)]), w)
            for where, p, r, w in zip(places, plans, results, weights)
        ]
        image[index + window] = blend_regions(base, parts, image.dtype)
        if consistency_map is not None:
            parts = [
                (where, r.consistency_map[index + p.core_in_crop(scale)], w)
                for where, p, r, w in zip(places, plans, results, weights)
            ]
            consistency_map[index + window] = blend_regions(consistency_map[index + window], parts, np.float32)


def text_effect_map(captioned: np.ndarray, uncaptioned: np.ndarray, rgb: bool) -> np.ndarray:
    """captioned - uncaptioned as float32 in output intensity units; RGB(A): the mean over R, G, B.

    Both are outputs of the same shape and dtype ((*leading, Y, X) or
    (*leading, Y, X, 3|4) when ``rgb``); the result has no channel axis.
    """
    if captioned.shape != uncaptioned.shape:
        raise ValueError(f"outputs differ in shape: {captioned.shape} vs {uncaptioned.shape}")
    if rgb:
        a = np.asarray(captioned[..., :3], dtype=np.float64)
        b = np.asarray(uncaptioned[..., :3], dtype=np.float64)
        return (a - b).mean(axis=-1).astype(np.float32)
    return (np.asarray(captioned, dtype=np.float64) - np.asarray(uncaptioned, dtype=np.float64)).astype(np.float32)


def effect_statistics(effect: np.ndarray) -> dict[str, float]:
    """Summary of a text-effect map: mean, 99th percentile and maximum of |effect| (its units)."""
    magnitude = np.abs(np.asarray(effect, dtype=np.float64))
    magnitude = magnitude[np.isfinite(magnitude)]
    if magnitude.size == 0:
        return {"mean_abs": 0.0, "p99_abs": 0.0, "max_abs": 0.0}
    return {
        "mean_abs": float(magnitude.mean()),
        "p99_abs": float(np.percentile(magnitude, 99)),
        "max_abs": float(magnitude.max()),
    }
