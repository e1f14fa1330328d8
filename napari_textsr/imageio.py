"""The one reader and the one writer of image files for the whole product.

Everything that reads or writes an image (the CLI, the napari writer, the
training data loader, the samples) goes through :func:`read_image_file` /
:func:`read_image_series` and :func:`write_image_file`, so every encoding is
handled once:

* TIFF through tifffile (with imagecodecs for LZW/JPEG/... compression):
  any dtype, big- or little-endian, contiguous or planar samples, 1-bit
  bilevel (-> uint8 0/255, MinIsWhite inverted as viewers show it), palette
  (-> RGB through the colour map), CMYK (-> RGB), grey+alpha (-> RGBA),
  ImageJ hyperstacks and OME-TIFF with their physical pixel size, units,
  z spacing and channel names; multi-page files whose pages differ in size
  are several *series* (:func:`read_image_series`).
* PNG, JPEG and the rest through Pillow, with ``ImageOps.exif_transpose`` (the
  EXIF orientation is applied as every viewer shows it), the ICC profile, the
  resolution (dpi / pHYs) and the text chunk / comment kept; colour-key
  transparency (tRNS) becomes an alpha channel. 16-bit-per-channel colour PNG
  (48/64-bit), which Pillow reduces to 8 bits, goes through imagecodecs.

An :class:`ImageFile` carries the array and what the file says about it. The
writer stores it back (divide the pixel size by the scale first with
:meth:`ImageFile.upscaled`): TIFF as ImageJ hyperstack, OME-TIFF or tifffile's
shaped TIFF (whichever holds the dtype, axes and units; BigTIFF above 4 GB),
PNG (uint8 grey/RGB/RGBA, uint16 grey/RGB/RGBA) and JPEG (uint8 grey/RGB).
The textsr provenance (caption, model, scale, ...) goes into the ImageJ
``Info``, the OME ``Description``, the shaped-TIFF JSON description, the PNG
``textsr`` text chunk or the JPEG comment, and is read back into
``ImageFile.provenance``.

:func:`check_output` says before any work whether a result can be written to a
path (format, dtype, layout), and :func:`check_not_same_file` refuses an output
that is the input (also through a hard link).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageFile",
    "TIFF_SUFFIXES",
    "check_not_same_file",
    "check_output",
    "is_image_path",
    "JpegEvidence",
    "jpeg_evidence",
    "jpeg_quality",
    "file_binning",
    "jpeg_quality_from_pixels",
    "read_image_file",
    "read_image_series",
    "write_image_file",
    "write_map",
]

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
# Read through Pillow besides PNG and JPEG; written: TIFF, PNG, JPEG only.
OTHER_PILLOW_SUFFIXES = (".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".tga", ".jp2")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES + OTHER_PILLOW_SUFFIXES
ZARR_SUFFIXES = (".zarr",)  # OME-Zarr through napari_textsr.ngff (needs the 'distributed' extra)
WRITABLE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES + ZARR_SUFFIXES

# Largest image (Y * X * planes, colour samples not counted) that is decoded
# without being asked: 2**28 = 16384 x 16384. A small compressed file can
# decode to far more (a 0.9 MB TIFF to 30000 x 30000); the size is checked
# from the header, before decoding. Override with ``max_pixels=`` (None: no
# limit) or ``textsr upscale --max-pixels``.
DEFAULT_MAX_PIXELS = 1 << 28

# Micrometre spellings found in ImageJ and OME files; "µm" is the one kept.
_MICRON_SPELLINGS = {"micron", "microns", "um", "µm", "\u03bcm", "\\u00b5m", "micrometer", "micrometre"}
_JSON_KEY = "textsr"  # provenance of an upscaled result
_FILE_KEY = "textsr_file"  # axes, spacing, units, channel names (where the format has no field for them)
_TAG_ICC = 34675


@dataclass
class ImageFile:
    """An image as read from a file, and what the file says about it.

    data: (*leading, Y, X) grey or (*leading, Y, X, 3|4) RGB/RGBA when ``rgb``;
        the file's dtype (bool is read as uint8 0/255), native byte order.
    axes: one letter per axis of ``data`` (tifffile's letters: T time, Z depth,
        C channel, Y, X, S colour samples last; I/Q for unnamed leading axes).
    spacing: physical size of one pixel per axis letter (e.g. ``{"Y": 0.2,
        "X": 0.2, "Z": 0.5}``), in ``units`` of the same letter ("µm", "nm",
        "inch", "cm", ...; "" when the file gives no unit).
    channel_names: names of the C axis (or of the colour samples), if given.
    alpha: the last colour sample is alpha (RGBA, also grey+alpha and tRNS).
    icc_profile: the embedded colour profile (bytes), written back as is.
    orientation: the EXIF orientation (1-8) that was applied on reading (1: none).
    provenance: the textsr record of how the file was made (for an output of
        ``textsr upscale``), else None.
    format: "tiff", "imagej", "ome", "shaped" (tifffile JSON), "png", "jpeg", "ome-zarr", ...
    series: index of this series in a multi-series TIFF (0 otherwise).
    jpeg_quality: for a JPEG file, the IJG quality (1-100) its luminance
        quantization table corresponds to (:func:`jpeg_quality`); None otherwise.
    origin: physical position of pixel 0's centre per axis letter (OME-Zarr
        translation; empty when the file gives none).
    binning: the camera binning an OME-TIFF records for this series (the
        ``Binning`` of every channel's ``DetectorSettings``, OME schema 2016-06:
        ``"2x2"`` -> 2), None when it records none, ``1x1``, ``Other``, or
        different binnings per channel or axis.

    ``data`` of an OME-Zarr image is its lazy zarr array (read tile by tile).
    """

    data: np.ndarray
    rgb: bool
    axes: str = ""
    spacing: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()
    alpha: bool = False
    icc_profile: bytes | None = None
    orientation: int = 1
    provenance: dict[str, Any] | None = None
    format: str = ""
    series: int = 0
    origin: dict[str, float] = field(default_factory=dict)
    jpeg_quality: int | None = None
    binning: int | None = None

    def __post_init__(self) -> None:
        if not self.axes:
            self.axes = _default_axes(self.data.ndim, self.rgb)
        if len(self.axes) != self.data.ndim:
            raise ValueError(f"axes {self.axes!r} do not match data of shape {self.data.shape}")

    @property
    def leading_axes(self) -> str:
        """Axis letters before Y, X."""
        return self.axes[: self.data.ndim - (3 if self.rgb else 2)]

    def layer_scale(self) -> tuple[float, ...]:
        """napari layer ``scale`` (physical size per data axis, colour axis excluded; 1 where unknown)."""
        letters = self.axes[:-1] if self.rgb else self.axes
        return tuple(float(self.spacing.get(a, 1.0)) for a in letters)

    def layer_units(self) -> tuple[str, ...] | None:
        """napari layer ``units`` per data axis (colour axis excluded), or None when the file gives none."""
        letters = self.axes[:-1] if self.rgb else self.axes
        if not any(self.units.get(a) for a in letters):
            return None
        return tuple(_napari_unit(self.units.get(a, "")) for a in letters)

    def upscaled(self, data: np.ndarray, factor: int, provenance: dict[str, Any] | None = None) -> "ImageFile":
        """The same file record for ``data``, the result of upscaling Y and X by ``factor``.

        The Y and X pixel sizes are divided by ``factor`` (0.2 µm -> 0.05 µm at x4);
        units, z spacing, channel names, alpha, colour profile are kept.
        """
        spacing, origin = dict(self.spacing), dict(self.origin)
        for axis in "YX":
            size = spacing.get(axis, 1.0)
            if axis in spacing:
                spacing[axis] = size / factor
            if axis in origin:  # pixel 0's outer edge stays in place (ngff.resample_transform)
                origin[axis] = origin[axis] + (size / factor - size) / 2
        return dataclasses.replace(
            self, data=data, spacing=spacing, origin=origin, provenance=provenance, orientation=1, jpeg_quality=None
        )

    def file_record(self) -> dict[str, Any]:
        """JSON-ready axes, spacing, units and channel names (kept where a format has no field for them)."""
        return {
            "axes": self.axes,
            "spacing": self.spacing,
            "units": self.units,
            "channel_names": list(self.channel_names),
            "rgb": self.rgb,
        }


def _default_axes(ndim: int, rgb: bool) -> str:
    spatial = "YXS" if rgb else "YX"
    lead = ndim - len(spatial)
    if lead < 0:
        return "YX"[-ndim:] if ndim else ""
    leading = {0: "", 1: "Z", 2: "ZC", 3: "TZC"}.get(lead, "Q" * (lead - 3) + "TZC")
    return leading + spatial


def _napari_unit(unit: str) -> str:
    return _NGFF_UNITS.get(unit, unit or "pixel")  # napari (pint) takes the same unit names as NGFF


def _unit(text: Any) -> str:
    text = str(text or "").strip()
    if text.lower() in _MICRON_SPELLINGS or text == "\u00b5m":
        return "µm"
    if text.lower() in ("pixel", "pixels", "none"):
        return ""
    return text


# =========================================================================== paths
def is_image_path(path: str | os.PathLike) -> bool:
    """True for a file whose suffix names an image format the reader knows, or an OME-Zarr folder."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES or is_zarr(path)


def is_zarr(path: str | os.PathLike) -> bool:
    """True for a zarr folder (``.zarr``, or holding ``zarr.json`` / ``.zattrs``)."""
    path = Path(path)
    return path.is_dir() and (
        path.suffix.lower() in ZARR_SUFFIXES or (path / "zarr.json").is_file() or (path / ".zattrs").is_file()
    )


def check_not_same_file(input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """ValueError when ``output_path`` is ``input_path`` (same path, symlink or hard link)."""
    a, b = Path(input_path), Path(output_path)
    same = a.resolve() == b.resolve()
    if not same and a.exists() and b.exists():
        same = os.path.samefile(a, b)
    if same:
        raise ValueError(f"OUT {b} is the input file {a} (same file); choose another output path")


def check_output(
    path: str | os.PathLike,
    dtype: Any,
    rgb: bool,
    *,
    channels: int = 1,
    stack: bool = False,
    series: int = 1,
) -> None:
    """Raise ValueError unless an image of this kind can be written to ``path``.

    dtype: the result's dtype (the input's: upscaling keeps it); rgb/channels:
    colour layout (channels 3 or 4 when rgb); stack: there are leading axes;
    series: number of differently shaped series (TIFF only holds several).
    Called before any work, and again by the writer, so the two never disagree.
    """
    suffix = Path(path).suffix.lower()
    dtype = np.dtype(dtype)
    kind = f"{dtype} {'RGBA' if rgb and channels == 4 else 'RGB' if rgb else 'grey'}"
    if suffix not in WRITABLE_SUFFIXES:
        raise ValueError(
            f"cannot write {suffix or 'a file without suffix'!r} ({Path(path).name}): use .tif (any dtype, stacks), "
            ".png (8/16-bit grey, RGB, RGBA), .jpg (8-bit grey or RGB) or .zarr (OME-Zarr)"
        )
    if suffix in TIFF_SUFFIXES:
        return
    if suffix in ZARR_SUFFIXES:
        if series > 1:
            raise ValueError(f"the input has {series} series of different shapes; only .tif holds them all")
        if rgb and stack:
            raise ValueError("OME-Zarr output of an RGB stack is not supported; write a .tif")
        return
    if series > 1:
        raise ValueError(f"the input has {series} series of different shapes; only .tif holds them all")
    if stack:
        raise ValueError(f"{suffix} holds one image, but this is a stack; write a .tif")
    if suffix in PNG_SUFFIXES and dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds 8- and 16-bit images, not {kind}; write a .tif")
    if suffix in JPEG_SUFFIXES and (dtype != np.uint8 or channels == 4):
        raise ValueError(f"JPEG holds 8-bit grey or RGB images, not {kind}; write a .png or .tif")


# =========================================================================== reading
def read_image_file(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Read one image file (the first and only series), keeping its dtype and metadata.

    Raises FileNotFoundError for a missing file; ValueError for a file that
    cannot be decoded, one larger than ``max_pixels`` (Y * X * planes; None:
    no limit), and a TIFF holding several series of different shapes (read
    those with :func:`read_image_series`).
    """
    images = read_image_series(path, max_pixels=max_pixels)
    if len(images) > 1:
        shapes = ", ".join(str(i.data.shape) for i in images)
        raise ValueError(
            f"{path} holds {len(images)} series of different shapes ({shapes}); "
            "read them with read_image_series (textsr upscale writes them all to a .tif)"
        )
    return images[0]


def read_image_series(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[ImageFile]:
    """Every series of a file (a TIFF whose pages differ in size has one per shape; other files one)."""
    path = Path(path)
    if is_zarr(path):
        return [_read_zarr(path, max_pixels)]
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _read_tiff(path, max_pixels)
        return [_read_pillow(path, max_pixels)]
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # decoders raise many types; the user needs the file name
        raise ValueError(f"cannot read image {path}: {error}") from error


def _check_pixels(path: Path, shape: tuple[int, ...], rgb_samples: bool, max_pixels: int | None) -> None:
    pixels = int(np.prod(shape[:-1] if rgb_samples else shape, dtype=np.int64))
    if max_pixels is not None and pixels > max_pixels:
        raise ValueError(
            f"{path.name} decodes to {shape} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (max_pixels / --max-pixels raises it)"
        )


# --------------------------------------------------------------------------- TIFF
def _read_tiff(path: Path, max_pixels: int | None) -> list[ImageFile]:
    import tifffile

    images = []
    with tifffile.TiffFile(str(path)) as tif:
        file_format = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "shaped" if tif.is_shaped else "tiff"
        ome = _ome_pixels(tif) if tif.is_ome else []
        series_list = [s for s in tif.series if not getattr(s, "is_reduced", False)] or list(tif.series)
        for number, series in enumerate(series_list):
            page = series.pages[0] if series.pages else tif.pages[0]
            axes = series.axes
            _check_pixels(path, series.shape, "S" in axes and series.shape[axes.index("S")] > 1, max_pixels)
            data = series.asarray()
            data, axes, rgb, alpha = _tiff_layout(data, axes, page)
            record = _tiff_metadata(tif, page, number, ome)
            images.append(
                ImageFile(
                    data=data,
                    rgb=rgb,
                    axes=axes,
                    spacing=record["spacing"],
                    units=record["units"],
                    channel_names=tuple(record["channel_names"]),
                    alpha=alpha,
                    icc_profile=record["icc"],
                    provenance=record["provenance"],
                    format=file_format,
                    series=number,
                    binning=_ome_binning(ome[number]) if number < len(ome) else None,
                )
            )
    return images


def _tiff_layout(data: np.ndarray, axes: str, page: Any) -> tuple[np.ndarray, str, bool, bool]:
    """Native byte order, bool -> uint8, MinIsWhite, palette, CMYK, samples last."""
    import tifffile

    photometric = getattr(page, "photometric", None)
    PHOTOMETRIC = tifffile.PHOTOMETRIC
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    while len(axes) > 2 and axes[-1] not in "XS" and data.shape[-1] == 1 and "X" in axes[:-1]:
        data, axes = data[..., 0], axes[:-1]  # (Y, X, 1) written as "YXQ": one grey image
    if photometric == PHOTOMETRIC.MINISWHITE and "S" not in axes:
        data = ~data if data.dtype == bool else (np.iinfo(data.dtype).max - data if data.dtype.kind in "ui" else data)
    if data.dtype == bool:
        data = data.astype(np.uint8) * np.uint8(255)
    if photometric == PHOTOMETRIC.PALETTE and page.colormap is not None and data.dtype.kind == "u":
        colormap = np.asarray(page.colormap)
        if colormap.max() < 256:
            colormap = colormap.astype(np.uint8)
        elif not (colormap % 257).any():
            colormap = (colormap // 257).astype(np.uint8)
        data = np.moveaxis(colormap[:, data], 0, -1)
        axes = axes + "S"
    samples = axes.index("S") if "S" in axes else None
    if samples is not None:
        data = np.moveaxis(data, samples, -1)
        axes = axes[:samples] + axes[samples + 1 :] + "S"
        n = data.shape[-1]
        if photometric == PHOTOMETRIC.SEPARATED and n >= 4:  # CMYK (no ICC transform: the naive one)
            data = _cmyk_to_rgb(data[..., :4])
            n = 3
        if n == 1:  # (Y, X, 1): a grey image with a sample axis of length 1
            return np.ascontiguousarray(data[..., 0]), axes[:-1], False, False
        if n == 2:  # grey + alpha -> RGBA
            grey, alpha = data[..., :1], data[..., 1:]
            return np.concatenate([grey, grey, grey, alpha], axis=-1), axes, True, True
        if n in (3, 4):
            extras = tuple(getattr(page, "extrasamples", ()) or ())
            return np.ascontiguousarray(data), axes, True, n == 4 and bool(extras)
        # More samples than colour: they are channels.
        data = np.moveaxis(data, -1, -3)
        return np.ascontiguousarray(data), axes[:-3] + "C" + axes[-3:-1], False, False
    return np.ascontiguousarray(data), axes, False, False


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    top = float(np.iinfo(cmyk.dtype).max) if cmyk.dtype.kind in "ui" else 1.0
    c, m, y, k = (cmyk[..., i].astype(np.float64) / top for i in range(4))
    rgb = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=-1) * top
    return np.rint(rgb).astype(cmyk.dtype) if cmyk.dtype.kind in "ui" else rgb.astype(cmyk.dtype)


def _ome_pixels(tif: Any) -> list[dict[str, Any]]:
    import tifffile

    try:
        images = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
    except Exception:  # a broken OME header: the pixels are still readable
        return []
    images = images if isinstance(images, list) else [images]
    return [dict(image.get("Pixels", {}), Description=image.get("Description")) for image in images]


def _ome_binning(pixels: dict[str, Any]) -> int | None:
    """The square camera binning all of an OME ``Pixels``' channels record ("4x4" -> 4), else None."""
    channels = pixels.get("Channel") or []
    channels = channels if isinstance(channels, list) else [channels]
    found = set()
    for channel in channels:
        settings = channel.get("DetectorSettings") if isinstance(channel, dict) else None
        text = str(settings.get("Binning", "")) if isinstance(settings, dict) else ""
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
        found.add(int(match[1]) if match and match[1] == match[2] else None)
    binning = found.pop() if len(found) == 1 else None
    return binning if binning is not None and binning >= 2 else None


def file_binning(path: "str | os.PathLike", plane: tuple[int, int] | None = None) -> int | None:
    """The camera binning an OME-TIFF file records for its first image (see ``ImageFile.binning``), or None.

    Reads only the header. ``plane``: the (height, width) the image must
    have (a layer whose data were replaced by another size no longer holds
    the file's pixels). None for any other file, another size, or a file
    that cannot be read.
    """
    import tifffile

    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with tifffile.TiffFile(str(path)) as tif:
            if not tif.is_ome or not tif.series:
                return None
            series = tif.series[0]
            size = (series.shape[series.axes.index("Y")], series.shape[series.axes.index("X")])
            ome = _ome_pixels(tif)
    except (OSError, ValueError, tifffile.TiffFileError):  # ValueError: also no Y or X axis
        return None
    if not ome or (plane is not None and tuple(plane) != size):
        return None
    return _ome_binning(ome[0])


def _tiff_metadata(tif: Any, page: Any, number: int, ome: list[dict[str, Any]]) -> dict[str, Any]:
    """spacing, units, channel names, ICC profile and provenance of one series."""
    import tifffile

    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    names: list[str] = []
    provenance = None
    texts: list[str] = []
    if ome and number < len(ome):
        pixels = ome[number]
        for axis in "XYZ":
            size = pixels.get(f"PhysicalSize{axis}")
            if size is not None:
                spacing[axis] = float(size)
                units[axis] = _unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        channels = pixels.get("Channel") or []
        channels = channels if isinstance(channels, list) else [channels]
        names = [str(c.get("Name")) for c in channels if isinstance(c, dict) and c.get("Name") is not None]
        if pixels.get("Description"):
            texts.append(str(pixels["Description"]))
    elif tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = _unit(meta.get("unit", ""))
        x_res, y_res = page.resolution if hasattr(page, "resolution") else (1.0, 1.0)
        if unit or (x_res, y_res) != (1.0, 1.0):
            spacing.update(X=1.0 / x_res, Y=1.0 / y_res)
            units.update(X=unit, Y=_unit(meta.get("yunit", unit)))
        if "spacing" in meta:
            spacing["Z"] = float(meta["spacing"])
            units["Z"] = _unit(meta.get("zunit", unit))
        if meta.get("Labels"):
            names = [str(label) for label in meta["Labels"]]
        if meta.get("Info"):
            texts.append(str(meta["Info"]))
    else:
        unit_code = getattr(page, "resolutionunit", None)
        resolution_units: dict[Any, str] = {tifffile.RESUNIT.INCH: "inch", tifffile.RESUNIT.CENTIMETER: "cm"}
        unit = resolution_units.get(unit_code, "")
        if unit and hasattr(page, "resolution"):
            x_res, y_res = page.resolution
            if x_res > 0 and y_res > 0:
                spacing.update(X=1.0 / x_res, Y=1.0 / y_res)
                units.update(X=unit, Y=unit)
    if tif.is_shaped and tif.shaped_metadata:
        shaped = tif.shaped_metadata[min(number, len(tif.shaped_metadata) - 1)]
        texts.append(json.dumps(shaped))
    provenance, record = None, None
    for text in texts:
        found, found_record = _parse_description(text)
        provenance = provenance or found
        record = record or found_record
    if record:  # what the format itself has no field for
        for axis, size in (record.get("spacing") or {}).items():
            spacing.setdefault(axis, float(size))
        for axis, unit in (record.get("units") or {}).items():
            units.setdefault(axis, str(unit))
        names = names or [str(n) for n in record.get("channel_names") or []]
    icc = page.tags.get(_TAG_ICC)
    return {
        "spacing": spacing,
        "units": units,
        "channel_names": names,
        "icc": bytes(icc.value) if icc is not None else None,
        "provenance": provenance,
    }


def _parse_description(text: str | bytes | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(textsr provenance, textsr file record) from a JSON description, or (None, None)."""
    if not text:
        return None, None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(values, dict):
        return None, None
    provenance = values.get(_JSON_KEY)
    record = values.get(_FILE_KEY)
    return (provenance if isinstance(provenance, dict) else None), (record if isinstance(record, dict) else None)


# --------------------------------------------------------------------------- Pillow
@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Let Pillow open what our own limit allows (its bomb check would refuse at 179 Mpx)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max(max_pixels, saved or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _read_pillow(path: Path, max_pixels: int | None) -> ImageFile:
    from PIL import Image, ImageOps

    with _pillow_limit(max_pixels), Image.open(path) as opened:
        width, height = opened.size
        frames = getattr(opened, "n_frames", 1)
        _check_pixels(path, (height, width), False, max_pixels)
        info = dict(opened.info)
        file_format = (opened.format or path.suffix.lstrip(".")).lower()
        rawmode = _png_rawmode(opened) if file_format == "png" else ""  # before getexif(), which may decode
        quality = jpeg_quality(opened) if file_format == "jpeg" else None
        orientation = int(opened.getexif().get(0x0112, 1) or 1)
        if rawmode.startswith(("RGB;16", "RGBA;16", "LA;16")):
            # 16-bit colour PNG: Pillow keeps 8 bits; imagecodecs decodes all 16.
            import imagecodecs

            data = imagecodecs.png_decode(path.read_bytes())
            if not data.dtype.isnative:
                data = data.astype(data.dtype.newbyteorder("="))
            data = _orient(data, orientation)
            mode = {2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[-1]]
        else:
            if frames > 1:
                warnings.warn(f"{path.name}: {frames} frames, only the first is read", stacklevel=3)
            image = ImageOps.exif_transpose(opened) or opened
            mode = image.mode
            if mode == "1":
                image = image.convert("L")  # 0/255
            elif mode in ("P", "PA"):
                image = image.convert("RGBA" if mode == "PA" or "transparency" in info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            data = np.asarray(image)
            mode = image.mode
            if mode.startswith("I;16"):
                data = data.astype(np.uint16)  # Pillow may give a big-endian view
            elif mode == "I" and rawmode.startswith("I;16"):
                data = data.astype(np.uint16)
    if mode == "LA":  # grey + alpha -> RGBA
        grey, alpha = data[..., :1], data[..., 1:]
        data = np.concatenate([grey, grey, grey, alpha], axis=-1)
    elif "transparency" in info and mode in ("L", "RGB", "I;16", "I;16B", "I", "RGB;16"):
        data = _colour_key_alpha(data, info["transparency"], rawmode)
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    provenance, record = None, None
    for key in (_JSON_KEY, "comment", "Description", "description"):
        if key in info:
            found, found_record = _parse_description(info[key])
            if key == _JSON_KEY and found is None and found_record is None:  # written before textsr_file existed
                found, _ = _parse_description(json.dumps({_JSON_KEY: json.loads(info[key])}))
            provenance, record = provenance or found, record or found_record
    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    if record:
        spacing = {k: float(v) for k, v in (record.get("spacing") or {}).items()}
        units = {k: str(v) for k, v in (record.get("units") or {}).items()}
    elif info.get("dpi"):
        x_dpi, y_dpi = (float(v) for v in info["dpi"])
        if x_dpi > 0 and y_dpi > 0 and (x_dpi, y_dpi) != (1.0, 1.0):
            spacing, units = {"X": 1.0 / x_dpi, "Y": 1.0 / y_dpi}, {"X": "inch", "Y": "inch"}
    return ImageFile(
        data=np.ascontiguousarray(data),
        rgb=rgb,
        axes="YXS" if rgb else "YX",
        spacing=spacing,
        units=units,
        channel_names=tuple(record.get("channel_names") or ()) if record else (),
        alpha=rgb and data.shape[-1] == 4,
        icc_profile=info.get("icc_profile"),
        orientation=orientation,
        provenance=provenance,
        format=file_format,
        jpeg_quality=quality,
    )


# The luminance quantization table of the JPEG standard (ITU-T T.81, Annex K, Table K.1), natural order;
# the IJG library (libjpeg, Pillow, OpenCV, most cameras' software) scales it by the quality setting.
_JPEG_LUMINANCE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
).reshape(-1)


def _ijg_luminance_table(quality: int) -> np.ndarray:
    """The IJG library's luminance table at ``quality`` (1-100): jcparam.c's ``jpeg_quality_scaling``."""
    scaling = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_JPEG_LUMINANCE_TABLE * scaling + 50) // 100, 1, 255)


def jpeg_quality(image: "str | os.PathLike | Any") -> int | None:
    """The IJG quality (1-100) of a JPEG file, from its luminance quantization table.

    ``image``: a path (only the header is read), or an open Pillow image,
    whose ``quantization`` holds a JPEG's tables (natural order, 64 values
    each). Returns the quality whose IJG-scaled standard table (ITU-T T.81 Annex K,
    as libjpeg's ``jpeg_set_quality`` makes it) is closest to table 0 in
    mean absolute difference: exact for files written by libjpeg, Pillow or
    OpenCV, the nearest equivalent for encoders with tables of their own.
    None when the image carries no 64-entry table 0 (not a JPEG), and for a
    path that is not a readable ``.jpg``/``.jpeg`` file (a folder, a zarr, a
    file moved away: the reader says what is wrong when it reads it).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        if Path(image).suffix.lower() not in JPEG_SUFFIXES:
            return None
        try:
            with Image.open(image) as opened:
                return jpeg_quality(opened)
        except OSError:
            return None
    tables = getattr(image, "quantization", None) or {}
    table = tables.get(0)
    if table is None or len(table) != 64:
        return None
    table = np.asarray(table, dtype=np.int64)
    errors = [np.abs(_ijg_luminance_table(q) - table).mean() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


# jpeg_quality_from_pixels: blocks examined (spread over the image), the
# least number of quantized coefficients and of distinct (frequency, level)
# pairs for an answer, the least mean alignment (1: every coefficient on a
# multiple of its step), and the clipped samples a used block may hold.
# Chosen on the 34 held-out photographs and checked on all 291 training
# photographs (docs/results/jpeg-from-pixels.txt).
_PIXEL_JPEG_MAX_BLOCKS = 1024
_PIXEL_JPEG_GRID_BLOCKS = 256  # per candidate grid offset
_PIXEL_JPEG_MIN_COEFFICIENTS = 64
_PIXEL_JPEG_MIN_ALIGNMENT = 0.35
_PIXEL_JPEG_MIN_LEVELS = 16
_PIXEL_JPEG_MAX_CLIPPED = 8  # samples at 0 or 255 in a block that is still used
_IJG_TABLES = np.stack([_ijg_luminance_table(q) for q in range(1, 101)]).astype(np.float64)
_IJG_TABLES_TURNED = _IJG_TABLES.reshape(100, 8, 8).transpose(0, 2, 1).reshape(100, 64)


def _dct8_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix (JPEG's FDCT, ITU-T T.81 A.3.3, in matrix form)."""
    n = np.arange(8)
    matrix = np.sqrt(2 / 8) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 16)
    matrix[0] /= np.sqrt(2)
    return matrix


def _blocks_on_grid(pixels: np.ndarray, dy: int, dx: int, limit: int) -> np.ndarray:
    """Up to ``limit`` 8x8 blocks of the grid that starts at pixel (dy, dx), spread over the image.

    Returns their level-shifted JFIF luminance, float64 (n, 8, 8); blocks with
    more than ``_PIXEL_JPEG_MAX_CLIPPED`` colour samples at 0 or 255 are left
    out (decoding clamps them, which moves their coefficients off the steps).
    """
    rows, cols = (pixels.shape[0] - dy) // 8, (pixels.shape[1] - dx) // 8
    chosen = np.arange(rows * cols)
    if len(chosen) > limit:
        chosen = np.linspace(0, len(chosen) - 1, limit).astype(np.int64)
    offsets = np.arange(8)
    ys = (dy + chosen // cols * 8)[:, None, None] + offsets[None, :, None]
    xs = (dx + chosen % cols * 8)[:, None, None] + offsets[None, None, :]
    blocks = pixels[ys, xs]  # (n, 8, 8[, C]): only the chosen blocks are read
    if blocks.ndim == 4:
        blocks = blocks[..., :3]  # not alpha
    clipped = ((blocks == 0) | (blocks == 255)).reshape(len(blocks), -1).sum(axis=1)
    blocks = blocks[clipped <= _PIXEL_JPEG_MAX_CLIPPED].astype(np.float64)
    if blocks.ndim == 4:
        blocks = blocks @ np.array([0.299, 0.587, 0.114])
    return blocks - 128  # JPEG's level shift


def _block_dct(blocks: np.ndarray) -> np.ndarray:
    """(n, 8, 8) -> the blocks' 2-D DCT-II coefficients, (n, 64) in natural (row-major) order."""
    dct = _dct8_matrix()
    return (dct @ blocks @ dct.T).reshape(-1, 64)


_HIGH_FREQUENCIES = (np.add.outer(np.arange(8), np.arange(8)) >= 4).reshape(-1)


def _jpeg_grid(pixels: np.ndarray) -> tuple[int, int]:
    """Where the 8x8 grid of a JPEG the pixels went through starts (dy, dx in 0..7); (0, 0) if none shows.

    On JPEG's grid most high-frequency coefficients are quantized to zero and
    stay within the rounding of it; off the grid, block edges spread over all
    of them. The offset with the most high-frequency coefficients under 1 in
    256 blocks wins (ties: the image's own origin, then the first found).
    """
    share = np.zeros((8, 8))
    for dy in range(8):
        for dx in range(8):
            blocks = _blocks_on_grid(pixels, dy, dx, _PIXEL_JPEG_GRID_BLOCKS)
            if len(blocks):
                share[dy, dx] = float((np.abs(_block_dct(blocks)[:, _HIGH_FREQUENCIES]) < 1.0).mean())
    best = np.unravel_index(int(np.argmax(share)), share.shape)
    return (0, 0) if share[0, 0] >= share[best] else (int(best[0]), int(best[1]))


def jpeg_quality_from_pixels(pixels: np.ndarray) -> int | None:
    """The IJG quality (1-100) of the JPEG compression an 8-bit image's pixels went through, or None.

    ``pixels``: uint8 (Y, X) grey or (Y, X, 3|4) RGB(A), e.g. a PNG of a
    video frame, a screenshot of a JPEG, a napari layer made from an array.
    JPEG quantizes each 8x8 block's DCT coefficients of the luminance to
    multiples of its quantization table (ITU-T T.81), and decoding keeps
    them there to within the rounding of the pixels; this function (the
    quantizer estimation of Fan and de Queiroz, "Identification of bitmap
    compression history", IEEE Trans. Image Process. 12(2), 2003, here
    against the IJG tables) finds where the 8x8 grid lies (a crop of a
    JPEG need not start on it: the offset whose blocks have the most
    high-frequency coefficients near zero), takes the luminance (JFIF
    weights) of up to 1024 blocks on that grid, leaves out blocks with more
    than 8 samples at 0 or 255 (decoding clamps them off the steps) and
    repeated blocks, and for each quality's IJG table, as saved and
    transposed (an image turned by 90 degrees after decoding), measures how
    close the AC coefficients that quantize to a non-zero level lie to
    multiples of their steps (the mean of cos(2 pi d / Q)). The quality with
    the best alignment is returned when that is at least 0.35 over at least
    64 coefficients at 16 or more distinct (frequency, level) pairs; flips
    and 90-degree turns are seen like the original. Never-compressed images,
    images resized after compression, tables of other encoders and too
    little evidence (flat or very smooth images; tiny ones: under 16 pixels
    a side always, under about 32 mostly) give None. Other dtypes and shapes
    give None too (JPEG holds 8-bit samples). Deterministic; 0.1-0.3 s at
    any image size (one core).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        return None
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        return None
    if pixels.shape[0] < 16 or pixels.shape[1] < 16:
        return None
    dy, dx = _jpeg_grid(pixels)
    coefficients = _block_dct(_blocks_on_grid(pixels, dy, dx, _PIXEL_JPEG_MAX_BLOCKS))
    # Repeated blocks (flat areas, tiled patterns) are one piece of evidence, not many.
    coefficients = np.unique(np.round(coefficients, 3), axis=0)
    best_quality, best_alignment = None, _PIXEL_JPEG_MIN_ALIGNMENT
    best_levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # The tables as saved, and transposed: an image turned by 90 degrees after
    # decoding (a phone photograph set upright) has its blocks transposed.
    for quality, table in [*enumerate(_IJG_TABLES, start=1), *enumerate(_IJG_TABLES_TURNED, start=1)]:
        # Not DC (a near-constant image's block means all sit near one value)
        # and not steps of 1 (met by any rounded pixel).
        used = (table >= 2) & (np.arange(64) > 0)
        steps = table[used]
        values = coefficients[:, used]
        quantized = np.abs(values) >= steps / 2
        count = int(quantized.sum())
        if count < _PIXEL_JPEG_MIN_COEFFICIENTS:
            continue
        alignment = float(np.cos(2 * np.pi * values / steps)[quantized].sum()) / count
        if alignment >= best_alignment:
            best_quality, best_alignment, best_levels = quality, alignment, (values, steps, quantized)
    if best_levels is None:
        return None
    # Evidence needs many (frequency, level) pairs: a ramp or a pattern puts
    # every block's coefficient of a frequency at one value, and so does a
    # very smooth image; the best table's alignment alone would not tell.
    values, steps, quantized = best_levels
    levels = np.round(values / steps)[quantized] * 64 + np.nonzero(quantized)[1]
    return best_quality if len(np.unique(levels)) >= _PIXEL_JPEG_MIN_LEVELS else None


@dataclass(frozen=True)
class JpegEvidence:
    """The JPEG compression an input went through, and where that was read.

    quality: the IJG quality (1-100).
    from_pixels: True when estimated from the pixels' 8x8 blocks
        (:func:`jpeg_quality_from_pixels`), False when read from a JPEG
        file's quantization table (:func:`jpeg_quality`, exact).
    """

    quality: int
    from_pixels: bool

    def record(self) -> dict[str, Any]:
        """JSON-ready provenance: ``{"input_jpeg_quality": 50, "input_jpeg_quality_from": "file" | "pixels"}``."""
        return {"input_jpeg_quality": self.quality, "input_jpeg_quality_from": "pixels" if self.from_pixels else "file"}

    def describe(self) -> str:
        """A clause for messages: "the input is a JPEG of quality 50", or the estimate's."""
        if self.from_pixels:
            return f"the input's 8x8 blocks show JPEG compression of quality about {self.quality}"
        return f"the input is a JPEG of quality {self.quality}"


def jpeg_evidence(file_quality: int | None, pixels: Any = None) -> JpegEvidence | None:
    """What is known of the JPEG compression an input went through: the heavier of its file's and its pixels'.

    ``file_quality``: the quality read from the input's JPEG file
    (:attr:`ImageFile.jpeg_quality`, napari's source file), None when it is
    not a JPEG file. ``pixels``: the image as an in-memory numpy array, 8-bit
    (Y, X) or (Y, X, 3|4) (:func:`jpeg_quality_from_pixels`); anything else
    (lazy arrays, stacks, None) is not examined. The pixels win when they
    show a lower quality than the file's (a JPEG re-saved at a higher quality
    keeps the earlier compression in its blocks); the file wins when they
    show none (too small or too clipped to tell). None when neither tells.
    """
    seen = jpeg_quality_from_pixels(pixels) if isinstance(pixels, np.ndarray) else None
    if seen is not None and (file_quality is None or seen < file_quality):
        return JpegEvidence(seen, from_pixels=True)
    if file_quality is not None:
        return JpegEvidence(int(file_quality), from_pixels=False)
    return None


def _png_rawmode(image: Any) -> str:
    """Pillow's raw mode of a PNG ("RGB;16B" for 48-bit colour, "L;2" for 2-bit grey, ...)."""
    try:
        tile = image.tile[0]
        args = tile.args if hasattr(tile, "args") else tile[3]
        return str(args[0] if isinstance(args, tuple) else args)
    except (IndexError, AttributeError, TypeError):
        return ""


def _colour_key_alpha(data: np.ndarray, key: Any, rawmode: str) -> np.ndarray:
    """tRNS colour key -> alpha channel: RGBA (grey replicated), keyed pixels transparent."""
    bits = re.search(r";(\d+)", rawmode)
    depth = int(bits.group(1)) if bits else 8
    key = np.atleast_1d(np.asarray(key, dtype=np.int64))
    if depth < 8:  # Pillow scales 1/2/4-bit grey to 0..255; the key is in the file's scale
        key = key * 255 // ((1 << depth) - 1)
    colour = data if data.ndim == 3 else data[..., None]
    keyed = (colour == key.astype(colour.dtype)).all(axis=-1)
    top = np.iinfo(data.dtype).max if data.dtype.kind in "ui" else 1
    alpha = np.where(keyed, 0, top).astype(data.dtype)
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    return np.concatenate([colour, alpha[..., None]], axis=-1)


def _orient(data: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to a (Y, X[, S]) array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        return data[:, ::-1]
    if orientation == 3:
        return data[::-1, ::-1]
    if orientation == 4:
        return data[::-1]
    if orientation == 5:
        return np.swapaxes(data, 0, 1)
    if orientation == 6:
        return np.swapaxes(data, 0, 1)[:, ::-1]
    if orientation == 7:
        return np.swapaxes(data, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.swapaxes(data, 0, 1)[::-1]
    return data


# --------------------------------------------------------------------------- OME-Zarr
_NGFF_UNITS = {
    "µm": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "inch": "inch",
}
_NGFF_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def _read_zarr(path: Path, max_pixels: int | None) -> ImageFile:
    from napari_textsr import ngff

    image = ngff.read_ome_zarr(path)
    letters = "".join(a.name[:1].upper() if a.name[:1].upper() in _NGFF_TYPES else "Q" for a in image.axes)
    y, x = image.spatial_axes()
    if (y, x) != (len(letters) - 2, len(letters) - 1):
        raise ValueError(f"{path}: y and x must be the last two axes to upscale, axes are {image.axis_names}")
    letters = letters[:-2] + "YX"
    _check_pixels(path, image.shape, False, max_pixels)
    spacing, units, origin = {}, {}, {}
    reverse = {v: k for k, v in _NGFF_UNITS.items()}
    for letter, axis, size, shift in zip(letters, image.axes, image.scale, image.translation):
        if letter in "ZYX":
            spacing[letter], origin[letter] = float(size), float(shift)
            units[letter] = reverse.get(axis.unit or "", axis.unit or "")
    attrs = image.attrs
    stored = attrs.get(_FILE_KEY)
    record: dict[str, Any] = stored if isinstance(stored, dict) else {}
    data: Any = image.data
    rgb = bool(record.get("rgb")) and letters == "CYX" and image.shape[0] in (3, 4)
    if rgb:  # written channel-first by write_image_file; napari wants samples last
        data, letters = np.moveaxis(np.asarray(data), 0, -1), "YXS"
    return ImageFile(
        data=data,
        rgb=rgb,
        axes=letters,
        spacing=spacing,
        units=units,
        channel_names=tuple(record.get("channel_names") or ()),
        alpha=rgb and data.shape[-1] == 4,
        provenance=attrs.get(_JSON_KEY) if isinstance(attrs.get(_JSON_KEY), dict) else None,
        format="ome-zarr",
        origin=origin,
    )


def ngff_geometry(image: ImageFile) -> tuple[list[Any], list[float], list[float], tuple[int, ...]]:
    """(NGFF axes, scale, translation, channel-first shape) for writing ``image`` as OME-Zarr.

    RGB(A) is stored channel-first (c, y, x). Raises ValueError for axes NGFF
    cannot hold in its order (time, channel, space): write a .tif instead.
    """
    from napari_textsr import ngff

    letters = image.axes[:-1] if image.rgb else image.axes
    shape = tuple(image.data.shape[:-1] if image.rgb else image.data.shape)
    if image.rgb:
        if letters != "YX":
            raise ValueError("OME-Zarr output of an RGB stack is not supported; write a .tif")
        letters, shape = "CYX", (image.data.shape[-1],) + shape
    rank = {"T": 0, "C": 1, "Z": 2, "Y": 3, "X": 4}
    if any(a not in rank for a in letters) or [rank[a] for a in letters] != sorted(rank[a] for a in letters):
        raise ValueError(f"axes {letters!r} are not in OME-Zarr's order (t, c, z, y, x); write a .tif")
    axes = [
        ngff.Axis(
            a.lower(),
            _NGFF_TYPES[a],
            _NGFF_UNITS.get(image.units.get(a, ""), image.units.get(a) or None) if _NGFF_TYPES[a] == "space" else None,
        )
        for a in letters
    ]
    scale = [float(image.spacing.get(a, 1.0)) for a in letters]
    translation = [float(image.origin.get(a, 0.0)) for a in letters]
    return axes, scale, translation, shape


class ChannelFirstSink:
    """``out=`` adapter: takes napari-layout writes (Y, X[, C]) and stores them in a (C, Y, X) array."""

    def __init__(self, target: Any, rgb: bool) -> None:
        self.target, self.rgb = target, rgb
        shape = tuple(target.shape)
        self.shape = shape[1:] + shape[:1] if rgb else shape
        self.dtype = np.dtype(target.dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, values: Any) -> None:
        if not self.rgb:
            self.target[key] = values
            return
        key = key if isinstance(key, tuple) else (key,)
        values = np.asarray(values)
        channels = key[2] if len(key) > 2 else slice(None)
        if isinstance(channels, (int, np.integer)):
            values = values[..., None]
            channels = slice(int(channels), int(channels) + 1)
        self.target[(channels, key[0], key[1])] = np.moveaxis(values, -1, 0)


def create_zarr_output(path: str | os.PathLike, image: ImageFile, *, levels: int = 1) -> Any:
    """An empty NGFF 0.5 OME-Zarr for ``image`` (its data may be a placeholder of the output's
    shape and dtype) and the ``out=`` sink to fill it: returns (ngff image, sink)."""
    from napari_textsr import ngff

    axes, scale, translation, shape = ngff_geometry(image)
    chunks = tuple(1 if a.type != "space" or a.name == "z" else 512 for a in axes)
    if image.rgb:
        chunks = (shape[0],) + chunks[1:]
    attrs = {_FILE_KEY: image.file_record()}
    if image.provenance is not None:
        attrs[_JSON_KEY] = image.provenance
    target = ngff.create_ome_zarr(
        path,
        shape,
        image.data.dtype,
        axes=axes,
        scale=scale,
        translation=translation,
        chunks=chunks,
        n_levels=levels,
        attrs=attrs,
        overwrite=True,
    )
    return target, ChannelFirstSink(target.data, image.rgb)


def finish_zarr_output(target: Any, provenance: dict[str, Any] | None) -> None:
    """Record the provenance and compute the pyramid levels of an output made by :func:`create_zarr_output`."""
    from napari_textsr import ngff

    if provenance is not None:
        ngff.update_attrs(target, {_JSON_KEY: provenance})
    if len(target.arrays) > 1:
        ngff.fill_pyramid(target)


# =========================================================================== writing
def write_image_file(
    path: str | os.PathLike,
    image: ImageFile | np.ndarray,
    rgb: bool | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an image in the format the suffix names; returns the path.

    image: an :class:`ImageFile` (its spacing, units, channel names, alpha,
        ICC profile and provenance are written too) or a bare array
        (*leading, Y, X[, 3|4]) with ``rgb``.
    metadata: the provenance to store (overrides ``image.provenance``).

    TIFF holds every dtype and stack (ImageJ hyperstack when the physical
    units need it and ImageJ can hold the dtype and axes, else OME-TIFF, else
    tifffile's shaped TIFF; BigTIFF above 4 GB); PNG 8/16-bit grey, RGB,
    RGBA; JPEG 8-bit grey or RGB (quality 95). Raises ValueError (the same as
    :func:`check_output`) for anything a format cannot hold.
    """
    if not isinstance(image, ImageFile):
        data = np.asarray(image)
        is_rgb = bool(rgb) if rgb is not None else (data.ndim >= 3 and data.shape[-1] in (3, 4))
        image = ImageFile(data, is_rgb, alpha=is_rgb and data.shape[-1] == 4)
    if metadata is not None:
        image = dataclasses.replace(image, provenance=metadata)
    path = Path(path)
    data = image.data
    channels = data.shape[-1] if image.rgb else 1
    check_output(path, data.dtype, image.rgb, channels=channels, stack=bool(image.leading_axes))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in ZARR_SUFFIXES:
        target, sink = create_zarr_output(path, image)
        sink[(slice(None),) * image.data.ndim] = np.asarray(image.data)
        finish_zarr_output(target, None)
    elif suffix in TIFF_SUFFIXES:
        _write_tiff(path, [image])
    elif suffix in PNG_SUFFIXES:
        _write_png(path, image)
    else:
        _write_jpeg(path, image)
    return path


def write_tiff_series(path: str | os.PathLike, images: list[ImageFile]) -> Path:
    """Several series (e.g. pages of different sizes) into one TIFF, each with its metadata."""
    path = Path(path)
    check_output(path, images[0].data.dtype, images[0].rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_tiff(path, images)
    return path


def tiff_flavour(image: ImageFile, *, imagej_allowed: bool = True) -> str:
    """Which TIFF kind holds this image and its metadata: "imagej", "ome" or "shaped".

    ImageJ where the file was ImageJ or has physical units (and ImageJ holds
    the dtype and axes; not for tiled or multi-series files: ``imagej_allowed``),
    OME-TIFF where it was OME or ImageJ cannot, tifffile's shaped TIFF otherwise.
    """
    dtype, axes = image.data.dtype, image.axes
    ordered = "".join(a for a in "TZCYXS" if a in axes) == axes
    imagej_ok = (
        ordered
        and dtype in (np.uint8, np.uint16, np.float32)
        and (not image.rgb or (dtype == np.uint8 and image.data.shape[-1] == 3))
    )
    ome_ok = (
        set(axes) <= set("TZCYXS")
        and len(set(axes)) == len(axes)
        and dtype.kind in "uif"
        and dtype.itemsize <= 8
        and dtype not in (np.float16, np.int64, np.uint64)
    )
    physical = any(image.units.get(a, "") not in ("", "inch", "cm") for a in "XYZ")
    imagej_ok = imagej_ok and imagej_allowed
    if image.format == "ome" and ome_ok:
        return "ome"
    if image.format == "imagej" or physical:
        return "imagej" if imagej_ok else "ome" if ome_ok else "shaped"
    return "shaped"


def _description(image: ImageFile) -> str:
    values: dict[str, Any] = {_FILE_KEY: image.file_record()}
    if image.provenance is not None:
        values[_JSON_KEY] = image.provenance
    return json.dumps(values)


def _write_tiff(path: Path, images: list[ImageFile]) -> None:
    import tifffile

    total = sum(i.data.nbytes for i in images)
    several = len(images) > 1
    flavours = {tiff_flavour(i, imagej_allowed=not several) for i in images}
    flavour = "ome" if flavours == {"ome"} else "shaped" if several else flavours.pop()
    options: dict[str, Any] = {flavour: True} if flavour in ("imagej", "ome") else {}
    with tifffile.TiffWriter(str(path), bigtiff=total > 2**32 - 2**25, **options) as writer:
        for image in images:
            writer.write(image.data, **tiff_write_kwargs(image, flavour))


def tiff_write_kwargs(image: ImageFile, flavour: str) -> dict[str, Any]:
    """tifffile ``TiffWriter.write`` keywords storing ``image``'s metadata in a TIFF of ``flavour``.

    (The writer itself is opened with ``imagej=True`` / ``ome=True`` for those flavours.)
    """
    kwargs: dict[str, Any] = {"photometric": "rgb" if image.rgb else "minisblack"}
    if image.rgb and image.alpha:
        kwargs["extrasamples"] = ("unassalpha",)
    if image.icc_profile:
        kwargs["extratags"] = [(_TAG_ICC, 7, len(image.icc_profile), image.icc_profile, True)]
    sx, sy = image.spacing.get("X"), image.spacing.get("Y")
    unit = image.units.get("X", "")
    if flavour == "imagej":
        metadata: dict[str, Any] = {"axes": image.axes, "Info": _description(image)}
        if sx and sy:
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
            metadata["unit"] = "micron" if unit == "µm" else unit or "pixel"
        if "Z" in image.spacing:
            metadata["spacing"] = image.spacing["Z"]
        if image.channel_names:
            metadata["Labels"] = list(image.channel_names)
        kwargs["metadata"] = metadata
    elif flavour == "ome":
        metadata = {"axes": image.axes, "Description": _description(image)}
        for axis in "XYZ":
            if axis in image.spacing:
                metadata[f"PhysicalSize{axis}"] = image.spacing[axis]
                if image.units.get(axis):
                    metadata[f"PhysicalSize{axis}Unit"] = image.units[axis]
        if image.channel_names and "C" in image.axes:
            metadata["Channel"] = {"Name": list(image.channel_names)}
        kwargs["metadata"] = metadata
    else:
        if sx and sy and unit in ("inch", "cm"):
            kwargs.update(resolution=(1.0 / sx, 1.0 / sy), resolutionunit="CENTIMETER" if unit == "cm" else "INCH")
        kwargs["metadata"] = {
            "axes": image.axes,
            _FILE_KEY: image.file_record(),
            **({_JSON_KEY: image.provenance} if image.provenance is not None else {}),
        }
    return kwargs


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _write_png(path: Path, image: ImageFile) -> None:
    from PIL import Image, PngImagePlugin

    data = image.data
    text = _description(image)
    dpi = _dpi(image)
    if data.dtype == np.uint16 and image.rgb:
        # Pillow writes no 16-bit colour PNG; imagecodecs does, and the text,
        # pHYs and iCCP chunks (PNG spec 11.3) go in right after IHDR.
        import imagecodecs

        encoded = imagecodecs.png_encode(np.ascontiguousarray(data))
        chunks = _png_chunk(b"tEXt", _JSON_KEY.encode() + b"\0" + text.encode("latin-1", "replace"))
        if dpi:
            per_metre = [int(round(d / 0.0254)) for d in dpi]
            chunks += _png_chunk(b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1))
        if image.icc_profile:
            chunks += _png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(image.icc_profile))
        ihdr_end = 8 + 8 + 13 + 4
        path.write_bytes(encoded[:ihdr_end] + chunks + encoded[ihdr_end:])
        return
    picture = Image.fromarray(data)
    if data.dtype == np.uint16 and picture.mode != "I;16":
        picture = Image.fromarray(data.astype("<u2")).convert("I;16")
    info = PngImagePlugin.PngInfo()
    info.add_text(_JSON_KEY, text)
    options: dict[str, Any] = {"pnginfo": info}
    if dpi:
        options["dpi"] = dpi
    if image.icc_profile:
        options["icc_profile"] = image.icc_profile
    picture.save(path, **options)


def _write_jpeg(path: Path, image: ImageFile) -> None:
    from PIL import Image

    options: dict[str, Any] = {"quality": 95, "comment": _description(image).encode("utf-8")}
    dpi = _dpi(image)
    if dpi:
        options["dpi"] = dpi
    if image.icc_profile:
        options["icc_profile"] = image.icc_profile
    Image.fromarray(image.data).save(path, **options)


def _dpi(image: ImageFile) -> tuple[float, float] | None:
    """Pixels per inch for PNG pHYs / JPEG density, from any length unit."""
    sx, sy = image.spacing.get("X"), image.spacing.get("Y")
    unit = image.units.get("X", "")
    inches = {"inch": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4, "µm": 1 / 25400.0, "nm": 1 / 2.54e7, "m": 100 / 2.54}.get(
        unit
    )
    if not (sx and sy and inches):
        return None
    return (1.0 / (sx * inches), 1.0 / (sy * inches))


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


# =========================================================================== outputs larger than memory
STREAM_TILE = 256  # side of the TIFF tiles of a streamed output


class TiffTileBands:
    """A write-once output sink that turns rows of written pixels into finished TIFF tiles.

    Pass it as ``Upscaler.upscale(..., out=sink)``: it has the output's
    ``shape`` (*leading, Y, X[, C]) and ``dtype`` and takes ``sink[index] =
    values`` (index: ints for the leading axes, then Y and X slices, then
    optionally the colour axis). Memory holds only bands of ``tile`` rows that
    are not finished yet (the engine writes tiles row by row, so a few bands:
    about ``(engine tile rows + tile) * X * C`` bytes, whatever the output's
    height or number of slices). :meth:`pop_ready` yields each finished
    (tile, tile[, C]) block in TIFF order (slice, tile row, tile column),
    zero-padded at the right and bottom edges, and frees its band.
    ``peak_bytes`` records the most the bands ever held.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, rgb: bool, tile: int = STREAM_TILE) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.rgb = rgb
        self._lead = self.ndim - (3 if rgb else 2)
        self.leading = self.shape[: self._lead]
        self.height, self.width = self.shape[self._lead : self._lead + 2]
        self.channels = self.shape[-1] if rgb else 1
        self.tile = int(tile)
        self._n_bands = -(-self.height // self.tile)
        self._padded_width = -(-self.width // self.tile) * self.tile
        self._bands: dict[tuple[int, int], np.ndarray] = {}
        self._filled: dict[tuple[int, int], int] = {}
        self._next = (0, 0)
        self._n_pages = int(np.prod(self.leading)) if self.leading else 1
        self._written = 0
        self.peak_bytes = 0

    def __setitem__(self, key: Any, values: Any) -> None:
        key = key if isinstance(key, tuple) else (key,)
        lead, (ys, xs), rest = key[: self._lead], key[self._lead : self._lead + 2], key[self._lead + 2 :]
        page = int(np.ravel_multi_index(lead, self.leading)) if self.leading else 0
        y0, y1, _ = ys.indices(self.height)
        values = np.asarray(values, dtype=self.dtype)
        for band in range(y0 // self.tile, -(-y1 // self.tile)):
            top = band * self.tile
            a, b = max(y0, top), min(y1, top + self.tile)
            buffer = self._bands.get((page, band))
            if buffer is None:
                if (page, band) < self._next:
                    raise ValueError(f"rows {a}-{b} of slice {page} were written after they were handed out")
                tail = (self.channels,) if self.rgb else ()
                buffer = self._bands[(page, band)] = np.zeros((self.tile, self._padded_width) + tail, self.dtype)
                self._filled[(page, band)] = 0
                self.peak_bytes = max(self.peak_bytes, sum(x.nbytes for x in self._bands.values()))
            part = values[a - y0 : b - y0]
            buffer[(slice(a - top, b - top), xs) + rest] = part
            self._filled[(page, band)] += part.size
            self._written += part.size

    @property
    def all_written(self) -> bool:
        """Every output element has been written (the last tiles may not be handed out yet)."""
        return self._written >= int(np.prod(self.shape))

    def _complete(self, page: int, band: int) -> bool:
        rows = min(self.tile, self.height - band * self.tile)
        return self._filled.get((page, band), -1) >= rows * self.width * self.channels

    def pop_ready(self) -> Iterator[np.ndarray]:
        """Yield the finished tiles, in order, that have not been yielded yet."""
        while self._next[0] < self._n_pages and self._complete(*self._next):
            buffer = self._bands.pop(self._next)
            del self._filled[self._next]
            page, band = self._next
            self._next = (page, band + 1) if band + 1 < self._n_bands else (page + 1, 0)
            for x in range(0, self._padded_width, self.tile):
                yield buffer[:, x : x + self.tile]

    @property
    def finished(self) -> bool:
        """Every tile has been handed out."""
        return self._next[0] >= self._n_pages


def write_tiled_tiff(
    path: str | os.PathLike,
    image: ImageFile,
    tiles: Iterator[np.ndarray],
    shape: tuple[int, ...],
    tile: int = STREAM_TILE,
) -> Path:
    """Write a tiled BigTIFF from an iterator of (tile, tile[, C]) blocks in TIFF order.

    ``image`` gives the metadata (spacing, units, channel names, provenance;
    its ``data`` may be a placeholder of the right dtype and ndim, e.g. a
    ``np.broadcast_to`` view). OME-TIFF when the axes allow, else tifffile's
    shaped TIFF (ImageJ cannot hold tiles).
    """
    import tifffile

    path = Path(path)
    check_output(path, image.data.dtype, image.rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    flavour = tiff_flavour(image, imagej_allowed=False)
    kwargs = tiff_write_kwargs(image, flavour)
    with tifffile.TiffWriter(str(path), bigtiff=True, ome=flavour == "ome") as writer:
        writer.write(tiles, shape=tuple(shape), dtype=image.data.dtype, tile=(tile, tile), **kwargs)
    return path


def metadata_only(image: ImageFile, shape: tuple[int, ...], dtype: Any) -> ImageFile:
    """``image``'s metadata with a zero-memory placeholder of ``shape`` and ``dtype`` as data."""
    return dataclasses.replace(image, data=np.broadcast_to(np.zeros((), dtype=dtype), shape))
