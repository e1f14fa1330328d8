"""OME-Zarr (OME-NGFF) images: read, create and write them, keeping physical coordinates.

The project's one place for OME-Zarr. It follows the OME-NGFF specification
(https://ngff.openmicroscopy.org):

* **written**: NGFF **0.5** (zarr format 3, metadata under ``attributes["ome"]``,
  arrays carry ``dimension_names``), because zarr-python >= 3 is what the
  ``distributed`` extra installs;
* **read**: NGFF 0.5 and 0.4 (zarr format 2, ``multiscales`` at the top of
  ``.zattrs``), so existing data written by older tools (ome-zarr-py, bioformats2raw,
  Fiji's N5/Zarr writers) opens too. Older versions (0.1-0.3, axes as plain
  strings) are refused with a ValueError.

Coordinates (NGFF ``coordinateTransformations``): the physical position of
array index ``i`` along an axis is ``translation + scale * i``, i.e. the
transform maps *pixel centres*; a pixel covers ``scale`` around its centre.
Resampling an axis by a factor (``scale_out = scale_in * d``: ``d = 1/f`` for
an ``f``-times upscaling, ``d = 2`` for a pyramid level) keeps the *outer
edge* of pixel 0 in place, because super-resolution (pixel shuffle) and block
averaging both split/merge whole input pixels starting at index 0:

    t_in - s_in / 2 = t_out - s_out / 2   =>   t_out = t_in + (s_out - s_in) / 2

(:func:`resample_transform`). E.g. s_in = 0.5 um, t_in = 10 um, x4: s_out =
0.125 um, t_out = 9.8125 um; both pixel 0s start at 9.75 um.

Pyramids (:func:`fill_pyramid`): level k halves level k-1 along the *last two
space axes* (y, x) by 2 x 2 means (rounded for integer dtypes, odd edges
trimmed); z, channel and time axes are never downsampled (microscopy z is
usually much coarser than y and x already).

Provenance: free-form JSON under ``attributes["textsr"]`` of the group (next
to, not inside, ``"ome"``, as the specification allows for custom keys).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "NGFF_VERSION",
    "READ_VERSIONS",
    "Axis",
    "Level",
    "OmeZarrImage",
    "default_axes",
    "resample_transform",
    "upscaled_transform",
    "read_ome_zarr",
    "create_ome_zarr",
    "write_ome_zarr",
    "fill_pyramid",
    "require_zarr",
    "update_attrs",
]

NGFF_VERSION = "0.5"  # what create_ome_zarr writes
READ_VERSIONS = ("0.4", "0.5")
AXIS_TYPES = ("space", "time", "channel")  # the types the specification names (custom ones are allowed)
DOWNSCALE = 2  # pyramid factor per level along y and x
PROVENANCE_KEY = "textsr"


def require_zarr():
    """Import zarr (>= 3), or raise ImportError saying how to install it."""
    try:
        import zarr
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OME-Zarr support needs zarr >= 3: pip install 'napari-textsr[distributed]' (or: pip install zarr)"
        ) from error
    if int(zarr.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise ImportError(f"OME-Zarr support needs zarr >= 3, found {zarr.__version__}: pip install -U zarr")
    return zarr


# --------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class Axis:
    """One NGFF axis: ``name`` (e.g. ``"y"``), ``type`` (``space``, ``time``, ``channel``, a custom
    string or None) and ``unit`` (e.g. ``"micrometer"``, ``"second"``; None = unknown)."""

    name: str
    type: str | None = None
    unit: str | None = None

    def to_dict(self) -> dict[str, str]:
        values = {"name": self.name}
        if self.type is not None:
            values["type"] = self.type
        if self.unit is not None:
            values["unit"] = self.unit
        return values

    @classmethod
    def from_dict(cls, values: Any) -> "Axis":
        if not isinstance(values, dict) or "name" not in values:
            raise ValueError(f"an NGFF axis must be an object with a 'name', got {values!r}")
        return cls(str(values["name"]), values.get("type"), values.get("unit"))


@dataclass(frozen=True)
class Level:
    """One resolution level: the array's path in the group and its ``scale``/``translation``
    (one float per axis, physical units per pixel and physical position of pixel 0's centre)."""

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(v) for v in self.scale]}]
        if any(v != 0 for v in self.translation):
            transforms.append({"type": "translation", "translation": [float(v) for v in self.translation]})
        return {"path": self.path, "coordinateTransformations": transforms}


@dataclass
class OmeZarrImage:
    """An opened OME-Zarr image (its first multiscale).

    ``arrays[k]`` is the zarr array of ``levels[k]`` (level 0 = full resolution),
    shape (*axes) in ``axes`` order; ``attrs`` are the group's attributes other
    than the NGFF ones (e.g. ``attrs["textsr"]``, the provenance); ``version`` the
    NGFF version read or written.
    """

    path: Path
    axes: tuple[Axis, ...]
    levels: tuple[Level, ...]
    arrays: list[Any]
    version: str = NGFF_VERSION
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        """Level 0 (a zarr array, read lazily)."""
        return self.arrays[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def scale(self) -> tuple[float, ...]:
        return self.levels[0].scale

    @property
    def translation(self) -> tuple[float, ...]:
        return self.levels[0].translation

    @property
    def axis_names(self) -> str:
        """The axes as one string, e.g. ``"zyx"`` (names longer than a letter are joined as they are)."""
        return "".join(a.name for a in self.axes)

    def spatial_axes(self) -> tuple[int, int]:
        """Indices of the two axes an SR model upscales: the last two of type ``space``
        (or, where no types are given, the axes named ``y`` and ``x``)."""
        return _yx_indices(self.axes)

    def provenance(self) -> dict[str, Any] | None:
        return self.attrs.get(PROVENANCE_KEY)


def default_axes(ndim: int, unit: str | None = None) -> tuple[Axis, ...]:
    """Axes for an array without metadata: (y, x), (z, y, x), (c, z, y, x), (t, c, z, y, x).

    ``unit`` (e.g. ``"micrometer"``) is given to the space axes.
    """
    names = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}.get(ndim)
    if names is None:
        raise ValueError(f"OME-Zarr images have 2 to 5 axes, got {ndim}")
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return tuple(Axis(n, types[n], unit if types[n] == "space" else None) for n in names)


def _yx_indices(axes: Sequence[Axis]) -> tuple[int, int]:
    space = [i for i, a in enumerate(axes) if a.type == "space"]
    if len(space) < 2:
        named = {a.name: i for i, a in enumerate(axes)}
        if "y" in named and "x" in named:
            return named["y"], named["x"]
        raise ValueError(f"need two space axes (y, x) to upscale, axes are {[a.name for a in axes]}")
    return space[-2], space[-1]


def resample_transform(
    scale: Sequence[float], translation: Sequence[float], factors: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translation after resampling axis ``i`` to ``factors[i]`` times its pixel size.

    ``factors[i] = 1/f`` for an f-times upscaling, 2 for a 2x-downsampled pyramid
    level, 1 to keep an axis. ``s_out = s_in * d`` and ``t_out = t_in + (s_out - s_in) / 2``,
    so the outer edge of pixel 0 stays where it was (see the module docstring).
    """
    if not len(scale) == len(translation) == len(factors):
        raise ValueError(f"scale {scale}, translation {translation} and factors {factors} differ in length")
    new_scale = tuple(float(s) * float(d) for s, d in zip(scale, factors))
    new_translation = tuple(float(t) + (ns - float(s)) / 2 for t, s, ns in zip(translation, scale, new_scale))
    return new_scale, new_translation


def upscaled_transform(
    axes: Sequence[Axis], scale: Sequence[float], translation: Sequence[float], factor: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translation of an image whose y and x axes were upscaled ``factor`` times."""
    y, x = _yx_indices(axes)
    factors = [1.0] * len(axes)
    factors[y] = factors[x] = 1.0 / factor
    return resample_transform(scale, translation, factors)


# --------------------------------------------------------------------------- reading
def _parse_transforms(transforms: Any, ndim: int, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scale = [1.0] * ndim
    translation = [0.0] * ndim
    if not isinstance(transforms, list):
        raise ValueError(f"{where}: coordinateTransformations must be a list, got {transforms!r}")
    for transform in transforms:
        kind = transform.get("type") if isinstance(transform, dict) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise ValueError(f"{where}: unsupported coordinate transformation {transform!r}")
        if kind not in transform:
            raise ValueError(f"{where}: {kind} given by 'path' is not supported, only inline values")
        values = [float(v) for v in transform[kind]]
        if len(values) != ndim:
            raise ValueError(f"{where}: {kind} has {len(values)} values for {ndim} axes")
        if kind == "scale":  # applied in order: a scale after a translation scales it too
            translation = [t * v for t, v in zip(translation, values)]
            scale = [s * v for s, v in zip(scale, values)]
        else:
            translation = [t + v for t, v in zip(translation, values)]
    return tuple(scale), tuple(translation)


def read_ome_zarr(path: str | os.PathLike, mode: str = "r") -> OmeZarrImage:
    """Open an OME-Zarr image (NGFF 0.4 or 0.5); arrays are read lazily.

    mode: ``"r"`` (read only) or ``"r+"`` (arrays writable, e.g. to fill them).
    Returns the first multiscale of the group. Per-dataset transforms are
    composed with the multiscale-wide ones, so ``levels[k].scale`` and
    ``.translation`` are the full array-index -> physical transforms.

    Raises FileNotFoundError if ``path`` does not exist and ValueError if it
    is not an OME-Zarr image of a supported version (the message says why).
    """
    zarr = require_zarr()
    path = Path(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not path.exists():
        raise FileNotFoundError(f"no such OME-Zarr: {path}")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as error:  # zarr raises several types for "not a group"
        raise ValueError(f"{path} is not a zarr group: {error}") from error
    attrs = dict(group.attrs)
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        ome = attrs.pop("ome")
        version = str(ome.get("version", ""))
        multiscales = ome.get("multiscales")
    else:
        multiscales = attrs.pop("multiscales", None)
        version = str(multiscales[0].get("version", "")) if isinstance(multiscales, list) and multiscales else ""
    if not multiscales:
        raise ValueError(f"{path} has no OME-NGFF 'multiscales' metadata (is it an image, not a plate or label?)")
    if version not in READ_VERSIONS:
        raise ValueError(f"{path} is OME-NGFF {version or '(no version)'}; supported: {', '.join(READ_VERSIONS)}")
    multiscale = multiscales[0]
    raw_axes = multiscale.get("axes")
    if not isinstance(raw_axes, list) or not all(isinstance(a, dict) for a in raw_axes):
        raise ValueError(f"{path}: 'axes' must be a list of objects (NGFF >= 0.4), got {raw_axes!r}")
    axes = tuple(Axis.from_dict(a) for a in raw_axes)
    ndim = len(axes)
    top_scale, top_translation = _parse_transforms(multiscale.get("coordinateTransformations", []), ndim, str(path))
    levels, arrays = [], []
    for dataset in multiscale.get("datasets") or []:
        where = f"{path}/{dataset.get('path')}"
        scale, translation = _parse_transforms(dataset.get("coordinateTransformations", []), ndim, where)
        # physical = top_scale * (scale * i + translation) + top_translation
        scale = tuple(a * b for a, b in zip(top_scale, scale))
        translation = tuple(ts * t + tt for ts, t, tt in zip(top_scale, translation, top_translation))
        array = group[str(dataset["path"])]
        if array.ndim != ndim:
            raise ValueError(f"{where} has {array.ndim} dimensions but the metadata names {ndim} axes")
        levels.append(Level(str(dataset["path"]), scale, translation))
        arrays.append(array)
    if not levels:
        raise ValueError(f"{path}: the multiscale lists no datasets")
    return OmeZarrImage(path, axes, tuple(levels), arrays, version, str(multiscale.get("name", "")), attrs)


# --------------------------------------------------------------------------- writing
def _check_axes(axes: Sequence[Axis], ndim: int) -> tuple[Axis, ...]:
    axes = tuple(a if isinstance(a, Axis) else Axis.from_dict(a) for a in axes)
    if len(axes) != ndim:
        raise ValueError(f"{len(axes)} axes {[a.name for a in axes]} for an array with {ndim} dimensions")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"axis names must be unique, got {names}")
    if not 2 <= ndim <= 5:
        raise ValueError(f"OME-NGFF images have 2 to 5 axes, got {ndim}")
    _yx_indices(axes)
    return axes


def _level_shapes(shape: tuple[int, ...], yx: tuple[int, int], n_levels: int) -> list[tuple[int, ...]]:
    shapes = [shape]
    for _ in range(1, n_levels):
        previous = list(shapes[-1])
        for i in yx:
            previous[i] //= DOWNSCALE
        if min(previous[i] for i in yx) < 1:
            break
        shapes.append(tuple(previous))
    return shapes


def create_ome_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    *,
    axes: Sequence[Axis] | None = None,
    scale: Sequence[float] | None = None,
    translation: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    n_levels: int = 1,
    attrs: dict[str, Any] | None = None,
    name: str = "",
    overwrite: bool = False,
) -> OmeZarrImage:
    """Create an empty NGFF 0.5 image (zarr format 3) and return it opened for writing.

    shape, dtype: level 0. axes: default :func:`default_axes`. scale (physical
    units per pixel, default 1) and translation (pixel 0's centre, default 0):
    one value per axis, for level 0; level k has y and x pixel sizes 2**k times
    larger and translations from :func:`resample_transform`. chunks: level 0's
    chunk shape (default: zarr's choice); every level uses the same chunk shape
    clipped to its size, and every chunk is stored even when it holds only the
    fill value (0), so a chunk's presence means it was written. n_levels: how
    many levels to create (fewer if y or x would drop below one pixel). attrs:
    extra group attributes (the provenance goes under ``"textsr"``).

    Raises FileExistsError if ``path`` exists and not ``overwrite``; ValueError
    for inconsistent axes/scale/translation/chunks.
    """
    zarr = require_zarr()
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    axes = _check_axes(axes if axes is not None else default_axes(ndim), ndim)
    scale = tuple(float(v) for v in (scale if scale is not None else [1.0] * ndim))
    translation = tuple(float(v) for v in (translation if translation is not None else [0.0] * ndim))
    if len(scale) != ndim or len(translation) != ndim:
        raise ValueError(f"scale {scale} and translation {translation} need {ndim} values each")
    if any(not (s > 0 and math.isfinite(s)) for s in scale):
        raise ValueError(f"scale values must be positive and finite, got {scale}")
    if chunks is not None and (len(chunks) != ndim or any(int(c) < 1 for c in chunks)):
        raise ValueError(f"chunks {tuple(chunks)} must give one positive size per axis ({ndim})")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    yx = _yx_indices(axes)
    shapes = _level_shapes(shape, yx, max(int(n_levels), 1))
    group = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
    levels, arrays = [], []
    for k, level_shape in enumerate(shapes):
        factors = [1.0] * ndim
        for i in yx:
            factors[i] = float(DOWNSCALE**k)
        level_scale, level_translation = resample_transform(scale, translation, factors)
        level_chunks: Any = "auto"
        if chunks is not None:
            level_chunks = tuple(max(min(int(c), n), 1) for c, n in zip(chunks, level_shape))
        array = group.create_array(
            str(k),
            shape=level_shape,
            dtype=np.dtype(dtype),
            chunks=level_chunks,
            fill_value=0,
            dimension_names=[a.name for a in axes],
            config={"write_empty_chunks": True},
        )
        levels.append(Level(str(k), level_scale, level_translation))
        arrays.append(array)
    image = OmeZarrImage(path, axes, tuple(levels), arrays, NGFF_VERSION, name, dict(attrs or {}))
    group.attrs.update(_group_attributes(image))
    return image


def _group_attributes(image: OmeZarrImage) -> dict[str, Any]:
    multiscale: dict[str, Any] = {
        "axes": [a.to_dict() for a in image.axes],
        "datasets": [level.to_dict() for level in image.levels],
    }
    if image.name:
        multiscale["name"] = image.name
    if len(image.levels) > 1:
        multiscale["type"] = f"mean of {DOWNSCALE}x{DOWNSCALE} pixels in y and x"
    return {"ome": {"version": NGFF_VERSION, "multiscales": [multiscale]}, **image.attrs}


def update_attrs(image: OmeZarrImage, values: dict[str, Any]) -> None:
    """Add or replace group attributes (not the NGFF ones) on disk and in ``image.attrs``."""
    zarr = require_zarr()
    if "ome" in values or "multiscales" in values:
        raise ValueError("the NGFF metadata is written by create_ome_zarr, not update_attrs")
    group = zarr.open_group(str(image.path), mode="r+")
    group.attrs.update(values)
    image.attrs.update(values)


def write_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    *,
    axes: Sequence[Axis] | None = None,
    scale: Sequence[float] | None = None,
    translation: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    n_levels: int = 1,
    attrs: dict[str, Any] | None = None,
    name: str = "",
    overwrite: bool = False,
) -> OmeZarrImage:
    """Write ``data`` (numpy or dask array, any dtype zarr stores) as an NGFF 0.5 image with
    ``n_levels`` pyramid levels; the arguments are :func:`create_ome_zarr`'s."""
    image = create_ome_zarr(
        path,
        data.shape,
        data.dtype,
        axes=axes,
        scale=scale,
        translation=translation,
        chunks=chunks,
        n_levels=n_levels,
        attrs=attrs,
        name=name,
        overwrite=overwrite,
    )
    if hasattr(data, "dask"):
        import dask.array as da

        da.store(data, image.data, lock=False)
    else:
        image.data[...] = np.asarray(data)
    fill_pyramid(image)
    return image


def fill_pyramid(image: OmeZarrImage) -> None:
    """Compute levels 1.. from level 0: each the 2 x 2 mean (in y, x) of the one above.

    Integer dtypes are rounded to nearest; a trailing odd row/column is
    dropped (level shapes are floor(n / 2)). Runs with dask, so on a
    ``dask.distributed`` client when one is active.
    """
    import dask.array as da

    y, x = image.spatial_axes()
    dtype = image.dtype
    for k in range(1, len(image.arrays)):
        source = da.from_zarr(image.arrays[k - 1])
        target = image.arrays[k]
        means = da.coarsen(np.mean, source.astype(np.float64), {y: DOWNSCALE, x: DOWNSCALE}, trim_excess=True)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            means = da.clip(da.rint(means), info.min, info.max)
        means = means.astype(dtype).rechunk(target.chunks)
        da.store(means, target, lock=False)  # level k must be written before level k + 1 reads it
