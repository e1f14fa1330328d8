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

:func:`job_report` is the evidence report of a widget run;
:class:`RegionControls` is the SR widget's "Regions and evidence" section
(region layer, caption table, text-effect checkbox, "Save report…").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_textsr.regions import DEFAULT_FEATHER, RegionCaptions

__all__ = [
    "MAX_ROWS",
    "RegionControls",
    "RegionRow",
    "RegionCaptionTable",
    "is_region_layer",
    "job_report",
    "region_captions",
    "region_rows",
]

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
            parameters[key] = {
                "captions": value.captions,
                "feather": value.feather,
                "labels_sha256": value.labels_sha256(),
            }
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            parameters[key] = {"sha256": sha256_array(value), "shape": list(value.shape), "dtype": str(value.dtype)}
        else:
            parameters[key] = value
    return build_report(result, upscaler, parameters=parameters, input_array=job.data)


class RegionControls:
    """The SR widget's "Regions and evidence" section, plugged in through ``job_option_providers``.

    A layer picker (none, or a Shapes/Labels layer), the caption table for its
    regions, a "what the words added" checkbox (the text-effect layer) and a
    "Save report…" button that writes the evidence report of the active
    output layer (one the widget made this session). ``options(layer)`` gives
    the ``regions`` / ``text_effect`` keyword arguments of each job.
    """

    SECTION = "Regions and evidence"

    def __init__(self, widget: Any) -> None:
        from qtpy.QtWidgets import QCheckBox, QComboBox, QPushButton

        self.widget = widget
        section = widget.add_section(self.SECTION, after="Options")
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(
            "A Shapes or Labels layer drawn over the image: each shape / label gets its own caption; "
            "the rest of the image keeps the main caption"
        )
        self.layer_combo.currentIndexChanged.connect(self._on_region_layer)
        section.add_row("Regions", self.layer_combo)
        self.table = RegionCaptionTable()
        self.table.setMinimumHeight(90)
        section.add_row(self.table)
        self.text_effect_check = QCheckBox("map of what the words added")
        self.text_effect_check.setToolTip(
            "Also run without any caption and add the difference (output - uncaptioned output, "
            "in output intensity units) as a hidden layer"
        )
        section.add_row("Add", self.text_effect_check)
        self.report_button = QPushButton("Save report…")
        self.report_button.setToolTip(
            "Write the evidence report (hashes of input, output and model; settings, versions, "
            "statistics) of the active output layer as JSON"
        )
        self.report_button.clicked.connect(self._ask_report_path)
        section.add_row("Evidence", self.report_button)
        self._runs: dict[int, tuple[Any, Any]] = {}  # id(output layer) -> (job, outcome)
        self._watched: Any = None
        widget.job_option_providers.append(self.options)
        events = widget.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered):
            widget.listen(emitter, self.refresh)
        widget.listen(events.inserted, self._on_inserted)
        self.refresh()

    # ------------------------------------------------------------------ region layer
    def region_layers(self) -> list[Any]:
        return [layer for layer in self.widget.viewer.layers if is_region_layer(layer)]

    def region_layer(self) -> Any | None:
        name = self.layer_combo.currentData()
        if name is None or name not in self.widget.viewer.layers:
            return None
        return self.widget.viewer.layers[name]

    def select_region_layer(self, layer_or_name: Any) -> None:
        name = getattr(layer_or_name, "name", layer_or_name)
        index = self.layer_combo.findData(name)
        if index < 0:
            raise ValueError(f"no Shapes or Labels layer named {name!r}")
        self.layer_combo.setCurrentIndex(index)
        self._on_region_layer()

    def refresh(self, event=None) -> None:
        current = self.layer_combo.currentData()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItem("none (one caption)", None)
        for layer in self.region_layers():
            self.layer_combo.addItem(layer.name, layer.name)
        index = self.layer_combo.findData(current)
        self.layer_combo.setCurrentIndex(max(index, 0))
        self.layer_combo.blockSignals(False)
        if self.layer_combo.currentData() != current:
            self._on_region_layer()

    def _on_region_layer(self, index: int | None = None) -> None:
        if self._watched is not None:
            with _suppress():
                self._watched.events.data.disconnect(self._refill)
        self._watched = self.region_layer()
        if self._watched is not None:
            self._watched.events.data.connect(self._refill)
        self._refill()

    def _refill(self, event=None) -> None:
        """Rows for the region layer's regions, keeping captions typed for labels that remain."""
        typed = self.table.captions()
        layer, image = self.region_layer(), self.widget.selected_layer()
        if layer is None or image is None:
            self.table.set_rows([])
            return
        try:
            rows = region_rows(layer, _spatial_shape(image))
        except (TypeError, ValueError) as error:
            self.widget.set_status(f"Regions: {error}")
            rows = []
        self.table.set_rows([RegionRow(r.label, r.what, typed.get(r.label, r.caption)) for r in rows])

    # ------------------------------------------------------------------ jobs
    def options(self, layer: Any) -> dict[str, Any]:
        """make_job keyword arguments for ``layer`` (ValueError when the region layer does not fit it)."""
        options: dict[str, Any] = {}
        if self.text_effect_check.isChecked():
            options["text_effect"] = True
        region_layer = self.region_layer()
        if region_layer is not None:
            regions = region_captions(region_layer, _spatial_shape(layer), self.table.captions(), image_layer=layer)
            if regions is not None:
                options["regions"] = regions
        return options

    def _on_inserted(self, event=None) -> None:
        """Remember which job made an output layer, for its report."""
        layer = getattr(event, "value", None)
        widget = self.widget
        job, outcome = getattr(widget, "_job", None), widget.last_outcome
        if layer is None or job is None or outcome is None or not outcome.results:
            return
        if layer.metadata.get("input_layer") == job.source.name and "model" in layer.metadata:
            self._runs[id(layer)] = (job, outcome)

    def report_for(self, layer: Any) -> dict[str, Any]:
        """The evidence report of an output layer this widget made (ValueError otherwise)."""
        output = self.widget._output_of(layer)
        if output is None or id(output) not in self._runs:
            raise ValueError("select an output layer made by this widget in this session")
        job, outcome = self._runs[id(output)]
        reports = [job_report(job, result, outcome.upscaler) for result in outcome.results]
        for report in reports:
            report["output"]["layer"] = output.name
        return reports[0] if len(reports) == 1 else {"format": reports[0]["format"], "reports": reports}

    def save_report(self, path: str, layer: Any = None) -> Path:
        """Write the report of ``layer`` (default: the active layer) to ``path``."""
        from napari_textsr.report import write_report

        layer = layer if layer is not None else self.widget.viewer.layers.selection.active
        return write_report(path, self.report_for(layer))

    def _ask_report_path(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        active = self.widget.viewer.layers.selection.active
        try:
            report = self.report_for(active)
        except ValueError as error:
            self.widget.set_status(f"Report: {error}", error=True)
            return
        path, _ = QFileDialog.getSaveFileName(
            self.widget, "Save evidence report", f"{active.name}.json", "JSON (*.json)"
        )
        if path:
            from napari_textsr.report import write_report

            write_report(path, report)
            self.widget.set_status(f"Wrote the evidence report {path}")


def _spatial_shape(layer: Any) -> tuple[int, int]:
    """(Y, X) of an Image layer's full-resolution data."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(n) for n in data.shape)
    return shape[-3:-1] if getattr(layer, "rgb", False) else shape[-2:]


def _suppress():
    from contextlib import suppress

    return suppress(TypeError, RuntimeError, ValueError)
