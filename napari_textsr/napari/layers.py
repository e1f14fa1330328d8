"""From an input layer and upscaling results to napari layers: the one place layers are built.

The widget and :func:`napari_textsr.napari.upscale_layer` both call
:func:`source_from_layer` / :func:`select_input` before a run and
:func:`result_layer_data` / :func:`add_result_layers` after it.

Geometry: output pixel ``j`` (along a spatial axis, factor ``k``) covers input
pixel coordinates ``[j/k - 1/2, (j+1)/k - 1/2]``, so its centre sits at input
coordinate ``(j + 0.5)/k - 0.5``. The output layer therefore gets the input's
scale divided by ``k`` on the two spatial axes and a translate that moves its
first pixel centre to input coordinate ``0.5/k - 0.5``, through the input
layer's own scale, translate, rotate, shear and affine, so it overlays the
input exactly in world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_textsr.imageio import JpegEvidence
    from napari_textsr.inference import UpscaleResult

SPATIAL_AXES = 2
ATTENTION_COLORMAP = "inferno"
CONSISTENCY_COLORMAP = "magma"
# Signed maps (text effect): pink where the words darkened, green where they brightened.
TEXT_EFFECT_COLORMAP = "PiYG"
ATTENTION_OPACITY = 0.8
# Contrast limits of maps come from a subsample of at most this many pixels.
_PERCENTILE_SAMPLE = 1_000_000

LayerDataTuple = tuple  # (data, kwargs, "image"), napari's convention


@dataclass(frozen=True)
class SourceLayer:
    """What the output layers need from the input layer, copied on the GUI thread.

    A snapshot, so a run does not depend on the input layer staying in the
    viewer (or unchanged) while the worker thread computes.
    ``ndim`` counts the layer's dimensions without the RGB axis.
    """

    name: str
    ndim: int
    rgb: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    scale: np.ndarray
    translate: np.ndarray
    rotate: np.ndarray
    shear: np.ndarray
    affine: np.ndarray  # (ndim + 1, ndim + 1) homogeneous matrix
    contrast_limits: tuple[float, float]
    colormap: Any = "gray"
    gamma: float = 1.0
    units: tuple | None = None
    axis_labels: tuple | None = None
    metadata: dict = field(default_factory=dict)
    jpeg: JpegEvidence | None = None  # the JPEG compression the input showed; into the outputs' provenance

    @property
    def n_leading(self) -> int:
        """Number of axes before the two spatial ones (z, t, channels...)."""
        return self.ndim - SPATIAL_AXES


def check_image_layer(layer: Any) -> None:
    """TypeError/ValueError with a message for the user unless ``layer`` can be upscaled."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise TypeError(f"'{getattr(layer, 'name', layer)}' is a {kind} layer; only Image layers can be super-resolved")
    data = layer.data[0] if layer.multiscale else layer.data
    shape = tuple(data.shape)
    spatial = shape[-3:-1] if layer.rgb else shape[-2:]
    if len(spatial) < SPATIAL_AXES or min(spatial) < 2 or 0 in shape:
        raise ValueError(
            f"'{layer.name}' is {'x'.join(map(str, spatial))} pixels: "
            "super-resolution needs an image of at least 2x2 pixels"
        )


def layer_jpeg_evidence(layer: Any) -> JpegEvidence | None:
    """What is known of the JPEG compression ``layer``'s image went through, or None.

    From the JPEG file the layer was opened from (napari's
    ``layer.source.path``; only the file's header is read,
    :func:`napari_textsr.imageio.jpeg_quality`) and, for a 2-D 8-bit layer
    held in memory (grey, or RGB/RGBA), from its pixels' 8x8 blocks
    (:func:`napari_textsr.imageio.jpeg_quality_from_pixels`, about
    0.1-0.3 s); the heavier compression of the two
    (:func:`napari_textsr.imageio.jpeg_evidence`). Stacks, multiscale and
    lazy (dask, zarr) layers are not examined. The file counts only while
    the layer's image has the file's width and height: a layer whose data
    were replaced by an image of another size no longer holds the file's
    pixels (one of the same size cannot be told apart by the header).
    """
    from napari_textsr.imageio import jpeg_evidence

    path = _source_path(layer)
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    pixels = None
    if not getattr(layer, "multiscale", False):
        if isinstance(data, np.ndarray) and data.ndim == (3 if getattr(layer, "rgb", False) else 2):
            pixels = data
    return jpeg_evidence(_file_jpeg_quality(path, _plane(layer)) if path else None, pixels)


def _source_path(layer: Any) -> str | None:
    """The file napari opened ``layer`` from (``layer.source.path``), or None."""
    return getattr(getattr(layer, "source", None), "path", None) or None


def _plane(layer: Any) -> tuple[int, int]:
    """(height, width) of one plane of ``layer``'s image (its full-resolution level when multiscale)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = data.shape[-3:-1] if getattr(layer, "rgb", False) else data.shape[-2:]
    return int(shape[0]), int(shape[1])


def layer_binning(layer: Any) -> int | None:
    """The camera binning recorded by the OME-TIFF ``layer`` was opened from (napari's ``layer.source.path``), or None.

    Only the file's header is read (:func:`napari_textsr.imageio.file_binning`);
    it counts only while the layer's image has the file's height and width.
    """
    from napari_textsr.imageio import file_binning

    path = _source_path(layer)
    return file_binning(path, _plane(layer)) if path else None


def _file_jpeg_quality(path: str, plane: tuple[int, ...]) -> int | None:
    """The JPEG quality in ``path``'s header, or None when it is no JPEG or its (height, width) is not ``plane``."""
    from PIL import Image

    from napari_textsr.imageio import JPEG_SUFFIXES, jpeg_quality

    if Path(path).suffix.lower() not in JPEG_SUFFIXES:
        return None
    try:
        with Image.open(path) as opened:
            size = (opened.height, opened.width)
            quality = jpeg_quality(opened)
    except OSError:
        return None
    return quality if size == plane else None


def source_from_layer(layer: Any, jpeg: JpegEvidence | None = None) -> SourceLayer:
    """Snapshot of an Image layer's geometry and display settings (``jpeg``: what it showed of JPEG compression)."""
    check_image_layer(layer)
    data = layer.data[0] if layer.multiscale else layer.data
    return SourceLayer(
        name=layer.name,
        ndim=layer.ndim,
        rgb=bool(layer.rgb),
        dtype=np.dtype(data.dtype),
        shape=tuple(data.shape),
        scale=np.asarray(layer.scale, dtype=float),
        translate=np.asarray(layer.translate, dtype=float),
        rotate=np.asarray(layer.rotate, dtype=float),
        shear=np.asarray(layer.shear, dtype=float),
        affine=np.asarray(layer.affine.affine_matrix, dtype=float),
        contrast_limits=tuple(float(v) for v in layer.contrast_limits),
        colormap=layer.colormap.name if not layer.rgb else "gray",
        gamma=float(layer.gamma),
        units=tuple(getattr(layer, "units", ()) or ()) or None,
        axis_labels=tuple(getattr(layer, "axis_labels", ()) or ()) or None,
        metadata=dict(layer.metadata),
        jpeg=jpeg,
    )


def select_input(
    layer: Any, *, whole_stack: bool = True, point: Sequence[float] | None = None
) -> tuple[Any, tuple[int, ...]]:
    """The array to upscale and the data index of its first element along the leading axes.

    2D layers (grey or RGB): the whole array, offset ``()``. nD layers: the
    whole array (``whole_stack``), or the slice under the viewer's current
    world ``point``, with every leading axis kept at size 1 so the output
    overlays that slice only. Lazy arrays (dask, zarr) stay lazy. Multiscale
    layers use their full-resolution level.
    """
    data = layer.data[0] if layer.multiscale else layer.data
    n_leading = layer.ndim - SPATIAL_AXES
    if n_leading == 0 or whole_stack:
        return data, (0,) * n_leading
    if point is None:
        raise ValueError("the current slice needs the viewer's current point")
    coords = np.asarray(layer.world_to_data(point), dtype=float)[:n_leading]
    index = tuple(int(np.clip(round(c), 0, size - 1)) for c, size in zip(coords, data.shape[:n_leading]))
    return data[tuple(slice(i, i + 1) for i in index)], index


def output_geometry(
    source: SourceLayer, factor: int, offset: Sequence[int] = (), stacked: bool = False
) -> dict[str, Any]:
    """Layer kwargs (scale, translate, rotate, shear, affine, units, axis_labels) of an upscaled output.

    ``offset``: data index of the output's first element along the leading
    axes (a single slice of a stack). ``stacked``: the output has one more
    leading axis (one slice per caption) that maps to world unchanged.
    """
    from napari.utils.transforms import Affine, CompositeAffine

    n = source.ndim
    zoom = np.ones(n)
    zoom[-SPATIAL_AXES:] = 1.0 / factor
    first_centre = np.zeros(n)
    first_centre[: len(offset)] = offset
    first_centre[-SPATIAL_AXES:] = 0.5 / factor - 0.5
    data_to_physical = CompositeAffine(
        scale=source.scale, translate=source.translate, rotate=source.rotate, shear=source.shear, ndim=n
    )
    transform = CompositeAffine(
        scale=source.scale * zoom,
        translate=data_to_physical(first_centre),
        rotate=source.rotate,
        shear=source.shear,
        ndim=n,
    )
    affine = Affine(affine_matrix=source.affine, ndim=n)
    units, labels = source.units, source.axis_labels
    if stacked:
        transform = transform.expand_dims([0])
        affine = affine.expand_dims([0])
        units = ("pixel", *units) if units else None
        labels = ("caption", *labels) if labels else None
    geometry: dict[str, Any] = {
        "scale": np.asarray(transform.scale),
        "translate": np.asarray(transform.translate),
        "rotate": np.asarray(transform.rotate),
        "shear": np.asarray(transform.shear),
        "affine": np.asarray(affine.affine_matrix),
    }
    if units:
        geometry["units"] = units
    if labels:
        geometry["axis_labels"] = labels
    return geometry


def unique_name(base: str, existing: Collection[str]) -> str:
    """``base``, or ``base [1]``, ``base [2]``... (napari's style) if taken."""
    if base not in existing:
        return base
    i = 1
    while f"{base} [{i}]" in existing:
        i += 1
    return f"{base} [{i}]"


def map_contrast_limits(array: np.ndarray) -> tuple[float, float]:
    """(low, high) for a non-negative map: 0 (or a low percentile if negative values) to the 99.8th percentile."""
    flat = np.asarray(array, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return (0.0, 1.0)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    low = 0.0 if float(sample.min()) >= 0 else float(np.percentile(sample, 0.2))
    high = float(np.percentile(sample, 99.8))
    if not high > low:
        high = float(sample.max())
    if not high > low:
        high = low + 1.0
    return (low, high)


def _shared_attention_names(results: Sequence[UpscaleResult]) -> list[str]:
    """Attention names every result has, in the first result's order (TGSR's words differ per caption)."""
    names = list(results[0].attention)
    return [n for n in names if all(n in r.attention for r in results[1:])]


def result_layer_data(
    source: SourceLayer,
    results: Sequence[UpscaleResult],
    *,
    offset: Sequence[int] = (),
    compare: bool = False,
    existing_names: Collection[str] = (),
) -> list[LayerDataTuple]:
    """Layer data tuples for the output image, its attention maps, the consistency and text-effect maps.

    One result: an image ``"<input> x<k>"`` with the result's provenance in
    ``metadata``; each attention map as ``"<output> attention: <name>"`` on the
    grid it comes on (``UpscaleResult.attention_scale``: a coarser grid gets a
    larger layer scale and linear interpolation)
    (additive, colormapped, all hidden: a visible additive map would tint the
    output, which stays what the user sees first); the consistency map (if
    any) as ``"<output> consistency"``; the text-effect map (if any) as
    ``"<output> text effect"`` (diverging colours, hidden). Several results
    with ``compare``: one
    stack with a leading caption axis, the captions and each result's
    provenance in ``metadata``, and attention maps that every caption has
    stacked the same way. Names are made unique against ``existing_names``.
    """
    if not results:
        raise ValueError("no results to turn into layers")
    stacked = compare or len(results) > 1
    factor = results[0].scale
    base = f"{source.name} x{factor}" + (" captions" if stacked else "")
    taken = set(existing_names)
    out_name = unique_name(base, taken)
    taken.add(out_name)
    geometry = output_geometry(source, factor, offset, stacked=stacked)
    jpeg = source.jpeg.record() if source.jpeg is not None else {}
    provenance = [dict(r.provenance(), input_layer=source.name, **jpeg) for r in results]
    if offset and any(offset):
        for p in provenance:
            p["input_slice"] = list(offset)

    if stacked:
        image = np.stack([r.image for r in results])
        first = provenance[0]
        metadata = {
            "captions": [r.caption for r in results],
            "provenance": provenance,
            "input_layer": source.name,
            **{k: first[k] for k in ("model", "method", "scale", "encoder", "software_version")},
        }
    else:
        image = results[0].image
        metadata = provenance[0]

    output_kwargs: dict[str, Any] = {
        "name": out_name,
        "metadata": metadata,
        "contrast_limits": source.contrast_limits,
        "rgb": source.rgb,
        **geometry,
    }
    if not source.rgb:
        output_kwargs.update(colormap=source.colormap, gamma=source.gamma)
    layers: list[LayerDataTuple] = [(image, output_kwargs, "image")]

    names = _shared_attention_names(results) if stacked else list(results[0].attention)
    # Maps may come on a coarser grid (the model's own, or the input's above
    # inference.MAX_ATTENTION_OUTPUT_PIXELS): their layer scale overlays them on the
    # output, and linear interpolation shows them as the bilinear upsampling would.
    map_factor = results[0].attention_scale or factor
    map_geometry = geometry if map_factor == factor else output_geometry(source, map_factor, offset, stacked=stacked)
    if map_factor != factor:
        map_geometry = {**map_geometry, "interpolation2d": "linear"}
    for key in names:
        amap = np.stack([r.attention[key] for r in results]) if stacked else results[0].attention[key]
        name = unique_name(f"{out_name} attention: {key}", taken)
        taken.add(name)
        layers.append(
            (
                amap,
                {
                    "name": name,
                    "colormap": ATTENTION_COLORMAP,
                    "blending": "additive",
                    "opacity": ATTENTION_OPACITY,
                    "visible": False,
                    "contrast_limits": map_contrast_limits(amap),
                    "metadata": {"attention": key, "output_layer": out_name, "caption": metadata.get("caption")},
                    **map_geometry,
                },
                "image",
            )
        )

    if all(r.consistency_map is not None for r in results):
        cmap = np.stack([r.consistency_map for r in results]) if stacked else results[0].consistency_map
        name = unique_name(f"{out_name} consistency", taken)
        layers.append(
            (
                cmap,
                {
                    "name": name,
                    "colormap": CONSISTENCY_COLORMAP,
                    "blending": "additive",
                    "opacity": ATTENTION_OPACITY,
                    "visible": False,
                    "contrast_limits": map_contrast_limits(cmap),
                    "metadata": {
                        "consistency_error": [r.consistency_error for r in results]
                        if stacked
                        else results[0].consistency_error,
                        "output_layer": out_name,
                    },
                    **geometry,
                },
                "image",
            )
        )
    if all(r.text_effect is not None for r in results):
        layers.append(
            _text_effect_layer(results, stacked, unique_name(f"{out_name} text effect", taken), out_name, geometry)
        )
    return layers


def _text_effect_layer(
    results: Sequence[UpscaleResult], stacked: bool, name: str, out_name: str, geometry: dict[str, Any]
) -> LayerDataTuple:
    """The signed text-effect map (output minus uncaptioned output): diverging colours, symmetric limits."""
    effect = np.stack([r.text_effect for r in results]) if stacked else results[0].text_effect
    magnitude = np.abs(effect.ravel()[:: max(effect.size // _PERCENTILE_SAMPLE, 1)])
    limit = float(np.percentile(magnitude, 99.5)) if magnitude.size else 0.0
    limit = limit if limit > 0 else 1.0
    stats = [r.text_effect_stats for r in results] if stacked else results[0].text_effect_stats
    return (
        effect,
        {
            "name": name,
            "colormap": TEXT_EFFECT_COLORMAP,
            "opacity": ATTENTION_OPACITY,
            "visible": False,
            "contrast_limits": (-limit, limit),
            "metadata": {"text_effect": stats, "output_layer": out_name, "units": "output intensity"},
            **geometry,
        },
        "image",
    )


def add_layer_data(viewer: napari.components.ViewerModel, layer_data: Sequence[LayerDataTuple]) -> list[Layer]:
    """Add layer data tuples from :func:`result_layer_data`, renaming any whose name was taken meanwhile.

    The tuples may have been built off the GUI thread against an older list of
    names: a name taken since gets napari's ``[n]`` suffix, and the maps'
    ``metadata["output_layer"]`` follows their output's new name. (napari makes
    each added layer the active one; its only switch for that is private and
    refused to plugins, so the caller re-activates the output afterwards.)
    """
    renamed: dict[str, str] = {}
    added = []
    for data, kwargs, _kind in layer_data:
        kwargs = dict(kwargs)
        name = unique_name(kwargs["name"], [layer.name for layer in viewer.layers])
        renamed[kwargs["name"]] = name
        kwargs["name"] = name
        meta = kwargs.get("metadata")
        if isinstance(meta, dict) and meta.get("output_layer") in renamed:
            kwargs["metadata"] = {**meta, "output_layer": renamed[meta["output_layer"]]}
        added.append(viewer.add_image(data, **kwargs))
    return added


def add_result_layers(
    viewer: napari.components.ViewerModel,
    source: SourceLayer,
    results: Sequence[UpscaleResult],
    *,
    offset: Sequence[int] = (),
    compare: bool = False,
) -> list[Layer]:
    """Add the output layer, then its attention and consistency layers right after it; returns them."""
    layer_data = result_layer_data(
        source, results, offset=offset, compare=compare, existing_names=[layer.name for layer in viewer.layers]
    )
    return add_layer_data(viewer, layer_data)
