"""Dock widget "Text-guided super-resolution".

Pick an Image layer, type what it shows, pick a model, Run. The work runs in a
napari ``thread_worker`` generator that yields after every tile, so Cancel takes
effect between tiles and the GUI never blocks; the model is loaded once, off
the GUI thread, and reused. Layers are built by :mod:`napari_textsr.napari.layers`,
the same code :func:`~napari_textsr.napari.upscale_layer` uses.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_textsr.napari._connections import disconnect_all
from napari_textsr.napari.jobs import JobOutcome, JobProgress, UpscaleJob, make_job, run_job_in_worker, split_captions
from napari_textsr.napari.layers import add_result_layers
from napari_textsr.napari.model_store import (
    FILE,
    GROUP_TITLES,
    MODEL_STORE,
    UNTRAINED,
    ModelChoice,
    ModelStore,
    method_title,
    untrained_spec,
)

if TYPE_CHECKING:
    import napari

TILE_CHOICES: list[tuple[str, int | None]] = [
    ("auto (from free memory)", None),
    ("no tiling", 0),
    ("64 px", 64),
    ("128 px", 128),
    ("256 px", 256),
    ("512 px", 512),
    ("1024 px", 1024),
]
_PROGRESS_STEPS = 1000
# Offered first when no trained model is bundled or registered.
DEFAULT_UNTRAINED = untrained_spec("pdn", 4)


def available_devices() -> list[str]:
    """``auto`` plus the devices torch can use here."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] * (torch.cuda.device_count() > 1)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def describe_upscaler(upscaler: Any) -> str:
    """One line about a loaded model: method, scale, encoder, size, trained or not."""
    d = upscaler.description
    params = f"{d.parameters / 1e6:.2f} M parameters"
    trained = "trained" if d.trained else "UNTRAINED (random weights)"
    return f"{method_title(d.method)} x{d.scale} · encoder {d.encoder} · {params} · {d.device} · {trained}"


class SuperResolutionWidget(QWidget):
    """The "Text-guided super-resolution" dock widget.

    Public for scripts and tests: ``layer_combo``, ``caption_edit``,
    ``compare_check``, ``model_combo``, ``device_combo``, ``tile_combo``,
    ``consistency_check``, ``attention_check``, ``slice_radio`` /
    ``stack_radio``, ``run_button``, ``cancel_button``, ``progress_bar``,
    ``status_label``; ``run()`` / ``cancel()``; ``is_running``;
    ``last_layers`` (the layers the last run added).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, store: ModelStore = MODEL_STORE) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.store = store
        self.last_layers: list = []
        self.last_outcome: JobOutcome | None = None
        self._worker = None
        self._loader = None
        self._cancel = threading.Event()
        self._job: UpscaleJob | None = None
        self._started = 0.0
        self._last_event: JobProgress | None = None
        self._pbar = None
        self._pbar_where: tuple[int, int] | None = None
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._tick)
        self._connect_viewer()
        self._refresh_layers()
        self._refresh_models()
        self._on_layer_changed()
        self._on_model_changed()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        self.controls = QWidget()
        form = QFormLayout(self.controls)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The Image layer to super-resolve (it is never modified)")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        form.addRow("Image layer", self.layer_combo)

        self.caption_edit = QPlainTextEdit()
        self.caption_edit.setPlaceholderText("What the image shows, e.g. DAPI-stained nuclei, two in mitosis")
        self.caption_edit.setFixedHeight(70)
        self.caption_edit.setToolTip(
            "The text prompt. Pre-filled from the layer's metadata['caption'] when it has one."
        )
        form.addRow("Caption", self.caption_edit)
        self.compare_check = QCheckBox("compare captions, one per line")
        self.compare_check.setToolTip("Run once per line and stack the outputs in one layer (one slice per caption)")
        form.addRow("", self.compare_check)

        model_row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.browse_button = QPushButton("File…")
        self.browse_button.setToolTip("Load a .textsr.safetensors checkpoint")
        self.browse_button.clicked.connect(self._browse_model)
        model_row.addWidget(self.model_combo)
        model_row.addWidget(self.browse_button)
        form.addRow("Model", model_row)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow("", self.model_info)

        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.device_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Device", self.device_combo)

        self.tile_combo = QComboBox()
        for label, value in TILE_CHOICES:
            self.tile_combo.addItem(label, value)
        self.tile_combo.setToolTip("Tiles are padded and pasted without seams; auto fits them to free memory")
        form.addRow("Tile size", self.tile_combo)

        self.consistency_check = QCheckBox("measurement consistency")
        self.consistency_check.setToolTip(
            "Back-project so that downsampling the output reproduces the input; "
            "adds a map of where the network disagreed with the input"
        )
        self.attention_check = QCheckBox("attention maps")
        self.attention_check.setChecked(True)
        self.attention_check.setToolTip("Add the model's attention maps as layers over the output")
        form.addRow("Options", self.attention_check)
        form.addRow("", self.consistency_check)

        self.slice_radio = QRadioButton("current slice")
        self.stack_radio = QRadioButton("whole stack")
        self.slice_radio.setChecked(True)
        self._extent_group = QButtonGroup(self)
        self._extent_group.addButton(self.slice_radio)
        self._extent_group.addButton(self.stack_radio)
        extent = QHBoxLayout()
        extent.addWidget(self.slice_radio)
        extent.addWidget(self.stack_radio)
        form.addRow("nD layers", extent)
        outer.addWidget(self.controls)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        outer.addWidget(self.progress_bar)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.status_label)
        outer.addStretch(1)

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        self._connections: list[tuple[Any, Any]] = []
        self._listen(events.inserted, self._on_layer_inserted)
        for emitter in (events.removed, events.reordered, events.moved):
            self._listen(emitter, self._refresh_layers)
        for layer in self.viewer.layers:
            self._listen(layer.events.name, self._refresh_layers)
        self._listen(self.store.checkpoint_registered, self._on_checkpoint_registered)
        # When napari deletes the dock widget the Qt side goes first: stop
        # listening then, or the next layer event would touch a deleted widget.
        self.destroyed.connect(partial(disconnect_all, self._connections))

    def _listen(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _disconnect_viewer(self) -> None:
        disconnect_all(self._connections)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel a running job and stop listening to the viewer (the widget is going away)."""
        self._cancel.set()
        self._timer.stop()
        self._disconnect_viewer()

    # ------------------------------------------------------------------ layers
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layer_inserted(self, event=None) -> None:
        if event is not None and getattr(event, "value", None) is not None:
            self._listen(event.value.events.name, self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, event=None) -> None:
        current = self.selected_layer()
        layers = self._image_layers()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in layers:
            self.layer_combo.addItem(layer.name, layer)
        if current is not None and current in layers:
            self.layer_combo.setCurrentIndex(layers.index(current))
        elif layers:
            active = self.viewer.layers.selection.active
            self.layer_combo.setCurrentIndex(layers.index(active) if active in layers else len(layers) - 1)
        self.layer_combo.blockSignals(False)
        if self.selected_layer() is not current:
            self._on_layer_changed()

    def selected_layer(self) -> Image | None:
        """The layer chosen in the picker (None if there is no Image layer)."""
        index = self.layer_combo.currentIndex()
        return self.layer_combo.itemData(index) if index >= 0 else None

    def select_layer(self, layer_or_name: Image | str) -> None:
        """Choose the input layer by object or name."""
        for i in range(self.layer_combo.count()):
            layer = self.layer_combo.itemData(i)
            if layer is layer_or_name or layer.name == layer_or_name:
                self.layer_combo.setCurrentIndex(i)
                return
        raise ValueError(f"no Image layer {getattr(layer_or_name, 'name', layer_or_name)!r} in the viewer")

    def _on_layer_changed(self, index: int | None = None) -> None:
        layer = self.selected_layer()
        caption = layer.metadata.get("caption") if layer is not None else None
        if isinstance(caption, str) and caption:
            self.caption_edit.setPlainText(caption)
        is_stack = layer is not None and layer.ndim > 2
        self.slice_radio.setEnabled(is_stack)
        self.stack_radio.setEnabled(is_stack)

    # ------------------------------------------------------------------ models
    def _refresh_models(self, select_spec: str | None = None) -> None:
        current = select_spec or self.selected_model()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        group = None
        choices_by_row: list[ModelChoice | None] = []
        for choice in self.store.choices():
            if choice.group != group:
                if group is not None:
                    self.model_combo.insertSeparator(self.model_combo.count())
                    choices_by_row.append(None)
                self.model_combo.addItem(f"— {GROUP_TITLES[choice.group]} —", None)
                self.model_combo.model().item(self.model_combo.count() - 1).setEnabled(False)
                choices_by_row.append(None)
                group = choice.group
            self.model_combo.addItem(choice.label, choice.spec)
            choices_by_row.append(choice)
            self.model_combo.setItemData(self.model_combo.count() - 1, choice.tooltip, Qt.ToolTipRole)
        specs = [self.model_combo.itemData(i) for i in range(self.model_combo.count())]
        if current is not None and current in specs:
            self.model_combo.setCurrentIndex(specs.index(current))
        else:  # the first trained model, else the untrained default
            trained = [i for i, c in enumerate(choices_by_row) if c is not None and c.group != UNTRAINED]
            fallback = specs.index(DEFAULT_UNTRAINED) if DEFAULT_UNTRAINED in specs else 1
            self.model_combo.setCurrentIndex(trained[0] if trained else fallback)
        self.model_combo.blockSignals(False)

    def selected_model(self) -> str | None:
        """The spec of the chosen model (what ``load_model`` takes)."""
        index = self.model_combo.currentIndex()
        return self.model_combo.itemData(index) if index >= 0 else None

    def select_model(self, spec: str) -> None:
        """Choose a model by spec; a checkpoint file is registered like one opened with File…,
        any other spec not listed (e.g. another random spec) is added as it is."""
        if Path(spec).expanduser().is_file():
            spec = self.store.register_checkpoint(spec, group=FILE).spec
            self._refresh_models(select_spec=spec)
        specs = [self.model_combo.itemData(i) for i in range(self.model_combo.count())]
        if spec not in specs:
            self.model_combo.addItem(spec, spec)
            specs.append(spec)
        if self.model_combo.currentIndex() == specs.index(spec):
            self._on_model_changed()  # already chosen (e.g. by the refresh above): still describe/load it
        else:
            self.model_combo.setCurrentIndex(specs.index(spec))

    def _on_checkpoint_registered(self, choice: ModelChoice) -> None:
        self._refresh_models(select_spec=choice.spec if choice.group == FILE else None)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open a napari-textsr checkpoint",
            "",
            "napari-textsr checkpoints (*.textsr.safetensors *.safetensors);;All files (*)",
        )
        if not path:
            return
        try:
            self.select_model(path)
        except (OSError, ValueError) as error:
            show_error(f"Could not use {path}: {error}")

    def _on_model_changed(self, index: int | None = None) -> None:
        """Show the model's description, loading it in the background if it is not loaded yet."""
        spec, device = self.selected_model(), self.device_combo.currentText()
        if spec is None:
            self.model_info.setText("")
            return
        try:
            upscaler = self.store.cached(spec, device)
        except (OSError, ValueError) as error:
            self.model_info.setText(f"unavailable: {error}")
            return
        if upscaler is not None:
            self.model_info.setText(describe_upscaler(upscaler))
            return
        self.model_info.setText("loading…")
        from napari.qt.threading import create_worker

        loader = create_worker(self.store.get, spec, device, _start_thread=False, _ignore_errors=True)
        loader.returned.connect(lambda up, spec=spec, device=device: self._on_model_loaded(spec, device, up))
        loader.errored.connect(lambda error, spec=spec: self._on_model_failed(spec, error))
        self._loader = loader
        loader.start()

    def _on_model_loaded(self, spec: str, device: str, upscaler: Any) -> None:
        # The widget may have been closed while the model loaded in the background:
        # Qt deletes its C++ side first, and then there is nothing left to update.
        with suppress(RuntimeError):
            if (spec, device) == (self.selected_model(), self.device_combo.currentText()):
                self.model_info.setText(describe_upscaler(upscaler))

    def _on_model_failed(self, spec: str, error: Exception) -> None:
        with suppress(RuntimeError):  # closed while loading, as above
            if spec == self.selected_model():
                self.model_info.setText(f"could not load: {error}")

    # ------------------------------------------------------------------ running
    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def current_options(self) -> dict[str, Any]:
        """The widget's settings as keyword arguments of :func:`~napari_textsr.napari.jobs.make_job`."""
        return {
            "device": self.device_combo.currentText(),
            "tile": self.tile_combo.currentData(),
            "consistency": self.consistency_check.isChecked(),
            "attention": self.attention_check.isChecked(),
            "whole_stack": self.stack_radio.isChecked(),
            "point": tuple(self.viewer.dims.point),
        }

    def run(self) -> None:
        """Start a run with the current settings (errors become notifications)."""
        if self.is_running:
            show_warning("Super-resolution is already running; cancel it first.")
            return
        layer = self.selected_layer()
        if layer is None:
            others = [f"'{lay.name}' ({type(lay).__name__})" for lay in self.viewer.layers]
            hint = f" ({', '.join(others)} cannot be super-resolved)" if others else ""
            show_error(f"No Image layer to super-resolve{hint}. Open or add an image first.")
            return
        spec = self.selected_model()
        if spec is None:
            show_error("Choose a model first.")
            return
        try:
            compare = self.compare_check.isChecked()
            captions = split_captions(self.caption_edit.toPlainText(), compare)
            job = make_job(layer, captions, spec, compare=compare, **self.current_options())
        except (TypeError, ValueError) as error:
            show_error(f"Cannot super-resolve: {error}")
            return
        self._start(job)

    def cancel(self) -> None:
        """Stop after the current tile; no layer is added."""
        if self.is_running:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling after the current tile…")

    def _start(self, job: UpscaleJob) -> None:
        from napari.qt.threading import create_worker

        self._job = job
        self._cancel = threading.Event()
        self._last_event = None
        worker = create_worker(run_job_in_worker, job, self._cancel, self.store, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._pbar = napari_progress(total=_PROGRESS_STEPS, desc=f"Super-resolution of {job.source.name}")
        self._pbar_where = None
        self._set_running(True)
        self._started = time.perf_counter()
        self._timer.start()
        self.status_label.setText(f"Loading {job.model}…")
        self.progress_bar.setRange(0, 0)  # busy until the first tile
        worker.start()

    def _set_running(self, running: bool) -> None:
        self.controls.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _update_napari_progress(self, event: JobProgress) -> None:
        # The bar counts thousandths of the run (tiles over all slices and
        # captions): it is made before the worker starts and never changes its
        # total, because napari's activity dialog re-enters the Qt event loop
        # (and creating a bar while a worker emits has deadlocked) whenever a
        # bar is created or its range changes. Its description names the slice
        # or caption, updated only when that changes.
        bar = self._pbar
        if bar is None:
            return
        where = (event.caption_index, event.slice_index)
        if where != self._pbar_where and (event.n_slices > 1 or event.n_captions > 1):
            self._pbar_where = where
            parts = []
            if event.n_captions > 1:
                parts.append(f"caption {event.caption_index + 1}/{event.n_captions}")
            if event.n_slices > 1:
                parts.append(f"slice {event.slice_index + 1}/{event.n_slices}")
            bar.set_description(f"Super-resolution of {self._job.source.name}: {', '.join(parts)}")
        if bar is self._pbar:  # the run may have ended inside set_description
            bar.update(round(event.fraction * _PROGRESS_STEPS) - bar.n)

    def _close_napari_progress(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _on_progress(self, event: JobProgress) -> None:
        if self._worker is None:  # delivered after the run ended (re-entrant event processing)
            return
        self._last_event = event
        if event.loading:
            return
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, _PROGRESS_STEPS)
            self.model_info.setText(describe_upscaler(self.store.get(self._job.model, self._job.device, self._job.scale)))
        self.progress_bar.setValue(round(event.fraction * _PROGRESS_STEPS))
        self._update_napari_progress(event)
        self._tick()

    def _tick(self) -> None:
        if not self.is_running:
            return
        elapsed = time.perf_counter() - self._started
        event = self._last_event
        where = event.message if event is not None and event.message else "starting"
        self.status_label.setText(f"Running {elapsed:.1f} s — {where}")

    def _on_returned(self, outcome: JobOutcome) -> None:
        self.last_outcome = outcome
        job = self._job
        if outcome.cancelled:
            self.status_label.setText(f"Cancelled after {outcome.seconds:.1f} s; no layer added.")
            show_info("Super-resolution cancelled; no layer was added.")
            return
        if outcome.error is not None:
            self.status_label.setText(f"Failed: {outcome.error}")
            show_error(f"Super-resolution: {outcome.error}")
            return
        try:
            self.last_layers = add_result_layers(
                self.viewer, job.source, outcome.results, offset=job.offset, compare=job.compare
            )
        except Exception as error:  # e.g. out of memory while stacking; keep the widget alive
            self.status_label.setText(f"Failed to add the layers: {error}")
            show_error(f"Super-resolution: could not add the layers: {error}")
            return
        self.status_label.setText(summarize(job, outcome, self.last_layers[0].name))

    def _on_errored(self, error: Exception) -> None:  # a bug, not a user error: say so, stay usable
        self.last_outcome = JobOutcome(error=str(error))
        self.status_label.setText(f"Failed: {error}")
        show_error(f"Super-resolution failed unexpectedly: {error!r}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._close_napari_progress()
        self._worker = None
        self._set_running(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, _PROGRESS_STEPS)
        ok = self.last_outcome is not None and self.last_outcome.results and not self.last_outcome.cancelled
        self.progress_bar.setValue(_PROGRESS_STEPS if ok else 0)


def summarize(job: UpscaleJob, outcome: JobOutcome, output_name: str) -> str:
    """One line: what was made, from what, with which model, how long."""
    first = outcome.results[0]
    d = first.model
    in_shape = "×".join(map(str, job.data.shape))
    out_shape = "×".join(map(str, first.image.shape))
    parts = [
        f"Done in {outcome.seconds:.1f} s: '{output_name}' {out_shape} {first.image.dtype} from {in_shape}",
        f"{method_title(d.method)} x{first.scale}{'' if d.trained else ' (untrained)'}",
    ]
    if len(outcome.results) > 1:
        parts.append(f"{len(outcome.results)} captions")
    if first.consistency_error is not None:
        parts.append(f"consistency error {first.consistency_error:.4f}")
    if first.attention:
        parts.append(f"{len(first.attention)} attention maps")
    return "; ".join(parts)
