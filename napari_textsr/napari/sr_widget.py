"""Dock widget "Text-guided super-resolution".

Pick an Image layer (or select several), type what it shows, pick a model and
a scale, Run. The work runs in a napari ``thread_worker`` generator that yields
after every tile, so Cancel takes effect between tiles and the GUI never
blocks; the model is loaded once, off the GUI thread, and reused; the output
layers are built in the worker and handed to napari one per event-loop turn.
Layers are built by :mod:`napari_textsr.napari.layers`, the same code
:func:`~napari_textsr.napari.upscale_layer` uses.

The controls are in sections (:meth:`DockWidget.add_section`): "Input",
"Model", "Options" and "Selected output"; other parts of the plugin add theirs
the same way.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QVBoxLayout,
)

from napari_textsr.consistency import CONSISTENCY_KERNEL_TITLES
from napari_textsr.napari.jobs import JobOutcome, JobProgress, UpscaleJob, make_job, run_job_in_worker, split_captions
from napari_textsr.napari.layers import add_layer_data, layer_binning, layer_jpeg_evidence
from napari_textsr.napari.model_store import (
    BUNDLED,
    FILE,
    MODEL_STORE,
    TRAINED,
    UNTRAINED,
    ModelChoice,
    ModelStore,
    default_model_name,
    method_title,
    untrained_spec,
)
from napari_textsr.napari.regions import RegionControls
from napari_textsr.napari.widget_parts import (
    BackgroundRun,
    DevicePicker,
    DockWidget,
    ModelPicker,
    available_devices,
    compact_combo,
    is_alive,
    load_in_background,
)
from napari_textsr.training.captions import caption_with_file_words, caption_without_file_words

if TYPE_CHECKING:
    import napari

    from napari_textsr.imageio import JpegEvidence

__all__ = ["SuperResolutionWidget", "available_devices", "describe_upscaler", "format_provenance", "summarize"]

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
# Pause between two layer additions (ms). napari needs 0.2 to 0.9 s of GUI-thread time to insert
# one layer (its layer controls and vispy visuals) on a busy 2-core machine; with no pause the next
# addition ran before Qt painted or delivered input and timers, and two additions made one stall.
LAYER_ADD_PAUSE_MS = 40
# Offered first when no trained model is bundled or registered.
DEFAULT_UNTRAINED = untrained_spec("pdn", 4)
# Preference when the scale picker switches to another model of the same method.
_GROUP_PREFERENCE = (BUNDLED, TRAINED, FILE, UNTRAINED)
# Working memory per LR pixel without tiling that no model goes below (the
# engine's generic estimate for a model that declares none: activations of 64
# channels, the float32 output copies, 8 attention maps); used to refuse at once.
_MIN_BYTES_PER_LR_PIXEL = lambda s: 4 * 64 * (4 + 2 * s * s) + 4 * 3 * s * s * 2  # noqa: E731


def describe_upscaler(upscaler: Any) -> str:
    """One line about a loaded model: method, scale, encoder, size, trained or not."""
    d = upscaler.description
    params = f"{d.parameters / 1e6:.2f} M parameters"
    trained = "trained" if d.trained else "UNTRAINED (random weights)"
    return f"{method_title(d.method)} x{d.scale} · encoder {d.encoder} · {params} · {d.device} · {trained}"


def format_provenance(metadata: dict) -> str:
    """A few lines from an output layer's provenance ``metadata`` (as :func:`result_layer_data` writes it)."""
    if "provenance" in metadata:  # a caption-comparison stack
        first = metadata["provenance"][0] if metadata["provenance"] else {}
        captions = metadata.get("captions", [])
        head = f"{len(captions)} captions: " + " | ".join(captions)
        return head + "\n" + format_provenance({k: v for k, v in first.items() if k != "caption"})
    lines = []
    if metadata.get("caption") is not None:
        lines.append(f"caption: “{metadata['caption']}”")
    model = metadata.get("model")
    if model is not None:
        trained = "" if metadata.get("trained", True) else " (UNTRAINED)"
        lines.append(
            f"model: {model} · {method_title(str(metadata.get('method', '?')))} x{metadata.get('scale', '?')}{trained}"
        )
    if metadata.get("encoder"):
        lines.append(f"encoder: {metadata['encoder']}")
    run = []
    if metadata.get("input_layer") is not None:
        source = f"from '{metadata['input_layer']}'"
        if metadata.get("input_slice"):
            source += f" slice {metadata['input_slice']}"
        run.append(source)
    if metadata.get("device"):
        run.append(str(metadata["device"]))
    if metadata.get("seconds") is not None:
        run.append(f"{float(metadata['seconds']):.1f} s")
    if metadata.get("consistency_error") is not None:
        kernel = f" ({metadata['consistency_kernel']})" if metadata.get("consistency_kernel") else ""
        run.append(f"consistency error {float(metadata['consistency_error']):.4f}{kernel}")
    if run:
        lines.append(" · ".join(run))
    if metadata.get("time"):
        lines.append(f"made {metadata['time']} with napari-textsr {metadata.get('software_version', '')}".rstrip())
    return "\n".join(lines)


def is_comparison_stack(layer: Any) -> bool:
    """Whether ``layer`` is a caption-comparison output (one slice per caption along axis 0).

    Its metadata has the captions and one provenance record per caption (the
    samples also list ``captions``, but are not stacks)."""
    meta = layer.metadata
    captions, provenance = meta.get("captions"), meta.get("provenance")
    return isinstance(captions, list) and isinstance(provenance, list) and len(captions) == len(provenance)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


_T = TypeVar("_T")


def _of_input_layer(cache: dict[int, tuple[object, _T]], layer: Image, read: Callable[[Image], _T]) -> _T | None:
    """``read(layer)``, computed once per layer and data (kept in ``cache``); None for an output layer."""
    if "input_layer" in layer.metadata:
        return None
    cached = cache.get(id(layer))
    if cached is None or cached[0] is not layer.data:
        cached = cache[id(layer)] = (layer.data, read(layer))
    return cached[1]


class SuperResolutionWidget(DockWidget):
    """The "Text-guided super-resolution" dock widget.

    Public for scripts and tests: ``layer_combo``, ``all_selected_check``,
    ``caption_edit``, ``compare_check``, ``model_combo`` (a :class:`ModelPicker`),
    ``scale_combo``, ``browse_button``, ``model_info``, ``device_combo``,
    ``tile_combo``, ``consistency_check``, ``consistency_kernel_combo``, ``attention_check``, ``ensemble_check``,
    ``slice_radio`` / ``stack_radio``, ``provenance_label``,
    ``comparison_label``, ``run_button``, ``cancel_button``, ``progress_bar``,
    ``status_label``, ``controls`` (everything locked during a run),
    ``sections``; ``run()`` / ``cancel()``; ``is_running``; ``last_layers``
    (the layers the last run added), ``last_outcome``.

    Extending it: ``add_section(title, after=...)`` adds a group of controls;
    ``job_option_providers`` holds callables ``(layer) -> dict`` whose keyword
    arguments go to :func:`~napari_textsr.napari.jobs.make_job` (and from there
    to ``Upscaler.iter_upscale``) for every run.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, store: ModelStore = MODEL_STORE) -> None:
        super().__init__(napari_viewer, store)
        self.last_layers: list = []
        self.last_outcome: JobOutcome | None = None
        self._run: BackgroundRun | None = None
        self._queue: list[UpscaleJob] = []
        self._cancel = threading.Event()
        self._job: UpscaleJob | None = None
        self._started = 0.0
        self._first_tile_at: float | None = None
        self._last_event: JobProgress | None = None
        self._typed_captions: dict[int, str] = {}  # id(layer) -> what the user typed for it this session
        # id(layer) -> (the data it was read from, what it shows of JPEG): read once per layer and data.
        self._jpeg_evidence: dict[int, tuple[object, JpegEvidence | None]] = {}
        self._binning: dict[int, tuple[object, int | None]] = {}
        self._caption_layer: Image | None = None
        self._setting_caption = False
        self._overlay_ours = False
        self._pending_layers: tuple | None = None
        # Extension point: callables (layer) -> extra make_job keyword arguments
        # (engine options such as region captions), merged into every job.
        self.job_option_providers: list[Any] = []
        self._build()
        self.region_controls = RegionControls(self)  # region captions, text effect, evidence report
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._show_running_status)
        self.listen_to_layer_list()
        self.listen(self.store.checkpoint_registered, self._on_checkpoint_registered)
        self.listen(self.viewer.layers.selection.events.active, self._on_active_layer)
        self.listen(self.viewer.layers.selection.events.changed, self._on_selection_changed)
        self.listen(self.viewer.dims.events.current_step, self._update_comparison_label)
        self.refresh_layers()
        self._refresh_models()
        self._on_layer_changed()
        self._on_model_changed()
        self._on_active_layer()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        self.controls = self.body
        inputs = self.add_section("Input", collapsible=False)
        self.layer_combo = compact_combo(QComboBox())
        self.layer_combo.setToolTip("The Image layer to super-resolve (it is never modified)")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        inputs.add_row("Image layer", self.layer_combo)
        self.all_selected_check = QCheckBox("all selected layers")
        self.all_selected_check.setToolTip(
            "Run on each Image layer selected in the layer list, one after the other, "
            "each with its own caption (the one typed for it here, or its metadata's)"
        )
        self.all_selected_check.toggled.connect(self._on_selection_changed)
        inputs.add_row(self.all_selected_check)
        self.caption_edit = QPlainTextEdit()
        self.caption_edit.setPlaceholderText("What the image shows, e.g. DAPI-stained nuclei, two in mitosis")
        self.caption_edit.setFixedHeight(58)
        self.caption_edit.setToolTip(
            "The text prompt for the chosen layer. Filled in from the layer's metadata['caption'] when it has one, "
            "plus 'JPEG-compressed' when the layer went through JPEG compression of quality 60 or lower (opened "
            "from such a JPEG file, or seen in the 8x8 blocks of an 8-bit image; the models were trained to read "
            "it); what you type is kept for that layer while napari runs."
        )
        self.caption_edit.textChanged.connect(self._on_caption_typed)
        inputs.add_row("Caption", self.caption_edit)
        self.compare_check = QCheckBox("compare captions (1 per line)")
        self.compare_check.setToolTip("Run once per line and stack the outputs in one layer (one slice per caption)")
        inputs.add_row(self.compare_check)

        model = self.add_section("Model", collapsible=False)
        model_row = QHBoxLayout()
        self.model_combo = ModelPicker(self.store)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.browse_button = QPushButton("File…")
        self.browse_button.setToolTip("Load a .textsr.safetensors checkpoint")
        self.browse_button.clicked.connect(self._browse_model)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.browse_button)
        model.add_row("Model", model_row)
        self.scale_combo = compact_combo(QComboBox(), 4)
        self.scale_combo.setToolTip(
            "Upscaling factor. Lists the scales this method has a model for (bundled, trained or opened; "
            "'untrained' where only random weights exist); choosing one picks that model."
        )
        self.scale_combo.activated.connect(self._on_scale_chosen)
        self.device_combo = DevicePicker()
        self.device_combo.currentIndexChanged.connect(self._on_model_changed)
        model.add_row("Scale", self.scale_combo)
        model.add_row("Device", self.device_combo)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.model_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        model.add_row("", self.model_info)

        options = self.add_section("Options")
        self.tile_combo = compact_combo(QComboBox(), 8)
        for label, value in TILE_CHOICES:
            self.tile_combo.addItem(label, value)
        self.tile_combo.setToolTip(
            "Tiles are padded and pasted without seams; auto fits them to free memory; "
            "no tiling runs in one piece (refused at once if it cannot fit)"
        )
        options.add_row("Tile size", self.tile_combo)
        self.attention_check = QCheckBox("attention maps")
        self.attention_check.setChecked(True)
        self.attention_check.setToolTip("Add the model's attention maps as (hidden) layers over the output")
        self.consistency_check = QCheckBox("consistency with")
        self.consistency_check.setToolTip(
            "Measurement consistency: back-project so that downsampling the output reproduces the input, "
            "and add a map of where the network disagreed with the input. The downsampling is chosen on the "
            "right (by default the one the caption names). Not for blurred, noisy or JPEG images: it fits "
            "blur, grain and blocks as if they were detail"
        )
        self.ensemble_check = QCheckBox("self-ensemble (8x time)")
        self.ensemble_check.setToolTip(
            "Average the model's outputs over the 8 rotations and mirror images of the input (EDSR+): "
            "eight times the time for a few hundredths to a tenth of a dB more PSNR"
        )
        self.consistency_kernel_combo = compact_combo(QComboBox(), 4)
        for kernel, title in CONSISTENCY_KERNEL_TITLES.items():
            self.consistency_kernel_combo.addItem(title, kernel)
        self.consistency_kernel_combo.setToolTip(
            "How the input was made small, for measurement consistency: as the caption says ('binned', "
            "'pixelated': binning; 'aliased', 'jagged': bicubic without antialiasing; else antialiased "
            "bicubic), or chosen here. The wrong one lowers PSNR by up to 2-3 dB"
        )
        self.consistency_kernel_combo.setEnabled(False)
        self.consistency_check.toggled.connect(self.consistency_kernel_combo.setEnabled)
        consistency_row = QHBoxLayout()
        consistency_row.setContentsMargins(0, 0, 0, 0)
        consistency_row.addWidget(self.consistency_check)
        consistency_row.addWidget(self.consistency_kernel_combo, 1)
        options.add_row(self.attention_check)
        options.add_row(consistency_row)
        options.add_row(self.ensemble_check)
        self.slice_radio = QRadioButton("current slice")
        self.stack_radio = QRadioButton("whole stack")
        self.slice_radio.setChecked(True)
        for radio in (self.slice_radio, self.stack_radio):
            radio.setToolTip(
                "For z-stacks and time series: only the slice the viewer shows (the output overlays that "
                "slice), or every slice. 2D layers have no choice."
            )
        self._extent_group = QButtonGroup(self)
        self._extent_group.addButton(self.slice_radio)
        self._extent_group.addButton(self.stack_radio)
        extent = QVBoxLayout()
        extent.setSpacing(0)
        extent.addWidget(self.slice_radio)
        extent.addWidget(self.stack_radio)
        options.add_row("nD layers", extent)

        selected = self.add_section("Selected output")
        self.provenance_label = QLabel("Select an output layer to see how it was made.")
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.provenance_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.provenance_label.setToolTip("The provenance in the active layer's metadata (model, caption, settings)")
        selected.add_row(self.provenance_label)
        self.comparison_label = QLabel("")
        self.comparison_label.setWordWrap(True)
        self.comparison_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.comparison_label.setToolTip("For a caption-comparison stack: the caption of the slice on screen")
        selected.add_row(self.comparison_label)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Super-resolve the chosen layer with this caption and model (in the background)")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current tile; no layer is added")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.footer.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setToolTip("Tiles done over the whole run (all slices and captions)")
        self.footer.addWidget(self.progress_bar)
        self.footer.addWidget(self.status_label)

    # ------------------------------------------------------------------ layers
    def refresh_layers(self, event=None) -> None:
        if self.closed:
            return
        current = self.selected_layer()
        layers = self.image_layers()
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
        alive = {id(layer) for layer in self.viewer.layers}
        for cache in (self._typed_captions, self._jpeg_evidence, self._binning):
            for key in [k for k in cache if k not in alive]:
                del cache[key]
        if self.selected_layer() is not current:
            self._on_layer_changed()
        self._on_selection_changed()

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

    def caption_for(self, layer: Image) -> str:
        """What the user typed for ``layer`` this session, else its ``metadata['caption']`` (else "").

        An output layer's caption comes without the JPEG words its input was
        given (:func:`~napari_textsr.training.captions.caption_without_file_words`),
        and its pixels are not examined (no time on the GUI thread while
        outputs go in).
        The untyped caption gets the words the layer's file gives
        (:func:`~napari_textsr.training.captions.caption_with_file_words`:
        "JPEG-compressed" for JPEG compression of quality 60 or lower, from
        the layer's JPEG file or its pixels: :func:`~napari_textsr.napari.layers.layer_jpeg_evidence`;
        "binned" for an OME-TIFF that records camera binning:
        :func:`~napari_textsr.napari.layers.layer_binning`; each looked at
        once per layer and data), so they show in the caption box, where
        they can be deleted.
        """
        if id(layer) in self._typed_captions:
            return self._typed_captions[id(layer)]
        caption = layer.metadata.get("caption")
        caption = caption if isinstance(caption, str) else ""
        if "input_layer" in layer.metadata:  # an output is no JPEG, whatever its input's words said
            return caption_without_file_words(caption)
        evidence = self.jpeg_evidence_of(layer)
        quality = evidence.quality if evidence is not None else None
        return caption_with_file_words(caption, quality, self.binning_of(layer))

    def jpeg_evidence_of(self, layer: Image) -> JpegEvidence | None:
        """What ``layer`` shows of JPEG compression (:func:`~napari_textsr.napari.layers.layer_jpeg_evidence`).

        Looked at once per layer and data; None for an output layer (no JPEG,
        and no time on the GUI thread while outputs go in).
        """
        return _of_input_layer(self._jpeg_evidence, layer, layer_jpeg_evidence)

    def binning_of(self, layer: Image) -> int | None:
        """The camera binning ``layer``'s OME-TIFF records (:func:`~napari_textsr.napari.layers.layer_binning`).

        Read once per layer and data; None for an output layer.
        """
        return _of_input_layer(self._binning, layer, layer_binning)

    def _on_caption_typed(self) -> None:
        if not self._setting_caption and self._caption_layer is not None:
            self._typed_captions[id(self._caption_layer)] = self.caption_edit.toPlainText()

    def _on_layer_changed(self, index: int | None = None) -> None:
        layer = self.selected_layer()
        self._caption_layer = layer
        self._setting_caption = True
        try:
            self.caption_edit.setPlainText(self.caption_for(layer) if layer is not None else "")
        finally:
            self._setting_caption = False
        is_stack = layer is not None and layer.ndim > 2
        self.slice_radio.setEnabled(is_stack)
        self.stack_radio.setEnabled(is_stack)

    def selected_image_layers(self) -> list[Image]:
        """Image layers selected in the viewer's layer list, in layer-list order."""
        selection = self.viewer.layers.selection
        return [layer for layer in self.image_layers() if layer in selection]

    def _on_selection_changed(self, event=None) -> None:
        if self.closed or not is_alive(self):
            return
        n = len(self.selected_image_layers())
        self.all_selected_check.setText(f"all selected layers ({n})")

    # ------------------------------------------------------------------ the selected output
    def _on_active_layer(self, event=None) -> None:
        if self.closed or not is_alive(self):
            return
        layer = self.viewer.layers.selection.active
        output = self._output_of(layer)
        if output is None:
            self.provenance_label.setText("Select an output layer to see how it was made.")
        else:
            self.provenance_label.setText(f"'{output.name}'\n{format_provenance(output.metadata)}")
        self._update_comparison_label()

    def _output_of(self, layer: Any) -> Any:
        """The output layer ``layer`` is (or whose map it is), else None."""
        if layer is None:
            return None
        meta = layer.metadata
        if "model" in meta and ("input_layer" in meta):
            return layer
        name = meta.get("output_layer")
        if name is not None and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def comparison_caption(self) -> tuple[str, int, int] | None:
        """(caption, index, count) of the caption-comparison slice on screen, for the active
        layer's stack (or, with no such active layer, the newest stack); None without one."""
        stacks = [lay for lay in self.viewer.layers if is_comparison_stack(lay)]
        output = self._output_of(self.viewer.layers.selection.active)
        stack = output if output in stacks else (stacks[-1] if stacks else None)
        if stack is None:
            return None
        captions = stack.metadata["captions"]
        world_to_data = stack.world_to_data(self.viewer.dims.point)
        index = int(min(max(round(float(world_to_data[0])), 0), len(captions) - 1))
        return captions[index], index, len(captions)

    def _text_overlay(self) -> Any:
        """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9), or None."""
        canvas = getattr(self.viewer, "canvas", None)
        overlays = getattr(canvas, "overlays", None)
        overlay = getattr(overlays, "text", None) if overlays is not None else None
        if overlay is None and not hasattr(self.viewer, "canvas"):
            overlay = getattr(self.viewer, "text_overlay", None)  # napari < 0.9
        return overlay

    def _update_comparison_label(self, event=None) -> None:
        if self.closed or not is_alive(self):
            return
        shown = self.comparison_caption()
        overlay = self._text_overlay()
        if shown is None:
            self.comparison_label.setText("")
            if overlay is not None and self._overlay_ours:
                overlay.visible = False
                self._overlay_ours = False
            return
        caption, index, count = shown
        text = f"caption {index + 1}/{count}: “{caption}”"
        self.comparison_label.setText(f"Slice shown: {text}")
        if overlay is not None:
            overlay.text = text
            overlay.visible = True
            self._overlay_ours = True

    # ------------------------------------------------------------------ models
    def _refresh_models(self, select_spec: str | None = None) -> None:
        specs_before = self.model_combo.specs()
        current = select_spec or self.selected_model()
        self.model_combo.refill(select=current)
        if self.model_combo.currentData() is None:
            self.model_combo.blockSignals(True)
            self.model_combo.select(self._preferred_model())
            self.model_combo.blockSignals(False)
        if not specs_before:  # the first fill: describe/load the preselected model
            return
        self._update_scales()

    def _preferred_model(self) -> str:
        """The bundled model ``"default"`` means at x4, else a trained one, else untrained PDN x4."""
        specs = self.model_combo.specs()
        default = default_model_name()
        if default in specs:
            return default
        trained = [c.spec for c in self.model_combo.choices() if c.group != UNTRAINED]
        return trained[0] if trained else DEFAULT_UNTRAINED

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
        if self.model_combo.findData(spec) < 0:
            self.model_combo.addItem(spec, spec)
        index = self.model_combo.findData(spec)
        if self.model_combo.currentIndex() == index:
            self._on_model_changed()  # already chosen (e.g. by the refresh above): still describe/load it
        else:
            self.model_combo.setCurrentIndex(index)

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
            self.set_status(f"Could not use {path}: {error}", error=True)

    def _model_method_scale(self, spec: str | None) -> tuple[str | None, int | None]:
        choice = self.model_combo.choice(spec) if spec is not None else None
        if choice is not None:
            return choice.method, choice.scale
        if spec and spec.startswith("random:"):
            from napari_textsr.loading import ModelSpec, ModelSpecError

            try:
                parsed = ModelSpec.parse(spec)
            except ModelSpecError:
                return None, None
            return parsed.method, parsed.scale
        return None, None

    def _update_scales(self) -> None:
        """List the scales the chosen model's method has models for; show the model's own."""
        method, scale = self._model_method_scale(self.selected_model())
        self.scale_combo.blockSignals(True)
        self.scale_combo.clear()
        if method is None:
            if scale is not None:
                self.scale_combo.addItem(f"x{scale}", scale)
            self.scale_combo.setEnabled(False)
        else:
            by_scale: dict[int, set[str]] = {}
            for c in self.model_combo.choices():
                if c.method == method and c.scale is not None:
                    by_scale.setdefault(c.scale, set()).add(c.group)
            for s in sorted(by_scale):
                only_untrained = by_scale[s] == {UNTRAINED}
                self.scale_combo.addItem(f"x{s}" + (" (untrained)" if only_untrained else ""), s)
            self.scale_combo.setEnabled(True)
        index = self.scale_combo.findData(scale)
        self.scale_combo.setCurrentIndex(max(index, 0))
        self.scale_combo.blockSignals(False)

    def _on_scale_chosen(self, index: int) -> None:
        """The user picked a scale: switch to the best model of the same method at that scale."""
        scale = self.scale_combo.itemData(index)
        current = self.model_combo.choice()
        method, current_scale = self._model_method_scale(self.selected_model())
        if method is None or scale == current_scale:
            return
        candidates = [c for c in self.model_combo.choices() if c.method == method and c.scale == scale]
        if not candidates:
            return
        group = current.group if current is not None else BUNDLED
        default = default_model_name(scale)  # not a model trained for JPEG inputs alone

        def rank(c: ModelChoice) -> tuple[int, int, int]:
            return (
                0 if c.group == group else 1,
                _GROUP_PREFERENCE.index(c.group) if c.group in _GROUP_PREFERENCE else 9,
                0 if c.spec == default else 1,
            )

        self.select_model(min(candidates, key=rank).spec)

    def _on_model_changed(self, index: int | None = None) -> None:
        """Show the model's description, loading it in the background if it is not loaded yet."""
        if self.closed:
            return
        self._update_scales()
        self.model_combo._update_tooltip()
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
        load_in_background(
            self,
            lambda: self.store.get(spec, device),
            lambda upscaler: self._on_model_loaded(spec, device, upscaler),
            lambda error: self._on_model_failed(spec, error),
        )

    def _on_model_loaded(self, spec: str, device: str, upscaler: Any) -> None:
        if (spec, device) == (self.selected_model(), self.device_combo.currentText()):
            self.model_info.setText(describe_upscaler(upscaler))

    def _on_model_failed(self, spec: str, error: Exception) -> None:
        if spec == self.selected_model():
            self.model_info.setText(f"could not load: {error}")

    # ------------------------------------------------------------------ running
    @property
    def is_running(self) -> bool:
        return self._run is not None or bool(self._queue)

    def current_options(self) -> dict[str, Any]:
        """The widget's settings as keyword arguments of :func:`~napari_textsr.napari.jobs.make_job`."""
        return {
            "device": self.device_combo.currentText(),
            "tile": self.tile_combo.currentData(),
            "consistency": self.consistency_kernel_combo.currentData() if self.consistency_check.isChecked() else False,
            "attention": self.attention_check.isChecked(),
            "self_ensemble": self.ensemble_check.isChecked(),
            "whole_stack": self.stack_radio.isChecked(),
            "point": tuple(self.viewer.dims.point),
        }

    def _fail(self, message: str) -> None:
        self.set_status(message, error=True)

    def run(self) -> None:
        """Start a run with the current settings (errors go to the status line and a notification)."""
        if self.is_running:
            show_warning("Super-resolution is already running; cancel it first.")
            return
        if self.all_selected_check.isChecked():
            layers = self.selected_image_layers()
            if not layers:
                self._fail(
                    "No Image layer is selected in the layer list; select some, or untick 'all selected layers'."
                )
                return
        else:
            layer = self.selected_layer()
            if layer is None:
                others = [f"'{lay.name}' ({type(lay).__name__})" for lay in self.viewer.layers]
                hint = f" ({', '.join(others)} cannot be super-resolved)" if others else ""
                self._fail(f"No Image layer to super-resolve{hint}. Open or add an image first.")
                return
            layers = [layer]
        spec = self.selected_model()
        if spec is None:
            self._fail("Choose a model first.")
            return
        compare = self.compare_check.isChecked()
        jobs = []
        try:
            for layer in layers:
                text = self.caption_edit.toPlainText() if layer is self.selected_layer() else self.caption_for(layer)
                captions = split_captions(text, compare)
                options = self.current_options()
                for provider in self.job_option_providers:
                    options.update(provider(layer))
                job = make_job(layer, captions, spec, compare=compare, jpeg=self.jpeg_evidence_of(layer), **options)
                self._check_fits_untiled(job)
                jobs.append(job)
        except (TypeError, ValueError) as error:
            self._fail(f"Cannot super-resolve: {error}")
            return
        self.last_layers = []
        self._queue = jobs
        self._cancel = threading.Event()
        self._set_running(True)
        self._start_next()

    def _check_fits_untiled(self, job: UpscaleJob) -> None:
        """Refuse "no tiling" at once (before loading the model) when even the least memory any
        model needs per pixel exceeds what is free; the engine checks again with the model's own figure."""
        if job.tile != 0:
            return
        from napari_textsr import inference
        from napari_textsr.devices import select_device

        _method, scale = self._model_method_scale(job.model)
        cached = self.store.cached(job.model, job.device)
        scale = cached.scale if cached is not None else (scale or 4)
        shape = job.data.shape
        height, width = (shape[-3], shape[-2]) if job.source.rgb else (shape[-2], shape[-1])
        needed = height * width * _MIN_BYTES_PER_LR_PIXEL(scale)
        device = select_device(job.device)
        free = inference.available_memory_bytes(device)
        if needed > free:
            raise ValueError(
                f"'{job.source.name}' ({height}x{width} px at x{scale}) in one piece needs at least "
                f"{needed / 2**30:.2f} GiB, but only {free / 2**30:.2f} GiB is free on {device}; "
                "use tiling: choose a tile size, or auto (picked from free memory)"
            )

    def cancel(self) -> None:
        """Stop after the current tile; no layer is added (by this or any queued layer's run)."""
        if self.is_running:
            self._cancel.set()
            self._queue = []
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling after the current tile…")

    def on_shutdown(self) -> None:
        """The dock was closed or removed: cancel, add nothing, stop the timer."""
        self._cancel.set()
        self._queue = []
        self._timer.stop()
        if self._run is not None:
            self._run.close_progress()
        overlay = self._text_overlay()
        if overlay is not None and self._overlay_ours:
            overlay.visible = False

    def _start_next(self) -> None:
        job = self._queue.pop(0)
        self._job = job
        self._last_event = None
        self._first_tile_at = None
        run = BackgroundRun(
            self,
            run_job_in_worker,
            job,
            self._cancel,
            self.store,
            [layer.name for layer in self.viewer.layers],
            total=_PROGRESS_STEPS,
            description=f"Super-resolution of {job.source.name}",
            progress=self._napari_progress,
            on_each=self._on_event,
            on_update=self._on_update,
            on_return=self._on_returned,
            on_error=self._on_errored,
            on_finish=self._on_finished,
        )
        self._run = run
        self._started = time.perf_counter()
        self._timer.start()
        cached = self.store.cached(job.model, job.device, job.scale)
        loading = "" if cached is not None else " (first use: loading it)"
        self.status_label.setText(f"Starting '{job.source.name}' with {job.model}{loading}…")
        self.progress_bar.setRange(0, 0)  # busy until the first tile
        run.start()

    def _set_running(self, running: bool) -> None:
        self.controls.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _napari_progress(self, event: JobProgress) -> tuple[int, str | None]:
        description = None
        if event.n_slices > 1 or event.n_captions > 1:
            parts = []
            if event.n_captions > 1:
                parts.append(f"caption {event.caption_index + 1}/{event.n_captions}")
            if event.n_slices > 1:
                parts.append(f"slice {event.slice_index + 1}/{event.n_slices}")
            description = f"Super-resolution of {self._job.source.name}: {', '.join(parts)}"
        return round(event.fraction * _PROGRESS_STEPS), description

    def _on_event(self, event: JobProgress) -> None:
        self._last_event = event
        if not event.loading and self._first_tile_at is None:
            self._first_tile_at = time.perf_counter()

    def _on_update(self, event: JobProgress) -> None:
        if event.loading:
            self._show_running_status()
            return
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, _PROGRESS_STEPS)
            cached = self.store.cached(self._job.model, self._job.device, self._job.scale)
            if cached is not None:
                self.model_info.setText(describe_upscaler(cached))
        self.progress_bar.setValue(round(event.fraction * _PROGRESS_STEPS))
        self._show_running_status()

    def eta_seconds(self) -> float | None:
        """Seconds left in this layer's run, from the pace since the first tile (None before two tiles)."""
        event, first = self._last_event, self._first_tile_at
        if event is None or first is None or event.loading or event.done < 2 or not event.total:
            return None
        # the first tile's time includes warm-up: measure from it to now over the tiles after it
        pace = (time.perf_counter() - first) / max(event.done - 1, 1)
        return pace * (event.total - event.done)

    def _show_running_status(self) -> None:
        if self._run is None or self.closed or not is_alive(self):
            return
        elapsed = time.perf_counter() - self._started
        event = self._last_event
        if event is None or event.loading:
            where = f"loading model {self._job.model}"
        else:
            where = event.message or f"tile {event.done}/{event.total}"
        text = f"Running {elapsed:.0f} s — {where}"
        eta = self.eta_seconds()
        if eta is not None:
            text += f" — about {_format_seconds(eta)} left"
        if self._queue:
            text += f" ({len(self._queue)} more layer(s) queued)"
        self.status_label.setText(text)

    def _on_returned(self, outcome: JobOutcome) -> None:
        self.last_outcome = outcome
        job = self._job
        if outcome.cancelled or self._cancel.is_set():
            outcome.cancelled = True
            self._queue = []
            self.status_label.setText(f"Cancelled after {outcome.seconds:.1f} s; no layer added.")
            show_info("Super-resolution cancelled; no layer was added.")
            return
        if outcome.error is not None:
            self._queue = []
            self._fail(f"Super-resolution: {outcome.error}")
            return
        self._pending_layers = (job, outcome, list(outcome.layer_data), [])
        self.status_label.setText(f"Adding the layers of '{job.source.name}'…")

    def _add_next_layer(self) -> None:
        """Hand napari one layer, then let the event loop paint and deliver input and timers before the next."""
        pending = self._pending_layers
        if pending is None:
            return
        job, outcome, remaining, added = pending
        if self.closed or self._cancel.is_set() or not is_alive(self):
            self._pending_layers = None  # closed meanwhile: add nothing more
            self._finish_run()
            return
        try:
            if remaining:
                added += add_layer_data(self.viewer, [remaining.pop(0)])
        except Exception as error:  # e.g. out of memory; keep the widget alive
            self._pending_layers = None
            self._fail(f"Super-resolution: could not add the layers: {error}")
            self._finish_run()
            return
        if remaining:
            QTimer.singleShot(LAYER_ADD_PAUSE_MS, self._add_next_layer)
            return
        self._pending_layers = None
        self.last_layers += added
        output = added[0]
        self.viewer.layers.selection.active = output  # the output, not its last (hidden) map
        self.status_label.setText(summarize(job, outcome, output.name))
        self._finish_run()

    def _on_errored(self, error: Exception) -> None:  # a bug, not a user error: say so, stay usable
        self.last_outcome = JobOutcome(error=str(error))
        self._queue = []
        self._fail(f"Super-resolution failed unexpectedly: {error!r}")

    def _on_finished(self) -> None:
        # `finished` can arrive re-entrantly while `returned` is still being handled (napari's
        # progress bar processes events when its description changes), before _on_returned has
        # queued the layers: decide on the next event-loop turn, once `returned` is through.
        QTimer.singleShot(0, self._after_finished)

    def _after_finished(self) -> None:
        if not is_alive(self):
            return
        if self._pending_layers is not None and not self.closed:
            # Python's full garbage collection of napari's and torch's objects holds the GUI thread
            # 0.2-0.3 s; when it starts on its own during a layer insertion (0.1-0.3 s each) the two
            # add up past 0.5 s (benchmarks/bench_gui_responsiveness.py --why). Collect now, alone,
            # so none is due while the layers go in; _finish_run once every layer is in.
            gc.collect()
            QTimer.singleShot(LAYER_ADD_PAUSE_MS, self._add_next_layer)
            return
        self._finish_run()

    def _finish_run(self) -> None:
        self._timer.stop()
        if self._run is not None:
            self._run.close_progress()
        self._run = None
        if self.closed or not is_alive(self):
            self._queue = []
            return
        if self._queue and not self._cancel.is_set():
            self._start_next()
            return
        self._queue = []
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
        parts.append(f"consistency error {first.consistency_error:.4f} ({first.consistency_kernel})")
    if first.attention:
        parts.append(f"{len(first.attention)} attention maps")
    return "; ".join(parts)
