"""Dock widget "Train / fine-tune": train a model on your own images and captions, live.

Tick the Image layers to learn from and type what each shows (or pick a
captioned folder), choose a base model (a new one of some method and size, or
a checkpoint to fine-tune), Start. The Trainer's generator runs in a napari
``thread_worker``; every step updates the progress bar and the loss curve,
validation adds a PSNR point, previews (LR / output / target) refresh every
few hundred steps, and every checkpoint written is registered at once in the
model picker of the super-resolution widget. Cancel finishes the current step
and writes a loadable checkpoint.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QDoubleValidator, QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_textsr.models import SUPPORTED_SCALES, available_methods, get_model_class
from napari_textsr.napari.model_store import BUNDLED, FILE, MODEL_STORE, TRAINED, ModelStore, method_title
from napari_textsr.napari.plot import CurvePlot
from napari_textsr.napari.training_job import (
    TrainingControl,
    TrainingLayer,
    TrainingOutcome,
    TrainingRequest,
    run_training_in_worker,
)
from napari_textsr.napari.widget_parts import BackgroundRun, DevicePicker, DockWidget, ModelPicker, compact_combo
from napari_textsr.training.config import config_defaults, records_recipe
from napari_textsr.training.presets import DEFAULT_PRESET

if TYPE_CHECKING:
    import napari

NEW_MODEL = "__new__"
# The Degradation entry that fine-tunes with the starting model's own recipe (textsr train --recipe-from init).
STARTING_RECIPE = "__recipe__"
PREVIEW_SIZE = 96  # three side by side fit a ~380 px dock
_LAYER_COLUMN, _CAPTION_COLUMN = 0, 1


def default_run_folder(method: str, scale: int) -> Path:
    """``<cache>/runs/<method>-x<scale>-<time>`` (cache: ``$NAPARI_TEXTSR_CACHE`` or ``~/.cache/napari-textsr``)."""
    from napari_textsr.prompts import cache_dir

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "runs" / f"{method}-x{scale}-{stamp}"


def to_pixmap(image: np.ndarray, size: int = PREVIEW_SIZE) -> QPixmap:
    """float (H, W, 3) in [0, 1] -> a QPixmap of ``size`` px width (nearest-neighbour, pixels stay visible)."""
    rgb = np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)[..., :3])
    height, width = rgb.shape[:2]
    qimage = QImage(rgb.data, width, height, 3 * width, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(qimage).scaled(size, size, Qt.KeepAspectRatio, Qt.FastTransformation)


ENCODER_CHOICES: list[tuple[str, str, str]] = [
    (
        "textsr-clip-s (bundled, trained on captions)",
        "textsr-clip-s:bundled:textsr-clip-s",
        "The first prompt encoder shipped with the plugin (the bundled TGSR and CLIP-SR use it): "
        "captions carry meaning from the first step.",
    ),
    (
        "textsr-clip-s-words2 (bundled, knows degradation words)",
        "textsr-clip-s:bundled:textsr-clip-s-words2",
        "textsr-clip-s fine-tuned on degraded images with words for how they were made "
        "(blurry, sharp, ...) and so that those words move the embedding (pretrain-encoder "
        "--word-loss); the bundled PDNs use it, and on blurred held-out photographs "
        "'soft and out of focus' gains the x2 one 1.8 dB over 'sharp and clean'.",
    ),
    (
        "ViT-B-32, OpenAI weights (downloads ~600 MB)",
        "ViT-B-32:openai",
        "The CLIP of the papers; needs the network the first time.",
    ),
    (
        "textsr-tiny, random weights (tests only)",
        "textsr-tiny:none",
        "An untrained tiny encoder: captions carry no meaning. For trying the plumbing and tests.",
    ),
]
DEFAULT_ENCODER = ENCODER_CHOICES[0][1]
# The fine-tuning cap is the widget's own rule (a user switching to fine-tuning
# keeps a new model's rate otherwise); every other default is TrainConfig's.
FINE_TUNE_LEARNING_RATE = "1e-4"
# CLIP-SR embeds the encoder's ViT: its size preset must match the encoder's tower.
_CLIPSR_PRESET_FOR_ENCODER = {"textsr-clip-s": "default", "textsr-tiny": "tiny", "ViT-B-32": "paper"}


class TrainingWidget(DockWidget):
    """The "Train / fine-tune" dock widget.

    For scripts and tests: ``layer_table`` (column 0 checkable layer names,
    column 1 captions; or :meth:`use_layer`), ``folder_edit``, ``base_combo``,
    ``method_combo``, ``preset_combo``, ``scale_combo``, ``encoder_combo``,
    ``steps_spin``, ``learning_rate_edit``, ``batch_spin``, ``patch_spin``,
    ``degradation_combo``, ``preview_spin``, ``device_combo``, ``out_edit``, ``start_button``,
    ``cancel_button``, ``progress_bar``, ``status_label``, ``loss_plot``,
    ``psnr_plot``, ``preview_labels``, ``sections``; :meth:`start` /
    :meth:`cancel`, ``is_running``, ``last_outcome``, ``events_seen``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, store: ModelStore = MODEL_STORE) -> None:
        super().__init__(napari_viewer, store)
        self.last_outcome: TrainingOutcome | None = None
        self.events_seen = 0
        self._run: BackgroundRun | None = None
        self._control: TrainingControl | None = None
        self._run_name = ""
        self._layer_state: dict[int, tuple[bool, str]] = {}
        self._learning_rate_before_fine_tune: str | None = None
        self._encoder_before_fine_tune: str | None = None  # a new model's encoder choice, kept while fine-tuning
        self._degradation_before_fine_tune: str | None = None  # likewise its degradation preset
        self._pending_preview: Any = None
        self._build()
        self.listen_to_layer_list()
        self.listen(self.store.checkpoint_registered, self._refresh_bases)
        self.refresh_layers()
        self._refresh_bases()
        self._on_method_changed()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        self.controls = QWidget()  # what a run locks: every section but the curves and previews
        locked = QVBoxLayout(self.controls)
        locked.setContentsMargins(0, 0, 0, 0)
        self.body_layout.insertWidget(0, self.controls)
        data = self.add_section("Training images", collapsible=False, into=locked)
        self.layer_table = QTableWidget(0, 2)
        self.layer_table.setHorizontalHeaderLabels(["Image layer", "Caption"])
        # the two columns share the dock's width (long names are elided; the tooltip has them in full)
        self.layer_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.layer_table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.layer_table.setTextElideMode(Qt.ElideMiddle)
        self.layer_table.verticalHeader().setVisible(False)
        self.layer_table.setSelectionMode(QAbstractItemView.NoSelection)
        self.layer_table.setMinimumHeight(80)
        self.layer_table.setMaximumHeight(150)
        self.layer_table.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.layer_table.setToolTip(
            "Tick the high-resolution layers to learn from; each needs a caption (double-click to type)"
        )
        self.layer_table.itemChanged.connect(self._remember_layer_row)
        data.add_row(self.layer_table)
        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("optional: folder of images + captions.csv")
        self.folder_edit.setToolTip(
            "A captioned folder (images and captions.csv with file,caption), added to the ticked layers"
        )
        folder_button = QPushButton("…")
        folder_button.setToolTip("Choose the folder")
        folder_button.clicked.connect(self._browse_folder)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(folder_button)
        data.add_row("Folder", folder_row)

        model = self.add_section("Model", collapsible=False, into=locked)
        self.base_combo = ModelPicker(
            self.store,
            groups=(BUNDLED, TRAINED, FILE),
            leading=[("new model (trained from scratch)", NEW_MODEL)],
            prefix="fine-tune ",
        )
        self.base_combo.setToolTip(
            "Train a new model, or fine-tune a checkpoint (its method, scale and prompt encoder are kept)"
        )
        self.base_combo.currentIndexChanged.connect(self._on_base_changed)
        model.add_row("Base", self.base_combo)
        self.method_combo = compact_combo(QComboBox(), 6)
        for method in available_methods():
            self.method_combo.addItem(method_title(method), method)
        self.method_combo.setCurrentIndex(self.method_combo.findData("pdn"))  # the fastest to train
        self.method_combo.setToolTip("TGSR, CLIP-SR or PDN (PDN is the fastest to train)")
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.preset_combo = compact_combo(QComboBox(), 5)
        self.preset_combo.setToolTip("Model size: tiny trains in minutes on a CPU")
        self.scale_combo = compact_combo(QComboBox(), 3)
        for scale in SUPPORTED_SCALES:
            self.scale_combo.addItem(f"x{scale}", scale)
        self.scale_combo.setCurrentIndex(list(SUPPORTED_SCALES).index(4))
        self.scale_combo.setToolTip("Upscaling factor the model learns")
        method_row = QHBoxLayout()  # one short row each: the dock fits a laptop screen's width
        method_row.addWidget(self.method_combo, 2)
        method_row.addWidget(self.scale_combo, 1)
        model.add_row("Method", method_row)
        model.add_row("Size", self.preset_combo)
        self.encoder_combo = compact_combo(QComboBox())
        for label, spec, tip in ENCODER_CHOICES:
            self.encoder_combo.addItem(label, spec)
            self.encoder_combo.setItemData(self.encoder_combo.count() - 1, tip, Qt.ToolTipRole)
        self.encoder_combo.setToolTip(
            "The (frozen) prompt encoder that turns captions into vectors. "
            "Fine-tuning always keeps the checkpoint's own."
        )
        self.encoder_combo.currentIndexChanged.connect(self._on_method_changed)
        model.add_row("Encoder", self.encoder_combo)

        settings = self.add_section("Settings", into=locked)
        defaults = config_defaults()
        default_learning_rate = f"{defaults['learning_rate']:g}"
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(defaults["steps"])
        self.steps_spin.setSingleStep(100)
        self.steps_spin.setToolTip("Optimizer steps (about 0.5 s each for a tiny model on a 2-core CPU)")
        self.learning_rate_edit = QLineEdit(default_learning_rate)
        validator = QDoubleValidator(1e-8, 1.0, 10)
        validator.setNotation(QDoubleValidator.ScientificNotation)
        self.learning_rate_edit.setValidator(validator)
        self.learning_rate_edit.setToolTip(
            f"Peak learning rate of the cosine schedule: {default_learning_rate} for a new model, "
            f"at most {FINE_TUNE_LEARNING_RATE} for fine-tuning"
        )
        steps_row = QHBoxLayout()
        steps_row.addWidget(self.steps_spin, 1)
        steps_row.addWidget(QLabel("rate"))
        steps_row.addWidget(self.learning_rate_edit, 1)
        settings.add_row("Steps", steps_row)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(defaults["batch_size"])
        self.batch_spin.setToolTip("Patches per step")
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(4, 512)
        self.patch_spin.setValue(defaults["lr_patch"])
        self.patch_spin.setToolTip("Side of the low-resolution training patches (high-resolution: x scale)")
        self.patch_spin.setSuffix(" px")
        settings.add_row("Batch", self.batch_spin)
        settings.add_row("LR patch", self.patch_spin)
        from napari_textsr.training.degradations import (
            DEGRADATION_PRESET_TITLES,
            DEGRADATION_PRESETS,
            describe_presets,
        )

        self.degradation_combo = compact_combo(QComboBox(), 8)
        for name in DEGRADATION_PRESETS:
            self.degradation_combo.addItem(name, name)
            self.degradation_combo.setItemData(
                self.degradation_combo.count() - 1, DEGRADATION_PRESET_TITLES[name], Qt.ToolTipRole
            )
        self.degradation_combo.addItem("as the starting model", STARTING_RECIPE)
        self.degradation_combo.setItemData(
            self.degradation_combo.count() - 1,
            "Fine-tuning: the starting model's own recipe as its checkpoint records it (its degradation family, "
            "degradation words and caption dropout, losses and weight average; textsr train --recipe-from init). "
            "Steps, rate, batch and patch are the ones above",
            Qt.ToolTipRole,
        )
        self.degradation_combo.setCurrentIndex(self.degradation_combo.findData(DEFAULT_PRESET))
        self.degradation_combo.setToolTip(
            f"How the low-resolution inputs are made from your images, drawn anew for every patch: {describe_presets()}; "
            "or, when fine-tuning, as the starting model was trained"
        )
        settings.add_row("Degradation", self.degradation_combo)
        self.preview_spin = QSpinBox()
        self.preview_spin.setRange(1, 100_000)
        self.preview_spin.setValue(defaults["preview_every"])
        self.preview_spin.setSuffix(" steps")
        self.preview_spin.setToolTip("Validation, preview and checkpoint interval")
        settings.add_row("Validate every", self.preview_spin)
        self.device_combo = DevicePicker()
        settings.add_row("Device", self.device_combo)
        out_row = QHBoxLayout()
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("automatic: ~/.cache/napari-textsr/runs/…")
        self.out_edit.setToolTip(
            "Where model.textsr.safetensors and train_state.pt go "
            "(default ~/.cache/napari-textsr/runs/<method>-x<scale>-<time>)"
        )
        out_button = QPushButton("…")
        out_button.setToolTip("Choose the output folder")
        out_button.clicked.connect(self._browse_out)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(out_button)
        settings.add_row("Output", out_row)

        curves = self.add_section("Curves")
        self.loss_plot = CurvePlot("training loss (log scale)", log_y=True)
        self.loss_plot.add_series("loss", "#f0a030")
        self.psnr_plot = CurvePlot("validation PSNR (dB, Y channel)")
        self.psnr_plot.add_series("model", "#40b0f0")
        self.psnr_plot.add_series("bicubic", "#a0a0a0", dashed=True)
        curves.add_row(self.loss_plot)
        curves.add_row(self.psnr_plot)

        preview = self.add_section("Preview", collapsed=True)
        previews = QGridLayout()
        self.preview_labels: dict[str, QLabel] = {}
        for column, key in enumerate(("lr", "output", "target")):
            title = QLabel({"lr": "LR input", "output": "model output", "target": "target"}[key])
            title.setAlignment(Qt.AlignCenter)
            image = QLabel()
            image.setFixedSize(PREVIEW_SIZE, PREVIEW_SIZE)
            image.setAlignment(Qt.AlignCenter)
            previews.addWidget(title, 0, column)
            previews.addWidget(image, 1, column)
            self.preview_labels[key] = image
        self.preview_caption = QLabel("")
        self.preview_caption.setWordWrap(True)
        previews.addWidget(self.preview_caption, 2, 0, 1, 3)
        preview.add_row(previews)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip(
            "Train in the background with these settings; checkpoints appear in the model lists"
        )
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step and write a loadable checkpoint")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.footer.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setValue(0)
        self.progress_bar.setToolTip("Steps done")
        self.footer.addWidget(self.progress_bar)
        self.footer.addWidget(self.status_label)

    # ------------------------------------------------------------------ layers
    def refresh_layers(self, event=None) -> None:
        if self.closed:
            return
        self.layer_table.blockSignals(True)
        layers = self.image_layers()
        self.layer_table.setRowCount(len(layers))
        for row, layer in enumerate(layers):
            checked, caption = self._layer_state.get(id(layer), (False, str(layer.metadata.get("caption", "") or "")))
            name_item = QTableWidgetItem(layer.name)
            name_item.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            name_item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
            name_item.setData(Qt.UserRole, layer)
            name_item.setToolTip(f"{layer.name}: tick to learn from this layer")
            self.layer_table.setItem(row, _LAYER_COLUMN, name_item)
            caption_item = QTableWidgetItem(caption)
            caption_item.setToolTip("What this layer shows (double-click to edit)")
            self.layer_table.setItem(row, _CAPTION_COLUMN, caption_item)
        self.layer_table.blockSignals(False)

    def _remember_layer_row(self, item: QTableWidgetItem) -> None:
        row = item.row()
        name_item = self.layer_table.item(row, _LAYER_COLUMN)
        caption_item = self.layer_table.item(row, _CAPTION_COLUMN)
        if name_item is None or caption_item is None:
            return
        layer = name_item.data(Qt.UserRole)
        self._layer_state[id(layer)] = (name_item.checkState() == Qt.Checked, caption_item.text())

    def use_layer(self, layer_or_name: Image | str, caption: str | None = None, use: bool = True) -> None:
        """Tick (or untick) a layer for training and set its caption."""
        for row in range(self.layer_table.rowCount()):
            name_item = self.layer_table.item(row, _LAYER_COLUMN)
            layer = name_item.data(Qt.UserRole)
            if layer is layer_or_name or layer.name == layer_or_name:
                if caption is not None:
                    self.layer_table.item(row, _CAPTION_COLUMN).setText(caption)
                name_item.setCheckState(Qt.Checked if use else Qt.Unchecked)
                return
        raise ValueError(f"no Image layer {getattr(layer_or_name, 'name', layer_or_name)!r} in the viewer")

    def chosen_layers(self) -> list[TrainingLayer]:
        """The ticked layers with their captions (a snapshot for the worker)."""
        chosen = []
        for row in range(self.layer_table.rowCount()):
            name_item = self.layer_table.item(row, _LAYER_COLUMN)
            if name_item.checkState() != Qt.Checked:
                continue
            layer = name_item.data(Qt.UserRole)
            caption = self.layer_table.item(row, _CAPTION_COLUMN).text().strip()
            data = layer.data[0] if layer.multiscale else layer.data
            chosen.append(TrainingLayer(layer.name, data, bool(layer.rgb), (caption,)))
        return chosen

    # ------------------------------------------------------------------ models
    def _refresh_bases(self, *_: Any) -> None:
        if not self.closed:
            self.base_combo.refill()
            if self.base_combo.currentData() is None:
                self.base_combo.select(NEW_MODEL)

    def _base_checkpoint(self) -> Path | None:
        """Path of the checkpoint to fine-tune (None for a new model)."""
        spec = self.base_combo.currentData()
        if spec in (None, NEW_MODEL):
            return None
        path = Path(spec)
        if path.is_file():
            return path
        from napari_textsr.inference import list_models

        for model in list_models():
            if model.name == spec:
                return model.path
        raise FileNotFoundError(f"no checkpoint for {spec!r}")

    def _select_degradation(self, name: str | None) -> None:
        self.degradation_combo.setCurrentIndex(self.degradation_combo.findData(name))

    def _on_base_changed(self, index: int | None = None) -> None:
        try:
            path = self._base_checkpoint()
        except FileNotFoundError as error:
            self.set_status(str(error), error=True)
            return
        fine_tune = path is not None
        for combo in (self.method_combo, self.preset_combo, self.scale_combo, self.encoder_combo):
            combo.setEnabled(not fine_tune)
        if fine_tune:
            from napari_textsr.checkpoints import read_metadata

            meta = read_metadata(path)
            self.method_combo.setCurrentIndex(self.method_combo.findData(meta.method))
            self.scale_combo.setCurrentIndex(self.scale_combo.findData(meta.scale))
            if self._encoder_before_fine_tune is None:
                self._encoder_before_fine_tune = self.encoder_combo.currentData()
            if self.encoder_combo.findData(meta.encoder_spec) < 0:
                self.encoder_combo.addItem(meta.encoder_spec, meta.encoder_spec)
            self.encoder_combo.setCurrentIndex(self.encoder_combo.findData(meta.encoder_spec))
            # Fine-tuning on another recipe can undo what the model's own taught it: take its own by default
            # on entering fine-tuning; a choice made while fine-tuning stays when another checkpoint is picked.
            current = self.degradation_combo.currentData()
            entering = self._degradation_before_fine_tune is None
            if entering:
                self._degradation_before_fine_tune = DEFAULT_PRESET if current == STARTING_RECIPE else current
            if not records_recipe(meta):
                if current == STARTING_RECIPE:  # nothing recorded to take
                    self._select_degradation(self._degradation_before_fine_tune)
            elif entering:
                self._select_degradation(STARTING_RECIPE)
            if self.learning_rate() is None or self.learning_rate() > float(FINE_TUNE_LEARNING_RATE):
                if self._learning_rate_before_fine_tune is None:
                    self._learning_rate_before_fine_tune = self.learning_rate_edit.text()
                self.learning_rate_edit.setText(FINE_TUNE_LEARNING_RATE)
        else:
            # Back to a new model, which has no recipe of its own: the degradation chosen before.
            degradation, self._degradation_before_fine_tune = self._degradation_before_fine_tune, None
            if self.degradation_combo.currentData() == STARTING_RECIPE:
                self._select_degradation(degradation or DEFAULT_PRESET)
            # Back to a new model: undo the fine-tuning cap (unless the user typed another rate since).
            before, self._learning_rate_before_fine_tune = self._learning_rate_before_fine_tune, None
            if before is not None and self.learning_rate_edit.text() == FINE_TUNE_LEARNING_RATE:
                self.learning_rate_edit.setText(before)
            # Back to the encoder chosen for a new model before (a checkpoint's own was shown meanwhile).
            encoder, self._encoder_before_fine_tune = self._encoder_before_fine_tune, None
            if encoder is None and self.encoder_combo.currentIndex() >= len(ENCODER_CHOICES):
                encoder = DEFAULT_ENCODER
            if encoder is not None and self.encoder_combo.findData(encoder) >= 0:
                self.encoder_combo.setCurrentIndex(self.encoder_combo.findData(encoder))

    def _on_method_changed(self, index: int | None = None) -> None:
        method = self.method_combo.currentData()
        current = self.preset_combo.currentText()
        presets = list(get_model_class(method).config_class.PRESETS)
        if method == "clipsr":  # its ViT is the encoder's: the preset follows the encoder
            arch = str(self.encoder_combo.currentData() or "").split(":")[0]
            wanted = _CLIPSR_PRESET_FOR_ENCODER.get(arch)
            current = wanted if wanted in presets else current
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItems(presets)
        self.preset_combo.setCurrentText(
            current if current in presets else ("tiny" if "tiny" in presets else presets[0])
        )
        self.preset_combo.blockSignals(False)

    def learning_rate(self) -> float | None:
        """The learning rate typed in (None if it is not a positive number)."""
        try:
            value = float(self.learning_rate_edit.text())
        except ValueError:
            return None
        return value if value > 0 else None

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images with captions.csv")
        if folder:
            self.folder_edit.setText(folder)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the checkpoint and training state")
        if folder:
            self.out_edit.setText(folder)

    # ------------------------------------------------------------------ running

    def make_request(self) -> TrainingRequest:
        """The settings as a TrainingRequest (ValueError/FileNotFoundError with a user-facing message)."""
        from napari_textsr.training.trainer import TrainConfig

        layers = self.chosen_layers()
        folder = self.folder_edit.text().strip() or None
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"training folder not found: {folder}")
        if not layers and folder is None:
            raise ValueError("tick at least one Image layer (and type its caption), or choose a captioned folder")
        for layer in layers:
            if not layer.captions[0]:
                raise ValueError(f"layer '{layer.name}' has no caption: type what it shows")
        learning_rate = self.learning_rate()
        if learning_rate is None:
            raise ValueError(f"learning rate {self.learning_rate_edit.text()!r} is not a positive number, e.g. 2e-4")
        init = self._base_checkpoint()
        method, scale = self.method_combo.currentData(), self.scale_combo.currentData()
        recipe: dict[str, Any] = {}
        if self.degradation_combo.currentData() == STARTING_RECIPE:
            if init is None:
                raise ValueError(
                    "Degradation 'as the starting model' takes the recipe of the model you fine-tune: "
                    "choose one under 'Base', or a degradation preset"
                )
            from napari_textsr.training.config import recipe_of

            recipe = recipe_of(init, method=method, scale=scale)
        else:
            from napari_textsr.training.degradations import DegradationFamily

            recipe["degradation"] = DegradationFamily.preset_family(self.degradation_combo.currentData(), scale)
        recipe = {k: v for k, v in recipe.items() if k in ("degradation", "captions", "losses", "ema_decay")}
        out_dir = (
            Path(self.out_edit.text().strip()).expanduser()
            if self.out_edit.text().strip()
            else default_run_folder(method, scale)
        )
        interval = self.preview_spin.value()
        config = TrainConfig(
            method=method,
            scale=scale,
            preset=self.preset_combo.currentText(),
            encoder=None if init is not None else str(self.encoder_combo.currentData()),
            steps=self.steps_spin.value(),
            batch_size=self.batch_spin.value(),
            lr_patch=self.patch_spin.value(),
            learning_rate=learning_rate,
            val_every=interval,
            checkpoint_every=interval,
            preview_every=interval,
            out_dir=out_dir,
            init=init,
            device=self.device_combo.currentText(),
            name=out_dir.name,
            **recipe,
        )
        return TrainingRequest(config=config, layers=layers, folder=folder)

    def start(self) -> None:
        """Start training with the current settings (errors go to the status line and a notification)."""
        if self.is_running:
            return
        try:
            request = self.make_request()
        except (ValueError, FileNotFoundError, OSError) as error:
            self.set_status(f"Cannot start training: {error}", error=True)
            return
        self._control = TrainingControl()
        self._run_name = request.config.out_dir.name
        self.events_seen = 0
        self._pending_preview = None
        self.loss_plot.clear()
        self.psnr_plot.clear()
        self._run = BackgroundRun(
            self,
            run_training_in_worker,
            request,
            self._control,
            total=request.config.steps,
            description=f"Training {self._run_name}",
            progress=lambda event: (event.step, None),
            on_each=self._on_event,
            on_update=self._on_update,
            on_return=self._on_returned,
            on_error=self._on_errored,
            on_finish=self._on_finished,
        )
        self.progress_bar.setRange(0, request.config.steps)
        self.progress_bar.setValue(0)
        self._set_running(True)
        self.status_label.setText(f"Preparing {len(request.layers)} layer(s) and the model… ({request.config.out_dir})")
        self._run.start()

    @property
    def is_running(self) -> bool:
        return self._run is not None

    def cancel(self) -> None:
        """Stop after the current step; the checkpoint of that step is written and registered."""
        if self._control is not None and self.is_running:
            self._control.stop()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Stopping after the current step and writing a checkpoint…")

    def on_shutdown(self) -> None:
        """The dock was closed or removed: stop training (the Trainer writes its checkpoint)."""
        if self._control is not None:
            self._control.stop()
        if self._run is not None:
            self._run.close_progress()

    def _set_running(self, running: bool) -> None:
        self.controls.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _register(self, path: Path) -> None:
        self.store.register_checkpoint(path, label=f"trained: {self._run_name}", group=TRAINED)

    def _on_event(self, event: Any) -> None:
        """Every event: collect the curves' points and register checkpoints (cheap; no repaint)."""
        self.events_seen += 1
        if event.losses:
            self.loss_plot.add_point(
                "loss", event.step, event.losses.get("total", next(iter(event.losses.values()))), repaint=False
            )
        if event.validation is not None:
            self.psnr_plot.add_point("model", event.step, event.validation.psnr, repaint=False)
            self.psnr_plot.add_point("bicubic", event.step, event.validation.psnr_bicubic, repaint=False)
        if event.preview is not None:
            self._pending_preview = (event.step, event.preview)
        if event.checkpoint is not None:
            self._register(Path(event.checkpoint))

    def _on_update(self, event: Any) -> None:
        """At most a few times a second: repaint curves, previews, progress and the status line."""
        self.loss_plot.update()
        self.psnr_plot.update()
        if self._pending_preview is not None:
            step, preview = self._pending_preview
            self._pending_preview = None
            self.preview_labels["lr"].setPixmap(to_pixmap(preview.lr))
            self.preview_labels["output"].setPixmap(to_pixmap(preview.output))
            self.preview_labels["target"].setPixmap(to_pixmap(preview.target))
            self.preview_caption.setText(f"step {step}: “{preview.caption}”")
        self.progress_bar.setValue(event.step)
        parts = [f"step {event.step}/{event.total_steps}"]
        if "total" in event.losses:
            parts.append(f"loss {event.losses['total']:.4g}")
        if self.psnr_plot.series["model"].points:
            psnr = self.psnr_plot.series["model"].points[-1][1]
            bicubic = self.psnr_plot.series["bicubic"].points[-1][1]
            parts.append(f"PSNR {psnr:.2f} dB (bicubic {bicubic:.2f})")
        if event.images_per_second:
            parts.append(f"{event.images_per_second:.1f} img/s, ETA {event.eta_seconds:.0f} s")
        if event.message:
            parts.append(event.message)
        self.status_label.setText(" · ".join(parts))

    def _on_returned(self, outcome: TrainingOutcome) -> None:
        self.last_outcome = outcome
        if outcome.checkpoint is not None and Path(outcome.checkpoint).is_file():
            self._register(Path(outcome.checkpoint))
        if outcome.error is not None:
            kept = f" The last checkpoint ({outcome.checkpoint}) is usable." if outcome.checkpoint else ""
            self.set_status(f"Training failed: {outcome.error}.{kept}", error=True)
            return
        summary = outcome.summary
        if summary is None:  # cancelled before the model was built
            self.status_label.setText("Cancelled before the first step; nothing was written.")
            return
        verb = "Stopped" if summary.cancelled else "Finished"
        text = f"{verb} after {summary.steps_completed}/{summary.total_steps} steps in {summary.elapsed_seconds:.0f} s"
        if summary.validation is not None:
            v = summary.validation
            text += f"; validation PSNR {v.psnr:.2f} dB (bicubic {v.psnr_bicubic:.2f})"
        if summary.checkpoint is not None:
            text += f". Checkpoint {summary.checkpoint}, now in the super-resolution widget's model list."
        self.status_label.setText(text)
        show_info(f"Training {self._run_name}: {text}")

    def _on_errored(self, error: Exception) -> None:
        self.last_outcome = TrainingOutcome(error=str(error))
        self.set_status(f"Training failed unexpectedly: {error!r}", error=True)

    def _on_finished(self) -> None:
        self._run = None
        self._control = None
        if not self.closed:
            self._set_running(False)
