"""Region captions from a napari Shapes or Labels layer, the small table that edits them, and run reports.

:func:`region_rows` lists the regions of a layer with captions prefilled from
its ``features`` (or ``properties``) column ``caption``; :func:`region_captions`
turns the layer and the (edited) captions into the engine's
:class:`~napari_textsr.regions.RegionCaptions` on the input image's grid;
:class:`RegionCaptionTable` is the Qt table the SR widget shows.

Shapes become labels with ``Shapes.to_labels`` (napari's own rasterisation of
every shape type; shape ``i`` is label ``i + 1``, later shapes on top). The
region layer must share the image's data grid: same scale and translate on the
two spatial axes (as when it is drawn over the image in a fresh viewer);
otherwise a ValueError says so.

:func:`job_report` is the evidence report of a widget run (the widget's
"Save report..." button).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_textsr.regions import DEFAULT_FEATHER, RegionCaptions

__all__ = ["MAX_ROWS", "RegionRow", "RegionCaptionTable", "is_region_layer", "job_report", "region_captions", "region_rows"]

# More regions than this are not listed (a segmentation of every nucleus is
# better captioned by one global caption); the table says so.
MAX_ROWS = 200


@dataclass(frozen=True)
class RegionRow:
    """One region of a layer: its label value, a description (shape type / pixel count) and its caption."""

    label: int
    what: str
    caption: str


def is_region_layer(layer: Any) -> bool:
    """True for napari Shapes and Labels layers."""
    from napari.layers import Labels, Shapes

    return isinstance(layer, (Labels, Shapes))


def _feature_captions(layer: Any) -> dict[int, str]:
    """Row -> caption from ``features["caption"]`` (or ``properties``); for Labels keyed by label value."""
    from napari.layers import Labels

    table = getattr(layer, "features", None)
    columns: dict[str, Sequence[Any]] = {}
    if table is not None and len(table.columns):
        columns = {name: list(table[name]) for name in table.columns}
    elif getattr(layer, "properties", None):
        columns = {name: list(values) for name, values in layer.properties.items()}
    if "caption" not in columns:
        return {}
    captions = ["" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c) for c in columns["caption"]]
    if isinstance(layer, Labels):
        # napari pairs feature rows with label values through an "index" column.
        keys = [int(i) for i in columns["index"]] if "index" in columns else list(range(len(captions)))
    else:
        keys = [i + 1 for i in range(len(captions))]  # shape i is label i + 1
    return {k: c for k, c in zip(keys, captions) if k > 0}


def _layer_labels(layer: Any, shape: tuple[int, int]) -> np.ndarray:
    """The layer as an integer (Y, X) label image of ``shape``."""
    from napari.layers import Labels, Shapes

    if isinstance(layer, Shapes):
        if layer.ndim != 2:
            raise ValueError(f"region shapes must be 2-D (the captions apply to every slice), not {layer.ndim}-D")
        return np.asarray(layer.to_labels(labels_shape=shape), dtype=np.int32)
    if isinstance(layer, Labels):
        data = np.asarray(layer.data)
        if data.ndim != 2:
            raise ValueError(f"the region labels must be one 2-D label image, got shape {data.shape}")
        if data.shape != tuple(shape):
            raise ValueError(f"the region labels are {data.shape} but the image is {shape[0]}x{shape[1]}")
        return data
    raise TypeError(f"regions come from a Shapes or Labels layer, not {type(layer).__name__}")


def _check_grid(layer: Any, image_layer: Any | None) -> None:
    if image_layer is None:
        return
    for name in ("scale", "translate"):
        image_values = np.asarray(getattr(image_layer, name))[-2:]
        region_values = np.asarray(getattr(layer, name))[-2:]
        if not np.allclose(image_values, region_values):
            raise ValueError(
                f"the region layer {layer.name!r} has {name} {region_values.tolist()} but the image "
                f"{image_layer.name!r} has {image_values.tolist()}; draw the regions over the image itself"
            )


def region_rows(layer: Any, shape: tuple[int, int]) -> list[RegionRow]:
    """The regions of ``layer`` on a (Y, X) image grid, with captions from its features (or "").

    At most :data:`MAX_ROWS` rows; labels in label order, shapes in layer order.
    """
    from napari.layers import Shapes

    prefilled = _feature_captions(layer)
    if isinstance(layer, Shapes):
        kinds = list(layer.shape_type)
        return [RegionRow(i + 1, kinds[i], prefilled.get(i + 1, "")) for i in range(min(len(kinds), MAX_ROWS))]
    labels = _layer_labels(layer, shape)
    values, counts = np.unique(labels, return_counts=True)
    rows = []
    for value, count in zip(values.tolist(), counts.tolist()):
        if value > 0 and len(rows) < MAX_ROWS:
            rows.append(RegionRow(int(value), f"{count} px", prefilled.get(int(value), "")))
    return rows


def region_captions(
    layer: Any,
    shape: tuple[int, int],
    captions: dict[int, str] | None = None,
    *,
    image_layer: Any | None = None,
    feather: float = DEFAULT_FEATHER,
) -> RegionCaptions | None:
    """The engine's regions for ``layer`` on a (Y, X) image grid.

    captions: label -> caption (as edited in the table); None takes them from
    the layer's ``caption`` feature. Blank captions are dropped (those regions
    keep the global caption); None is returned when no caption is left.
    ValueError when the layer is not on the image's grid (``image_layer``) or
    its labels do not match ``shape``.
    """
    _check_grid(layer, image_layer)
    if captions is None:
        captions = _feature_captions(layer)
    kept = {int(label): " ".join(str(text).split()) for label, text in captions.items()}
    kept = {label: text for label, text in kept.items() if text}
    if not kept:
        return None
    return RegionCaptions(_layer_labels(layer, shape), kept, feather)


class RegionCaptionTable(QTableWidget):
    """Two columns: the region (label value and what it is, read-only) and its caption (editable).

    ``set_rows(rows)`` fills it; ``captions()`` returns {label: caption} of the
    rows whose caption is not blank.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["region", "caption"])
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setToolTip(
            "A caption per region (blank: the region keeps the main caption). "
            "Prefilled from the layer's features column 'caption'."
        )
        self._labels: list[int] = []

    def set_rows(self, rows: Sequence[RegionRow]) -> None:
        self.setRowCount(0)
        self._labels = [row.label for row in rows]
        self.setRowCount(len(rows))
        for i, row in enumerate(rows):
            region = QTableWidgetItem(f"{row.label} ({row.what})")
            region.setFlags(region.flags() & ~Qt.ItemIsEditable)
            self.setItem(i, 0, region)
            self.setItem(i, 1, QTableWidgetItem(row.caption))

    def set_caption(self, label: int, caption: str) -> None:
        self.item(self._labels.index(label), 1).setText(caption)

    def captions(self) -> dict[int, str]:
        out = {}
        for i, label in enumerate(self._labels):
            item = self.item(i, 1)
            text = " ".join(item.text().split()) if item is not None else ""
            if text:
                out[label] = text
        return out


def job_report(job: Any, result: Any, upscaler: Any) -> dict[str, Any]:
    """The evidence report (:func:`napari_textsr.report.build_report`) of one widget/scripted run.

    job: the :class:`~napari_textsr.napari.jobs.UpscaleJob`; its settings are
    the parameters (array-valued engine options such as a reference image are
    recorded by their SHA-256), its input array is hashed (there is no input
    file: the layer's source path, if napari knows it, is in ``input_layer``).
    """
    from napari_textsr.report import build_report, sha256_array

    parameters: dict[str, Any] = {
        "input_layer": job.source.name,
        "input_slice": list(job.offset),
        "captions": list(job.captions),
        "model": job.model,
        "compare": job.compare,
        "device": job.device,
        "scale": job.scale,
        "tile": job.tile,
        "consistency": job.consistency,
        "attention": job.attention,
    }
    for key, value in job.engine_kwargs.items():
        if isinstance(value, RegionCaptions):
            parameters[key] = {"captions": value.captions, "feather": value.feather, "labels_sha256": value.labels_sha256()}
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            parameters[key] = {"sha256": sha256_array(value), "shape": list(value.shape), "dtype": str(value.dtype)}
        else:
            parameters[key] = value
    return build_report(result, upscaler, parameters=parameters, input_array=job.data)
