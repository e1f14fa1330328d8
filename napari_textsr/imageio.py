"""Reading and writing image files without changing their dtype or layout.

TIFF goes through tifffile (16-bit, float, multi-page stacks, RGB samples);
PNG, JPEG and the other formats Pillow knows go through Pillow. Arrays come
back the way napari holds them: (*leading, Y, X) or (*leading, Y, X, 3|4) with
``rgb`` telling which. (The training data reader in ``training.data`` converts
to float RGB instead; this one keeps what the file holds, for the round trip.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageFile", "read_image_file", "write_image_file", "write_map", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass
class ImageFile:
    """An image as read: ``data`` (*leading, Y, X[, 3|4]), ``rgb``, and the TIFF axes if known."""

    data: np.ndarray
    rgb: bool
    axes: str = ""


def read_image_file(path: str | Path) -> ImageFile:
    """Read a TIFF (any dtype, stacks) or a Pillow image (PNG, JPEG, ...), keeping its dtype.

    Raises FileNotFoundError for a missing file and ValueError for one that cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff(path)
        return _read_pillow(path)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # decoders raise many types; the user needs the file name
        raise ValueError(f"cannot read image {path}: {error}") from error


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
    # Colour samples are the last axis for napari; planar TIFFs store them first.
    if "S" in axes and data.shape[axes.index("S")] in (3, 4):
        position = axes.index("S")
        data = np.moveaxis(data, position, -1)
        axes = axes[:position] + axes[position + 1 :] + "S"
        return ImageFile(data, True, axes)
    return ImageFile(data, False, axes)


def _read_pillow(path: Path) -> ImageFile:
    from PIL import Image

    with Image.open(path) as image:
        mode = image.mode
        if mode == "1":
            image = image.convert("L")
        elif mode in ("P", "PA"):
            image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
        elif mode == "LA":
            image = image.convert("RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        data = np.asarray(image)
        if image.mode.startswith("I;16"):
            data = data.astype(np.uint16)  # Pillow may report a big-endian view
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    return ImageFile(np.ascontiguousarray(data), rgb)


def write_image_file(path: str | Path, data: np.ndarray, rgb: bool, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``data`` (*leading, Y, X[, 3|4]) in the format the suffix names.

    TIFF holds everything (stacks, 16-bit, float; BigTIFF when over 4 GB) and
    stores ``metadata`` in its JSON description under ``"textsr"``; PNG holds one uint8 image
    (grey, RGB, RGBA) or one uint16 grey image, with ``metadata`` in a text
    chunk; JPEG one uint8 grey or RGB image. Anything else is a ValueError
    that names the format to use instead.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metadata) if metadata else None
    if suffix in TIFF_SUFFIXES:
        import tifffile

        # tifffile's JSON description records the shape (so 4-D stacks read
        # back as 4-D); ours rides along under "textsr".
        tifffile.imwrite(
            str(path),
            data,
            photometric="rgb" if rgb else "minisblack",
            bigtiff=data.nbytes > 2**32 - 2**25,
            metadata={"textsr": metadata} if metadata else {},
        )
        return path
    single = data.ndim == (3 if rgb else 2)
    if suffix in PNG_SUFFIXES + JPEG_SUFFIXES:
        if not single:
            raise ValueError(f"{suffix} holds one image, but this is a stack of shape {data.shape}; write a .tif")
        from PIL import Image, PngImagePlugin

        if suffix in JPEG_SUFFIXES:
            if data.dtype != np.uint8 or (rgb and data.shape[-1] == 4):
                raise ValueError(f"JPEG holds uint8 grey or RGB images, not {data.dtype} {data.shape}; write a .png or .tif")
            Image.fromarray(data).save(path, quality=95)
            return path
        if data.dtype == np.uint8:
            image = Image.fromarray(data)
        elif data.dtype == np.uint16 and not rgb:
            image = Image.fromarray(data, mode="I;16") if _pillow_needs_mode() else Image.fromarray(data)
        else:
            raise ValueError(f"PNG holds uint8 images or uint16 grey, not {data.dtype} {'RGB' if rgb else 'grey'}; write a .tif")
        info = PngImagePlugin.PngInfo()
        if text is not None:
            info.add_text("textsr", text)
        image.save(path, pnginfo=info)
        return path
    raise ValueError(f"unsupported output format {suffix!r}: use .tif, .png or .jpg")


def _pillow_needs_mode() -> bool:
    # Pillow < 10.? needs mode="I;16" for uint16 arrays; newer ones infer it
    # (and deprecate the argument).
    from PIL import Image

    try:
        return Image.fromarray(np.zeros((1, 1), np.uint16)).mode != "I;16"
    except Exception:  # pragma: no cover
        return True


def write_map(path: str | Path, values: np.ndarray) -> list[Path]:
    """Write a float map (*leading, Y, X): float32 TIFF, or 8-bit PNG(s) scaled so its maximum is 255.

    PNG stacks are written one file per slice (``name_0003.png``). Returns the files written.
    """
    path = Path(path)
    values = np.asarray(values, dtype=np.float32)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return [write_image_file(path, values, rgb=False)]
    if path.suffix.lower() not in PNG_SUFFIXES:
        raise ValueError(f"maps are written as .tif (float32) or .png (8-bit), not {path.suffix!r}")
    peak = float(np.nanmax(values)) if values.size else 0.0
    scaled = np.clip(np.nan_to_num(values) / (peak if peak > 0 else 1.0) * 255.0, 0, 255)
    scaled = np.rint(scaled).astype(np.uint8)
    if scaled.ndim == 2:
        return [write_image_file(path, scaled, rgb=False)]
    written = []
    planes = scaled.reshape(-1, *scaled.shape[-2:])
    for i, plane in enumerate(planes):
        written.append(write_image_file(path.with_name(f"{path.stem}_{i:04d}{path.suffix}"), plane, rgb=False))
    return written
