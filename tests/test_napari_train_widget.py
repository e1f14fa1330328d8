"""The "Train / fine-tune" dock widget: a tiny run, progress, cancel, and the checkpoint in the SR widget."""

from __future__ import annotations

import numpy as np
import pytest

from napari_support import dock, notifications, viewer  # noqa: F401 (fixtures)
from napari_textsr.napari.model_store import ModelStore
from napari_textsr.napari.sr_widget import SuperResolutionWidget
from napari_textsr.napari.train_widget import TrainingWidget


def stripes(shape=(64, 64), period=4, vertical=True):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (((x if vertical else y) // period) % 2 * 200 + 30).astype(np.uint8)


@pytest.fixture
def trainer_setup(viewer, qtbot, tmp_path):
    store = ModelStore()  # registrations stay in this test
    viewer.add_image(stripes(vertical=True), name="vertical", metadata={"caption": "vertical stripes"})
    viewer.add_image(stripes(vertical=False), name="horizontal")
    sr = dock(viewer, SuperResolutionWidget(viewer, store=store), qtbot)
    # its default model loads in the background: let that finish inside the test
    qtbot.waitUntil(lambda: sr.model_info.text() not in ("", "loading…"), timeout=60_000)
    widget = dock(viewer, TrainingWidget(viewer, store=store), qtbot)
    widget.use_layer("vertical")  # caption from its metadata
    widget.use_layer("horizontal", "horizontal stripes")
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("pdn"))
    widget.preset_combo.setCurrentText("tiny")
    widget.scale_combo.setCurrentIndex(widget.scale_combo.findData(2))
    widget.batch_spin.setValue(2)
    widget.patch_spin.setValue(8)
    widget.device_combo.setCurrentText("cpu")
    widget.encoder_combo.setCurrentIndex(widget.encoder_combo.findData("textsr-tiny:none"))  # fast
    return widget, sr, store, tmp_path


def model_specs(sr):
    return [sr.model_combo.itemData(i) for i in range(sr.model_combo.count())]


def test_short_run_reports_progress_and_registers_its_checkpoint(trainer_setup, qtbot):
    widget, sr, store, tmp_path = trainer_setup
    layers = widget.chosen_layers()
    assert [(lay.name, lay.captions) for lay in layers] == [
        ("vertical", ("vertical stripes",)),
        ("horizontal", ("horizontal stripes",)),
    ]
    widget.steps_spin.setValue(6)
    widget.preview_spin.setValue(3)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.start_button.click()
    assert widget.is_running and not widget.controls.isEnabled()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)

    outcome = widget.last_outcome
    assert outcome.error is None and not outcome.cancelled
    assert outcome.summary.steps_completed == 6
    assert widget.events_seen >= 6
    assert widget.progress_bar.value() == 6
    assert len(widget.loss_plot.series["loss"].points) == 6
    assert [x for x, _ in widget.psnr_plot.series["model"].points] == [3, 6]  # one held-out layer, validated twice
    assert (
        widget.preview_labels["output"].pixmap() is not None and not widget.preview_labels["output"].pixmap().isNull()
    )
    assert widget.status_label.text().startswith("Finished after 6/6 steps")

    checkpoint = str((tmp_path / "run" / "model.textsr.safetensors").resolve())
    assert checkpoint in model_specs(sr)  # at once in the super-resolution widget
    assert widget.controls.isEnabled() and widget.start_button.isEnabled()


def test_cancel_keeps_a_loadable_checkpoint(trainer_setup, qtbot, notifications, monkeypatch):
    widget, sr, store, tmp_path = trainer_setup
    widget.steps_spin.setValue(100_000)
    widget.out_edit.setText(str(tmp_path / "cancelled"))
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.events_seen >= 2, timeout=120_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)

    summary = widget.last_outcome.summary
    assert summary.cancelled and 2 <= summary.steps_completed < 100_000
    assert widget.status_label.text().startswith("Stopped after")
    path = str((tmp_path / "cancelled" / "model.textsr.safetensors").resolve())
    assert path in model_specs(sr)
    # loadable by the super-resolution widget, also when opened with its File… button
    monkeypatch.setattr("qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *a, **k: (path, ""))
    sr.browse_button.click()
    assert sr.selected_model() == path
    qtbot.waitUntil(lambda: sr.model_info.text().startswith("PDN x2"), timeout=60_000)
    assert "· trained" in sr.model_info.text()
    upscaler = store.cached(path, sr.device_combo.currentText())
    assert upscaler.description.training.steps == summary.steps_completed
    assert not notifications.of("error")


def test_missing_captions_and_empty_selection_notify(trainer_setup, qtbot, notifications):
    widget, sr, store, tmp_path = trainer_setup
    widget.use_layer("horizontal", "")
    widget.start_button.click()
    assert any("no caption" in m for m in notifications.of("error"))
    widget.use_layer("vertical", use=False)
    widget.use_layer("horizontal", use=False)
    widget.start_button.click()
    assert any("tick at least one" in m for m in notifications.of("error"))
    assert not widget.is_running and widget.start_button.isEnabled()


def test_new_model_defaults_to_the_bundled_encoder_and_rate_resets_after_fine_tuning(viewer, qtbot, tmp_path):
    viewer.add_image(stripes(), name="vertical", metadata={"caption": "vertical stripes"})
    widget = TrainingWidget(viewer, store=ModelStore())  # a top-level widget, sized by hand
    qtbot.addWidget(widget)
    widget.use_layer("vertical")
    widget.out_edit.setText(str(tmp_path / "run"))
    assert widget.base_combo.currentData() == "__new__"
    assert widget.encoder_combo.currentData() == "textsr-clip-s:bundled:textsr-clip-s"
    assert widget.make_request().config.encoder == "textsr-clip-s:bundled:textsr-clip-s"
    assert float(widget.learning_rate_edit.text()) == 2e-4

    widget.base_combo.setCurrentIndex(widget.base_combo.findData("pdn-x4"))  # fine-tune: rate capped
    assert widget.learning_rate_edit.text() == "1e-4"
    assert not widget.encoder_combo.isEnabled()
    assert widget.make_request().config.encoder is None  # the checkpoint's own
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("__new__"))  # back to new: rate restored
    assert float(widget.learning_rate_edit.text()) == 2e-4 and widget.encoder_combo.isEnabled()
    assert widget.make_request().config.encoder == "textsr-clip-s:bundled:textsr-clip-s"

    # CLIP-SR embeds the encoder's ViT: its preset follows the encoder
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("clipsr"))
    assert widget.preset_combo.currentText() == "default"
    widget.encoder_combo.setCurrentIndex(widget.encoder_combo.findData("textsr-tiny:none"))
    assert widget.preset_combo.currentText() == "tiny"


def test_fields_have_tooltips_and_input_errors_reach_the_status_line(viewer, qtbot, notifications):
    viewer.add_image(stripes(), name="vertical")
    widget = TrainingWidget(viewer, store=ModelStore())  # a top-level widget, sized by hand
    qtbot.addWidget(widget)
    for field in (
        widget.layer_table,
        widget.folder_edit,
        widget.base_combo,
        widget.method_combo,
        widget.preset_combo,
        widget.scale_combo,
        widget.encoder_combo,
        widget.steps_spin,
        widget.learning_rate_edit,
        widget.batch_spin,
        widget.patch_spin,
        widget.degradation_combo,
        widget.preview_spin,
        widget.device_combo,
        widget.out_edit,
        widget.start_button,
        widget.cancel_button,
    ):
        assert field.toolTip(), field
    widget.start_button.click()
    assert widget.status_label.text().startswith("Cannot start training: tick at least one")
    assert any("tick at least one" in m for m in notifications.of("error"))


def test_degradation_preset_reaches_the_training_config(viewer, qtbot, tmp_path):
    from napari_textsr.training.degradations import DegradationFamily

    viewer.add_image(stripes(), name="vertical", metadata={"caption": "vertical stripes"})
    widget = TrainingWidget(viewer, store=ModelStore())  # a top-level widget, sized by hand
    qtbot.addWidget(widget)
    widget.use_layer("vertical")
    widget.out_edit.setText(str(tmp_path / "run"))
    names = [widget.degradation_combo.itemData(i) for i in range(widget.degradation_combo.count())]
    assert names == ["bicubic", "realistic", "microscopy", "__recipe__"]
    assert widget.degradation_combo.currentData() == "realistic"
    widget.scale_combo.setCurrentIndex(widget.scale_combo.findData(8))
    widget.degradation_combo.setCurrentIndex(names.index("microscopy"))
    config = widget.make_request().config
    assert config.degradation == DegradationFamily.preset_family("microscopy", 8)
    assert config.degradation.p_jpeg == 0.0 and config.degradation.scale == 8


def test_fine_tuning_as_the_starting_model_takes_its_recorded_recipe(viewer, qtbot, tmp_path, notifications):
    from napari_textsr.training.config import recipe_of

    viewer.add_image(stripes(), name="vertical", metadata={"caption": "vertical stripes"})
    store = ModelStore()
    widget = TrainingWidget(viewer, store=store)  # a top-level widget, sized by hand
    qtbot.addWidget(widget)
    widget.use_layer("vertical")
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.degradation_combo.setCurrentIndex(widget.degradation_combo.findData("__recipe__"))
    widget.start_button.click()  # a new model has no recipe: a clear error, nothing starts
    assert widget.status_label.text().startswith("Cannot start training: Degradation 'as the starting model'")
    assert not widget.is_running

    widget.degradation_combo.setCurrentIndex(widget.degradation_combo.findData("microscopy"))
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("pdn-x4"))  # fine-tuning: its own recipe by default
    assert widget.degradation_combo.currentData() == "__recipe__"
    config = widget.make_request().config
    recipe = recipe_of(config.init)
    assert config.degradation == recipe["degradation"] and config.degradation.p_jpeg == 0.45
    assert config.captions == recipe["captions"] and config.captions.p_empty_keeps_blur == 0.7
    assert config.losses == recipe["losses"] and config.ema_decay == 0.999
    # The widget's own settings stay the user's: steps, rate, batch, patch.
    assert (config.steps, config.learning_rate) == (widget.steps_spin.value(), 1e-4)
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("__new__"))  # back: the preset chosen before
    assert widget.degradation_combo.currentData() == "microscopy"

    # A choice made while fine-tuning stays when another checkpoint is picked.
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("pdn-x4"))
    widget.degradation_combo.setCurrentIndex(widget.degradation_combo.findData("bicubic"))
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("pdn-x2"))
    assert widget.degradation_combo.currentData() == "bicubic"
    # A checkpoint that records no recipe cannot be fine-tuned "as the starting model": the preset returns.
    from napari_textsr.checkpoints import save_checkpoint
    from napari_textsr.inference import load_model

    bare = load_model("random:pdn:4:tiny")
    path = save_checkpoint(tmp_path / "bare.textsr.safetensors", bare.model, bare.encoder, name="bare")
    store.register_checkpoint(path, group="file")
    widget.degradation_combo.setCurrentIndex(widget.degradation_combo.findData("__recipe__"))
    widget.base_combo.setCurrentIndex(widget.base_combo.findData(str(path.resolve())))
    assert widget.degradation_combo.currentData() == "microscopy"  # the one chosen before fine-tuning
    assert widget.make_request().config.degradation.preset == "microscopy"


def test_settings_start_at_train_configs_defaults(viewer, qtbot):
    from napari_textsr.training.config import TrainConfig

    widget = TrainingWidget(viewer, store=ModelStore())
    qtbot.addWidget(widget)
    defaults = TrainConfig(method="pdn")
    assert widget.steps_spin.value() == defaults.steps
    assert widget.batch_spin.value() == defaults.batch_size
    assert widget.patch_spin.value() == defaults.lr_patch
    assert widget.preview_spin.value() == defaults.preview_every
    assert float(widget.learning_rate_edit.text()) == defaults.learning_rate


def test_fits_a_narrow_dock_without_horizontal_scrolling(viewer, qtbot):
    """Headless counterpart of the real-viewer 1280x720 test: at the width napari gives a dock
    (the widget's size hint, at most 390 px) and at its minimum width, every section open, the
    controls need no horizontal scroll bar."""
    viewer.add_image(
        stripes(), name="a layer with a long name, as microscopy files have", metadata={"caption": "stripes"}
    )
    widget = TrainingWidget(viewer, store=ModelStore())  # a top-level widget, sized by hand
    qtbot.addWidget(widget)
    for section in widget.sections.values():
        section.set_collapsed(False)
    assert widget.sections["Preview"].content.isVisibleTo(widget)
    minimum = widget.minimumSizeHint().width()
    assert minimum == widget.content_min_width() < 420
    assert widget.sizeHint().width() <= widget.PREFERRED_WIDTH
    for width in (widget.sizeHint().width(), minimum):
        widget.resize(width, 600)
        widget.show()
        qtbot.wait(50)
        assert widget.width() == width
        assert widget.body.width() == widget.scroll.viewport().width()
        assert widget.scroll.horizontalScrollBar().maximum() == 0, width
        assert not widget.scroll.horizontalScrollBar().isVisible()
    # the table's columns share its width: no column pushed out of sight
    table = widget.layer_table
    assert table.columnWidth(0) + table.columnWidth(1) <= table.viewport().width()
    assert table.columnWidth(1) >= table.viewport().width() // 2 - 1
