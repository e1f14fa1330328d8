"""The "Text-guided super-resolution" dock widget, end to end with tiny untrained models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_support import dock, grey_image, notifications, viewer, wait_idle  # noqa: F401 (fixtures)
from napari_textsr.napari.model_store import MODEL_STORE, ModelStore
from napari_textsr.napari.sr_widget import SuperResolutionWidget

PDN2 = "random:pdn:2:tiny"


def make_widget(viewer, qtbot, model=PDN2, store=MODEL_STORE):
    widget = dock(viewer, SuperResolutionWidget(viewer, store=store), qtbot)
    widget.select_model(model)
    wait_model_loaded(widget, qtbot)
    return widget


def wait_model_loaded(widget, qtbot):
    qtbot.waitUntil(lambda: widget.model_info.text() not in ("", "loading…"), timeout=60_000)


def run_and_wait(widget, qtbot):
    widget.run_button.click()
    wait_idle(qtbot, widget)


def test_grey_2d_output_overlays_input_with_provenance(viewer, qtbot):
    data = grey_image((40, 48))
    layer = viewer.add_image(
        data, name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0), metadata={"caption": "DAPI-stained nuclei"}
    )
    widget = make_widget(viewer, qtbot)
    widget.select_layer(layer)
    assert widget.caption_edit.toPlainText() == "DAPI-stained nuclei"  # pre-filled from the metadata
    assert "PDN x2" in widget.model_info.text() and "UNTRAINED" in widget.model_info.text()
    assert not widget.stack_radio.isEnabled()  # a 2D layer has no stack

    run_and_wait(widget, qtbot)

    out = viewer.layers["cells x2"]
    assert widget.last_layers[0] is out
    assert out.data.shape == (80, 96) and out.data.dtype == np.uint16
    # output pixel j's centre at input pixel (j + 0.5)/2 - 0.5, through the input's scale/translate
    np.testing.assert_allclose(out.scale, [0.25, 0.125])
    np.testing.assert_allclose(out.translate, [3.0 - 0.25 * 0.5, -2.0 - 0.25 * 0.25])
    assert out.contrast_limits == layer.contrast_limits
    assert out.metadata["caption"] == "DAPI-stained nuclei"
    assert out.metadata["model"] == PDN2 and out.metadata["method"] == "pdn" and out.metadata["scale"] == 2
    assert out.metadata["encoder"] == "textsr-tiny:none" and out.metadata["input_layer"] == "cells"
    assert out.metadata["trained"] is False and out.metadata["software_version"]
    assert np.array_equal(layer.data, data)  # the input is never touched

    attention = [lay for lay in viewer.layers if lay.name.startswith("cells x2 attention: ")]
    assert len(attention) >= 1
    index = list(viewer.layers).index(out)
    assert list(viewer.layers)[index + 1 : index + 1 + len(attention)] == attention  # right after the output
    # hidden: an additive map over the output would tint it; the output stays the active layer
    assert [lay.visible for lay in attention] == [False] * len(attention)
    assert viewer.layers.selection.active is out
    for amap in attention:  # PDN's maps on its own (input) grid, covering exactly the output's area
        assert amap.data.shape == layer.data.shape and amap.data.dtype == np.float32
        np.testing.assert_allclose(amap.scale, layer.scale)
        np.testing.assert_allclose(amap.translate, layer.translate)
        for corner_map, corner_out in ((-0.5, -0.5), (np.array(amap.data.shape) - 0.5, np.array(out.data.shape) - 0.5)):
            np.testing.assert_allclose(amap.translate + amap.scale * corner_map, out.translate + out.scale * corner_out)
        assert amap.blending == "additive" and amap.interpolation2d == "linear"
    assert widget.status_label.text().startswith("Done in")
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    assert widget.controls.isEnabled() and widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    run_and_wait(widget, qtbot)  # a second run gets a unique name
    assert "cells x2 [1]" in viewer.layers


def test_consistency_downsampling_from_the_caption_or_chosen(viewer, qtbot):
    from napari_textsr.consistency import CONSISTENCY_KERNELS

    viewer.add_image(grey_image((24, 28)), name="cells")
    widget = make_widget(viewer, qtbot)
    combo = widget.consistency_kernel_combo
    assert [combo.itemData(i) for i in range(combo.count())] == list(CONSISTENCY_KERNELS)
    assert not combo.isEnabled() and widget.current_options()["consistency"] is False
    widget.consistency_check.setChecked(True)
    assert combo.isEnabled() and widget.current_options()["consistency"] == "auto"
    widget.caption_edit.setPlainText("nuclei, binned 2x2")
    run_and_wait(widget, qtbot)
    out = viewer.layers["cells x2"]
    assert out.metadata["consistency_kernel"] == "area"
    assert "(area)" in widget.status_label.text()
    combo.setCurrentIndex(combo.findData("bicubic"))
    assert widget.current_options()["consistency"] == "bicubic"
    run_and_wait(widget, qtbot)
    assert viewer.layers["cells x2 [1]"].metadata["consistency_kernel"] == "bicubic"  # the choice beats the words
    widget.consistency_check.setChecked(False)
    assert not combo.isEnabled() and widget.current_options()["consistency"] is False


def test_rgb_keeps_channels_and_dtype(viewer, qtbot):
    rng = np.random.default_rng(1)
    rgb = viewer.add_image(rng.integers(0, 256, (32, 36, 3), dtype=np.uint8), name="photo", rgb=True)
    widget = make_widget(viewer, qtbot, model="random:tgsr:2:tiny")
    widget.select_layer(rgb)
    widget.caption_edit.setPlainText("a red bird on a branch")
    widget.consistency_check.setChecked(True)
    widget.ensemble_check.setChecked(True)
    run_and_wait(widget, qtbot)

    out = viewer.layers["photo x2"]
    assert out.metadata["self_ensemble"] is True
    assert out.rgb and out.data.shape == (64, 72, 3) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.translate, [-0.25, -0.25])
    consistency = viewer.layers["photo x2 consistency"]
    assert consistency.data.shape == (64, 72) and not consistency.visible
    assert out.metadata["consistency_error"] == pytest.approx(consistency.metadata["consistency_error"])
    words = [lay.metadata["attention"] for lay in viewer.layers if lay.name.startswith("photo x2 attention: ")]
    assert "red" in words and "bird" in words  # TGSR: one map per word


def test_z_stack_current_slice_and_whole_stack(viewer, qtbot):
    stack = viewer.add_image(grey_image((3, 32, 32), dtype=np.float32), name="zstack", scale=(2.0, 1.0, 1.0))
    widget = make_widget(viewer, qtbot)
    widget.select_layer(stack)
    assert widget.slice_radio.isEnabled() and widget.slice_radio.isChecked()
    viewer.dims.set_point(0, 2.0)  # world z = 2 -> data slice 1

    run_and_wait(widget, qtbot)
    one = viewer.layers["zstack x2"]
    assert one.data.shape == (1, 64, 64) and one.data.dtype == np.float32
    np.testing.assert_allclose(one.scale, [2.0, 0.5, 0.5])
    np.testing.assert_allclose(one.translate, [2.0, -0.25, -0.25])  # overlays slice 1 only
    assert one.metadata["input_slice"] == [1]

    widget.stack_radio.setChecked(True)
    run_and_wait(widget, qtbot)
    whole = viewer.layers["zstack x2 [1]"]
    assert whole.data.shape == (3, 64, 64)
    np.testing.assert_allclose(whole.translate, [0.0, -0.25, -0.25])
    # the slice run and slice 1 of the whole-stack run agree (same model, same intensity mapping per slice data)
    assert np.corrcoef(whole.data[1].ravel(), one.data[0].ravel())[0, 1] > 0.99


def test_caption_comparison_gives_distinct_slices(viewer, qtbot):
    store = ModelStore()  # its own cache: the fusion weights are perturbed below
    upscaler = store.get(PDN2, "cpu")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in upscaler.model.fusion_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    viewer.add_image(grey_image((32, 32), dtype=np.float32), name="img")
    widget = make_widget(viewer, qtbot, store=store)
    widget.device_combo.setCurrentText("cpu")
    widget.compare_check.setChecked(True)
    widget.caption_edit.setPlainText("bright filaments\n\nround nuclei\nsmall puncta\n")
    run_and_wait(widget, qtbot)

    stack = viewer.layers["img x2 captions"]
    assert stack.data.shape == (3, 64, 64)
    assert stack.metadata["captions"] == ["bright filaments", "round nuclei", "small puncta"]
    assert [p["caption"] for p in stack.metadata["provenance"]] == stack.metadata["captions"]
    np.testing.assert_allclose(stack.scale, [1.0, 0.5, 0.5])
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(stack.data[i] - stack.data[j]).mean() > 1e-4, (i, j)
    attention = [lay for lay in viewer.layers if lay.name.startswith("img x2 captions attention: ")]
    assert attention and all(lay.data.shape == (3, 32, 32) for lay in attention)  # on PDN's (input) grid
    assert all(np.allclose(lay.scale, [1.0, 1.0, 1.0]) for lay in attention)


def test_cancel_mid_run_adds_nothing_and_widget_stays_usable(viewer, qtbot, monkeypatch, notifications):
    from napari_textsr.napari import jobs

    original = jobs.iter_job

    def held_iter_job(job, upscaler, cancel):  # after the first tile, wait for Cancel (at most 30 s)
        generator = original(job, upscaler, cancel)
        yield next(generator)
        cancel.wait(timeout=30)
        return (yield from generator)

    monkeypatch.setattr(jobs, "iter_job", held_iter_job)
    viewer.add_image(grey_image((64, 64)), name="big")
    widget = make_widget(viewer, qtbot)
    widget.tile_combo.addItem("16 px", 16)  # 16 tiles
    widget.tile_combo.setCurrentIndex(widget.tile_combo.count() - 1)
    n_layers = len(viewer.layers)

    widget.run_button.click()
    assert not widget.controls.isEnabled() and not widget.run_button.isEnabled()  # locked while running
    qtbot.waitUntil(lambda: widget._last_event is not None and widget._last_event.done >= 1, timeout=60_000)
    widget.cancel_button.click()
    wait_idle(qtbot, widget)

    assert widget.last_outcome.cancelled
    assert widget._last_event.done < widget._last_event.total  # it really stopped mid-run
    assert len(viewer.layers) == n_layers
    assert widget.status_label.text().startswith("Cancelled")
    assert widget.controls.isEnabled() and widget.run_button.isEnabled()
    assert not notifications.of("error")

    monkeypatch.setattr(jobs, "iter_job", original)
    run_and_wait(widget, qtbot)  # usable afterwards
    assert "big x2" in viewer.layers


def test_wrong_inputs_notify_and_keep_the_widget_usable(viewer, qtbot, monkeypatch, notifications):
    labels = viewer.add_labels(np.zeros((32, 32), dtype=np.int32), name="mask")
    widget = make_widget(viewer, qtbot)
    assert widget.layer_combo.count() == 0  # Labels layers are not offered
    widget.run_button.click()
    assert any("No Image layer" in m and "mask" in m for m in notifications.of("error"))

    viewer.add_image(np.ones((1, 1), dtype=np.float32), name="dot")
    widget.select_layer("dot")
    widget.run_button.click()
    wait_idle(qtbot, widget)
    assert any("2x2" in m for m in notifications.of("error"))

    viewer.add_image(grey_image((48, 48)), name="fine")
    widget.select_layer("fine")
    monkeypatch.setattr("napari_textsr.inference.available_memory_bytes", lambda device: 1000)
    widget.tile_combo.setCurrentIndex(1)  # no tiling
    assert widget.tile_combo.currentData() == 0
    widget.run_button.click()
    # refused at once, before any model loads, and the status line says why
    assert not widget.is_running
    assert any("use tiling" in m for m in notifications.of("error"))
    assert "in one piece needs at least" in widget.status_label.text()
    monkeypatch.undo()

    widget.select_model("/nonexistent/model.textsr.safetensors")
    qtbot.waitUntil(lambda: widget.model_info.text().startswith("could not load"), timeout=20_000)
    run_and_wait(widget, qtbot)
    assert any("could not load model" in m for m in notifications.of("error"))

    names = [lay.name for lay in viewer.layers]
    assert names == ["mask", "dot", "fine"]  # nothing lost, nothing added
    assert viewer.layers["mask"] is labels
    widget.select_model(PDN2)
    wait_model_loaded(widget, qtbot)
    widget.tile_combo.setCurrentIndex(0)
    run_and_wait(widget, qtbot)
    assert "fine x2" in viewer.layers


def test_layer_picker_follows_the_layer_list(viewer, qtbot):
    widget = make_widget(viewer, qtbot)
    a = viewer.add_image(grey_image((32, 32)), name="a")
    viewer.add_labels(np.zeros((32, 32), dtype=np.int32), name="labels")
    viewer.add_image(grey_image((32, 32)), name="b", metadata={"caption": "stripes"})
    items = lambda: [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]  # noqa: E731
    assert items() == ["a", "b"]
    widget.select_layer("b")
    assert widget.caption_edit.toPlainText() == "stripes"
    a.name = "renamed"
    assert items() == ["renamed", "b"]
    assert widget.selected_layer().name == "b"  # the choice survives refreshes
    viewer.layers.remove("b")
    assert items() == ["renamed"] and widget.selected_layer() is a


def test_model_picker_lists_untrained_models_labelled(viewer, qtbot):
    widget = make_widget(viewer, qtbot)
    labels = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    specs = [widget.model_combo.itemData(i) for i in range(widget.model_combo.count())]
    for method in ("pdn", "tgsr", "clipsr"):
        for scale in (2, 4, 8, 16):
            spec = f"random:{method}:{scale}:tiny"
            assert spec in specs
            assert "UNTRAINED" in labels[specs.index(spec)]


def test_widget_works_through_the_proxy_napari_hands_to_plugins(viewer, qtbot, notifications):
    import warnings

    from napari.utils._proxies import PublicOnlyProxy

    layer = viewer.add_image(grey_image((32, 32)), name="cells", metadata={"caption": "nuclei"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # napari warns when a plugin touches private attributes
        widget = make_widget(PublicOnlyProxy(viewer), qtbot)
        widget.select_layer("cells")
        run_and_wait(widget, qtbot)
        viewer.layers["cells"].name = "renamed"
        assert widget.layer_combo.itemText(0) == "renamed"
    assert widget.caption_edit.toPlainText() == "nuclei"
    assert "cells x2" in viewer.layers and not notifications.of("error")
    assert np.array_equal(viewer.layers["renamed"].data, layer.data)


def test_default_model_is_preselected(viewer, qtbot):
    from napari_textsr.inference import list_models

    bundled = [m.name for m in list_models()]
    widget = dock(viewer, SuperResolutionWidget(viewer, store=ModelStore()), qtbot)
    # the bundled model "default" loads at x4 (PDN, not the alphabetically first CLIP-SR);
    # with none bundled (and none trained in this store) the untrained PDN x4
    expected = "pdn-x4" if "pdn-x4" in bundled else "random:pdn:4:tiny"
    assert widget.selected_model() == expected
    assert widget.scale_combo.currentData() == 4
    wait_model_loaded(widget, qtbot)
    assert widget.model_info.text().startswith("PDN x4")


def test_caption_box_follows_the_selected_layer(viewer, qtbot):
    a = viewer.add_image(grey_image((32, 32)), name="a", metadata={"caption": "round nuclei"})
    b = viewer.add_image(grey_image((32, 32), seed=1), name="b")  # no caption metadata
    widget = make_widget(viewer, qtbot)
    widget.select_layer(a)
    assert widget.caption_edit.toPlainText() == "round nuclei"
    widget.select_layer(b)
    assert widget.caption_edit.toPlainText() == ""  # a's caption does not leak into b
    widget.caption_edit.setPlainText("thin filaments")  # typed for b
    widget.select_layer(a)
    assert widget.caption_edit.toPlainText() == "round nuclei"  # b's text did not overwrite a's
    widget.caption_edit.setPlainText("round nuclei, one dividing")
    widget.select_layer(b)
    assert widget.caption_edit.toPlainText() == "thin filaments"
    widget.select_layer(a)
    assert widget.caption_edit.toPlainText() == "round nuclei, one dividing"
    assert a.metadata["caption"] == "round nuclei"  # the layer itself is not modified


def test_comparison_label_follows_the_slider(viewer, qtbot):
    # an input that lists several captions (as the samples do) is not a comparison stack
    viewer.add_image(grey_image((24, 24), dtype=np.float32), name="img", metadata={"captions": ["a", "b"]})
    widget = make_widget(viewer, qtbot)
    assert widget.comparison_label.text() == "" and not widget._text_overlay().visible
    widget.compare_check.setChecked(True)
    widget.caption_edit.setPlainText("bright filaments\nround nuclei\nsmall puncta")
    run_and_wait(widget, qtbot)
    stack = viewer.layers["img x2 captions"]
    assert viewer.layers.selection.active is stack
    for index, caption in [(1, "round nuclei"), (2, "small puncta"), (0, "bright filaments")]:
        viewer.dims.set_current_step(0, index)
        assert widget.comparison_label.text() == f"Slice shown: caption {index + 1}/3: “{caption}”"
        assert widget._text_overlay().text == f"caption {index + 1}/3: “{caption}”"
        assert widget._text_overlay().visible
    viewer.layers.selection.active = viewer.layers["img"]  # still the newest stack's caption
    assert "bright filaments" in widget.comparison_label.text()
    viewer.layers.remove(stack)
    for lay in [lay for lay in viewer.layers if lay.name.startswith("img x2")]:
        viewer.layers.remove(lay)
    viewer.layers.selection.active = viewer.layers["img"]
    assert widget.comparison_label.text() == "" and not widget._text_overlay().visible


def test_provenance_of_the_selected_output_is_shown(viewer, qtbot):
    layer = viewer.add_image(grey_image((24, 24)), name="cells", metadata={"caption": "DAPI nuclei"})
    widget = make_widget(viewer, qtbot)
    widget.select_layer(layer)
    run_and_wait(widget, qtbot)
    text = widget.provenance_label.text()
    assert text.startswith("'cells x2'") and "“DAPI nuclei”" in text
    assert f"model: {PDN2} · PDN x2 (UNTRAINED)" in text and "encoder: textsr-tiny:none" in text
    assert "from 'cells'" in text
    viewer.layers.selection.active = viewer.layers["cells x2 attention: DCM 1"]  # a map: its output's record
    assert widget.provenance_label.text() == text
    viewer.layers.selection.active = layer
    assert widget.provenance_label.text().startswith("Select an output layer")


def test_runs_on_every_selected_layer_with_its_own_caption(viewer, qtbot):
    a = viewer.add_image(grey_image((24, 24)), name="a", metadata={"caption": "round nuclei"})
    b = viewer.add_image(grey_image((20, 28), seed=2), name="b")
    viewer.add_image(grey_image((16, 16), seed=3), name="not selected")
    widget = make_widget(viewer, qtbot)
    widget.select_layer(b)
    widget.caption_edit.setPlainText("thin filaments")
    viewer.layers.selection = {a, b}
    widget.all_selected_check.setChecked(True)
    assert widget.all_selected_check.text() == "all selected layers (2)"
    run_and_wait(widget, qtbot)
    assert [lay.name for lay in widget.last_layers if " attention" not in lay.name] == ["a x2", "b x2"]
    assert viewer.layers["a x2"].metadata["caption"] == "round nuclei"
    assert viewer.layers["b x2"].metadata["caption"] == "thin filaments"
    assert viewer.layers["b x2"].data.shape == (40, 56)
    assert "not selected x2" not in viewer.layers
    assert widget.status_label.text().startswith("Done in") and widget.run_button.isEnabled()


def test_scale_picker_lists_the_method_scales_and_switches_model(viewer, qtbot):
    from napari_textsr.inference import list_models

    bundled = {(m.method, m.scale): m.name for m in list_models() if not m.for_jpeg_inputs}
    if not all(("pdn", s) in bundled for s in (2, 4, 8, 16)) or ("tgsr", 8) not in bundled:
        pytest.skip("needs the bundled PDN x2, x4, x8, x16 and TGSR x8")
    widget = dock(viewer, SuperResolutionWidget(viewer, store=ModelStore()), qtbot)
    widget.select_model(bundled[("pdn", 4)])
    items = {widget.scale_combo.itemData(i): widget.scale_combo.itemText(i) for i in range(widget.scale_combo.count())}
    assert items == {2: "x2", 4: "x4", 8: "x8", 16: "x16"}  # a trained PDN at every scale
    widget.scale_combo.activated.emit(widget.scale_combo.findData(8))  # what a user's choice emits
    assert widget.selected_model() == bundled[("pdn", 8)]
    widget.scale_combo.activated.emit(widget.scale_combo.findData(2))
    assert widget.selected_model() == bundled[("pdn", 2)]
    widget.select_model(bundled[("tgsr", 8)])  # TGSR is bundled at x8 only
    items = {widget.scale_combo.itemData(i): widget.scale_combo.itemText(i) for i in range(widget.scale_combo.count())}
    assert items == {2: "x2 (untrained)", 4: "x4 (untrained)", 8: "x8", 16: "x16 (untrained)"}
    widget.scale_combo.activated.emit(widget.scale_combo.findData(2))
    assert widget.selected_model() == "random:tgsr:2:tiny"
    widget.select_model("random:tgsr:4:tiny")
    assert widget.scale_combo.currentData() == 4
    wait_model_loaded(widget, qtbot)


def test_dock_is_narrow_and_controls_have_tooltips(viewer, qtbot):
    widget = make_widget(viewer, qtbot)
    # the model list holds long entries; the dock must still leave the canvas most of a 1280-px screen
    assert widget.minimumSizeHint().width() < 420
    # no horizontal scrolling needed at the width napari gives the dock (its size hint)
    assert widget.body.minimumSizeHint().width() < widget.content_min_width() <= widget.sizeHint().width() <= 390
    for field in (
        widget.layer_combo,
        widget.caption_edit,
        widget.model_combo,
        widget.scale_combo,
        widget.device_combo,
        widget.tile_combo,
        widget.attention_check,
        widget.consistency_check,
        widget.consistency_kernel_combo,
        widget.ensemble_check,
        widget.slice_radio,
        widget.stack_radio,
        widget.run_button,
        widget.cancel_button,
        widget.all_selected_check,
    ):
        assert field.toolTip(), field


def test_eta_from_the_pace_after_the_first_tile(viewer, qtbot, monkeypatch):
    from napari_textsr.napari import sr_widget
    from napari_textsr.napari.jobs import JobProgress

    widget = make_widget(viewer, qtbot)
    now = [100.0]
    monkeypatch.setattr(sr_widget.time, "perf_counter", lambda: now[0])
    widget._on_event(JobProgress(done=1, total=10))  # the first tile (warm-up) at t = 100
    assert widget.eta_seconds() is None
    now[0] = 104.0
    widget._on_event(JobProgress(done=3, total=10))  # 2 tiles in 4 s -> 2 s per tile, 7 left
    assert widget.eta_seconds() == pytest.approx(14.0)


def test_bundled_headers_are_read_once_per_file_version(monkeypatch, tmp_path):
    """The pickers refill on every checkpoint a training run writes: no disk reads of the bundled headers then."""
    import shutil
    from pathlib import Path

    from napari_textsr import checkpoints, loading
    from napari_textsr.napari import model_store

    shutil.copy(loading.WEIGHTS_DIR / "pdn-x2.textsr.safetensors", tmp_path / "mine-x2.textsr.safetensors")
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    reads = []
    original = checkpoints.read_metadata
    monkeypatch.setattr(loading, "read_metadata", lambda path: reads.append(Path(path).name) or original(path))
    first = model_store.bundled_choices()
    assert [c.spec for c in first] == ["mine-x2"] and reads == ["mine-x2.textsr.safetensors"]
    assert [c.spec for c in model_store.bundled_choices()] == ["mine-x2"] and len(reads) == 1
    shutil.copy(loading.WEIGHTS_DIR / "mine-x2.textsr.safetensors", tmp_path / "other-x2.textsr.safetensors")
    assert [c.spec for c in model_store.bundled_choices()] == ["mine-x2", "other-x2"] and len(reads) == 3


def test_the_event_loop_runs_between_two_layer_additions(viewer, qtbot):
    """Each output/map layer is added on its own event-loop turn, with timers (and paints, input) between."""
    from qtpy.QtCore import QTimer

    viewer.add_image(grey_image((32, 32)), name="cells")
    widget = make_widget(viewer, qtbot)
    widget.device_combo.setCurrentText("cpu")
    widget.consistency_check.setChecked(True)
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    ticks_at_insert = []
    viewer.layers.events.inserted.connect(lambda event: ticks_at_insert.append((event.value.name, len(ticks))))
    timer.start()
    try:
        run_and_wait(widget, qtbot)
    finally:
        timer.stop()
    names = [name for name, _ in ticks_at_insert]
    assert names[0] == "cells x2" and names[-1] == "cells x2 consistency" and len(names) >= 3
    counts = [n for _, n in ticks_at_insert]
    assert all(later > earlier for earlier, later in zip(counts, counts[1:])), ticks_at_insert


def test_garbage_is_collected_once_before_the_layers_go_in(viewer, qtbot, monkeypatch):
    """A full collection is done alone, before the first insertion, so Python starts none of its
    own (0.2-0.3 s) in the middle of one (issue 12: no GUI gap above 0.5 s)."""
    import gc

    viewer.add_image(grey_image((32, 32)), name="cells")
    widget = make_widget(viewer, qtbot)
    widget.device_combo.setCurrentText("cpu")
    events: list[str] = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: (events.append("collect"), collect(*args))[1])
    viewer.layers.events.inserted.connect(lambda event: events.append(event.value.name))
    run_and_wait(widget, qtbot)
    assert events[0] == "collect" and events.count("collect") == 1, events
    assert events[1] == "cells x2" and len(events) >= 3  # then the output and its maps
    events.clear()
    run_and_wait(widget, qtbot)
    assert events.count("collect") == 1  # once per run


def test_an_array_layer_whose_blocks_show_low_quality_jpeg_gets_the_jpeg_words(viewer, qtbot):
    import io

    from PIL import Image

    from napari_textsr.samples import sample_path

    photograph = Image.open(sample_path("cat_lr.png")).convert("RGB")
    buffer = io.BytesIO()
    photograph.save(buffer, "JPEG", quality=50)
    frame = viewer.add_image(np.asarray(Image.open(buffer)), name="frame", rgb=True)  # no file: pasted, scripted
    clean = viewer.add_image(np.asarray(photograph), name="clean", rgb=True)
    widget = make_widget(viewer, qtbot)
    widget.select_layer(frame)
    assert widget.caption_edit.toPlainText() == "JPEG-compressed"
    widget.select_layer(clean)
    assert widget.caption_edit.toPlainText() == ""
    clean.data = frame.data.copy()  # new data: looked at again
    widget.select_layer(frame)
    widget.select_layer(clean)
    assert widget.caption_edit.toPlainText() == "JPEG-compressed"
    widget.select_layer(frame)
    widget.caption_edit.setPlainText("a tabby cat, JPEG-compressed")
    run_and_wait(widget, qtbot)
    output = viewer.layers["frame x2"]
    assert output.metadata["caption"] == "a tabby cat, JPEG-compressed"  # what the model was given
    assert output.metadata["input_jpeg_quality"] == 50 and output.metadata["input_jpeg_quality_from"] == "pixels"
    widget.select_layer(output)
    assert widget.caption_edit.toPlainText() == "a tabby cat"  # the output is no JPEG


def test_the_default_model_becomes_the_one_trained_for_jpeg_inputs_on_a_jpeg_layer(viewer, qtbot, jpeg_model_weights):
    import io

    from PIL import Image

    from napari_textsr.samples import sample_path

    photograph = Image.open(sample_path("cat_lr.png")).convert("RGB")
    buffer = io.BytesIO()
    photograph.save(buffer, "JPEG", quality=40)
    frame = viewer.add_image(np.asarray(Image.open(buffer)), name="frame", rgb=True)
    clean = viewer.add_image(np.asarray(photograph), name="clean", rgb=True)
    widget = make_widget(viewer, qtbot, model="pdn-x2")  # the default at x2, picked by name
    widget.device_combo.setCurrentText("cpu")
    widget.select_layer(frame)
    run_and_wait(widget, qtbot)
    assert viewer.layers["frame x2"].metadata["model"] == "pdn-x2-jpeg"
    widget.select_layer(clean)
    run_and_wait(widget, qtbot)
    assert viewer.layers["clean x2"].metadata["model"] == "pdn-x2"


def test_a_layer_opened_from_a_low_quality_jpeg_gets_the_jpeg_words(viewer, qtbot, tmp_path):
    from napari.layers._source import layer_source  # how napari's own readers set it
    from PIL import Image

    picture = Image.fromarray(grey_image((32, 40), dtype=np.uint8))
    picture.save(tmp_path / "low.jpg", quality=50)
    picture.save(tmp_path / "high.jpg", quality=75)
    layers = {}
    for name in ("low", "high"):  # as napari's readers open a file: the layer's source is the file
        with layer_source(path=str(tmp_path / f"{name}.jpg")):
            layers[name] = viewer.add_image(np.asarray(Image.open(tmp_path / f"{name}.jpg")), name=name)
    low, high = layers["low"], layers["high"]
    assert low.source.path == str(tmp_path / "low.jpg")
    high.metadata["caption"] = "round nuclei"
    widget = make_widget(viewer, qtbot)
    widget.select_layer(high)
    assert widget.caption_edit.toPlainText() == "round nuclei"  # quality 75: saying it would cost
    widget.select_layer(low)
    assert widget.caption_edit.toPlainText() == "JPEG-compressed"  # shown, and deletable
    run_and_wait(widget, qtbot)
    assert viewer.layers["low x2"].metadata["caption"] == "JPEG-compressed"
    low.metadata["caption"] = "round nuclei"
    widget.select_layer(high)
    widget.select_layer(low)
    assert widget.caption_edit.toPlainText() == "round nuclei, JPEG-compressed"
    widget.caption_edit.setPlainText("round nuclei")  # what the user types wins
    widget.select_layer(high)
    widget.select_layer(low)
    assert widget.caption_edit.toPlainText() == "round nuclei"


def test_a_layer_opened_from_a_binned_ome_tiff_gets_binned(viewer, qtbot, tmp_path):
    from napari.layers._source import layer_source
    from test_binning import write_ome

    from napari_textsr.napari.scripting import upscale_layer

    data = write_ome(tmp_path / "cells.ome.tif", ["2x2"])[0]
    with layer_source(path=str(tmp_path / "cells.ome.tif")):
        cells = viewer.add_image(data, name="cells")
    other = viewer.add_image(data.copy(), name="copy")  # no file: nothing to say
    widget = make_widget(viewer, qtbot)
    widget.select_layer(other)
    assert widget.caption_edit.toPlainText() == ""
    widget.select_layer(cells)
    assert widget.caption_edit.toPlainText() == "binned"
    widget.consistency_check.setChecked(True)
    run_and_wait(widget, qtbot)
    out = viewer.layers["cells x2"]
    assert out.metadata["caption"] == "binned" and out.metadata["consistency_kernel"] == "area"
    widget.select_layer(out)
    assert widget.caption_edit.toPlainText() == ""  # an output is not binned
    layers = upscale_layer(viewer, "cells", "nuclei", model="random:pdn:2:tiny", attention=False)
    assert layers[0].metadata["caption"] == "nuclei, binned"
