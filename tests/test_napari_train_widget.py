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
    assert widget.preview_labels["output"].pixmap() is not None and not widget.preview_labels["output"].pixmap().isNull()
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
