"""napari writer contribution: save an image layer (e.g. an upscaled output) with what it knows.

File > Save Selected Layer(s) > "TIFF with pixel size and provenance (napari-textsr)"
writes through the product's one writer (:func:`napari_textsr.imageio.write_image_file`):
the layer's ``scale`` becomes the physical pixel size (ImageJ resolution and
unit, z spacing), its ``units`` the unit, and an output layer's ``metadata``
(the provenance: caption, model, scale, ...) goes into the file's description,
so ``textsr upscale`` outputs and layers saved from napari read back the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_textsr.imageio import ImageFile, write_image_file

# napari / pint unit names -> the names the reader and writer use.
_UNITS = {
    "micrometer": "µm",
    "micron": "µm",
    "nanometer": "nm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "inch": "inch",
    "pixel": "",
}


def layer_to_image_file(data: Any, meta: dict[str, Any]) -> ImageFile:
    """An image layer's data and attributes (napari's ``meta`` dict) -> :class:`ImageFile`.

    Multiscale data writes its full-resolution level. Axes are named from the
    end (Y, X, then Z, C, T); a layer scale other than 1 becomes the pixel
    size, in the layer's units (none when napari says "pixel").
    """
    if isinstance(data, (list, tuple)):
        data = data[0]
    array = np.asarray(data)
    rgb = bool(meta.get("rgb", False))
    image = ImageFile(array, rgb, alpha=rgb and array.shape[-1] == 4)
    letters = image.axes[:-1] if rgb else image.axes
    scale = list(meta.get("scale") or [1.0] * len(letters))
    units = list(meta.get("units") or [""] * len(letters))
    for letter, size, unit in zip(letters, scale, units):
        name = _UNITS.get(str(unit), str(unit))
        if letter in "ZYX" and (float(size) != 1.0 or name):
            image.spacing[letter] = float(size)
            image.units[letter] = name
    metadata = meta.get("metadata") or {}
    if isinstance(metadata, dict) and ("caption" in metadata or "captions" in metadata or "model" in metadata):
        image.provenance = _jsonable(metadata)
    return image


def write_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: one image layer -> ``path`` (.tif); returns the paths written."""
    return [str(write_image_file(path, layer_to_image_file(data, meta)))]


def _jsonable(value: Any) -> Any:
    """Layer metadata as JSON (numpy scalars and arrays become numbers and lists; other objects their str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
