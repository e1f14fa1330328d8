"""Region captions from napari Shapes and Labels layers, and the caption table."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes

from napari_support import dock, viewer, wait_idle  # noqa: F401 (fixtures)
from napari_textsr.napari.regions import RegionCaptionTable, region_captions, region_rows


def _labels_layer() -> Labels:
    labels = np.zeros((20, 24), np.int32)
    labels[2:8, 3:10] = 4
    labels[12:18, 14:22] = 9
    return Labels(labels, name="cells", features={"index": [4, 9], "caption": ["nuclei", ""]})


def test_labels_rows_prefill_captions_from_features():
    layer = _labels_layer()
    rows = region_rows(layer, (20, 24))
    assert [(r.label, r.what, r.caption) for r in rows] == [(4, "42 px", "nuclei"), (9, "48 px", "")]
    regions = region_captions(layer, (20, 24))
    assert regions.captions == {4: "nuclei"}  # the blank caption keeps the global one
    np.testing.assert_array_equal(regions.labels, layer.data)
    edited = region_captions(layer, (20, 24), {4: "  round   nuclei ", 9: "actin"})
    assert edited.captions == {4: "round nuclei", 9: "actin"}
    assert region_captions(layer, (20, 24), {4: " ", 9: ""}) is None


def test_shapes_become_labels_in_layer_order_with_feature_captions():
    square = np.array([[2, 2], [2, 9], [9, 9], [9, 2]], float)
    ellipse = np.array([[10, 10], [10, 20], [18, 20], [18, 10]], float)  # napari's 4-corner ellipse
    layer = Shapes(
        [square, ellipse], shape_type=["rectangle", "ellipse"], features={"caption": ["a window", "a wheel"]}
    )
    rows = region_rows(layer, (20, 24))
    assert [(r.label, r.what, r.caption) for r in rows] == [(1, "rectangle", "a window"), (2, "ellipse", "a wheel")]
    regions = region_captions(layer, (20, 24))
    assert regions.captions == {1: "a window", 2: "a wheel"}
    assert regions.labels.shape == (20, 24)
    assert np.all(regions.labels[3:9, 3:9] == 1) and regions.labels[14, 15] == 2
    assert regions.labels[0, 0] == 0 and regions.labels[11, 10] == 0  # an ellipse's bounding-box corner is outside


def test_region_layer_must_share_the_image_grid():
    layer = _labels_layer()
    image = Image(np.zeros((20, 24)), name="img", scale=(0.5, 0.5))
    with pytest.raises(ValueError, match="scale"):
        region_captions(layer, (20, 24), image_layer=image)
    with pytest.raises(ValueError, match="20x30"):
        region_captions(layer, (20, 30))
    assert region_captions(layer, (20, 24), image_layer=Image(np.zeros((20, 24)))) is not None


def test_table_edits_captions(qtbot):
    table = RegionCaptionTable()
    qtbot.addWidget(table)
    table.set_rows(region_rows(_labels_layer(), (20, 24)))
    assert table.rowCount() == 2 and table.item(0, 0).text() == "4 (42 px)"
    assert table.captions() == {4: "nuclei"}
    table.set_caption(9, "actin filaments")
    table.set_caption(4, "")
    assert table.captions() == {9: "actin filaments"}


def test_text_effect_and_region_attention_become_layers(tiny_encoder):
    from napari_textsr.inference import load_model
    from napari_textsr.napari.layers import TEXT_EFFECT_COLORMAP, result_layer_data, source_from_layer

    image = Image((np.random.default_rng(0).random((20, 24)) * 1000).astype(np.uint16), name="cells")
    upscaler = load_model("random:pdn:2:tiny", device="cpu", encoder=tiny_encoder)
    regions = region_captions(_labels_layer(), (20, 24), {4: "nuclei", 9: "actin"})
    result = upscaler.upscale(image.data, "cells", regions=regions, text_effect=True, tile=0)
    layers = {
        kwargs["name"]: (data, kwargs) for data, kwargs, _ in result_layer_data(source_from_layer(image), [result])
    }
    effect, kwargs = layers["cells x2 text effect"]
    np.testing.assert_array_equal(effect, result.text_effect)
    low, high = kwargs["contrast_limits"]
    assert low == -high and high > 0 and kwargs["colormap"] == TEXT_EFFECT_COLORMAP and not kwargs["visible"]
    assert kwargs["metadata"]["text_effect"] == result.text_effect_stats
    assert "cells x2 attention: region 4: DCM 1" in layers and "cells x2 attention: region 9: DCM 1" in layers
    assert layers["cells x2"][1]["metadata"]["regions"]["regions"][0]["caption"] == "nuclei"


def test_job_report_records_the_widget_settings(tiny_encoder):
    from napari_textsr.inference import load_model
    from napari_textsr.napari.jobs import make_job
    from napari_textsr.napari.regions import job_report
    from napari_textsr.report import sha256_array

    image = Image((np.random.default_rng(1).random((20, 24)) * 255).astype(np.uint8), name="cells")
    regions = region_captions(_labels_layer(), (20, 24), {4: "nuclei"})
    job = make_job(image, "cells", "random:pdn:2:tiny", tile=0, regions=regions, text_effect=True)
    upscaler = load_model(job.model, device="cpu", encoder=tiny_encoder)
    result = upscaler.upscale(job.data, "cells", tile=0, regions=regions, text_effect=True)
    first, second = job_report(job, result, upscaler), job_report(job, result, upscaler)
    assert first["input"]["array_sha256"] == sha256_array(image.data) == second["input"]["array_sha256"]
    assert first["output"]["array_sha256"] == sha256_array(result.image)
    assert first["parameters"]["regions"] == {
        "captions": {"4": "nuclei"},
        "feather": 8.0,
        "labels_sha256": regions.labels_sha256(),
    }
    assert first["parameters"]["text_effect"] is True and first["parameters"]["input_layer"] == "cells"
    assert first["statistics"]["text_effect"] == result.text_effect_stats
    json_text = __import__("json").dumps(first)  # JSON-ready as it is
    assert "nuclei" in json_text


def test_sr_widget_runs_with_region_captions_text_effect_and_saves_a_report(viewer, qtbot, tmp_path):
    import json

    from napari_textsr.napari.sr_widget import SuperResolutionWidget

    data = (np.random.default_rng(2).random((20, 24)) * 4000).astype(np.uint16)
    image = viewer.add_image(data, name="cells")
    labels = viewer.add_labels(
        _labels_layer().data, name="regions", features={"index": [4, 9], "caption": ["nuclei", ""]}
    )
    widget = dock(viewer, SuperResolutionWidget(viewer), qtbot)
    widget.select_model("random:pdn:2:tiny")
    qtbot.waitUntil(lambda: widget.model_info.text() not in ("", "loading…"), timeout=60_000)
    widget.select_layer(image)
    widget.caption_edit.setPlainText("a fluorescence image")
    controls = widget.region_controls
    controls.select_region_layer(labels)
    assert controls.table.captions() == {4: "nuclei"}  # prefilled from the features
    controls.table.set_caption(9, "actin filaments")
    controls.text_effect_check.setChecked(True)
    widget.tile_combo.setCurrentIndex(widget.tile_combo.findData(0))
    widget.run_button.click()
    wait_idle(qtbot, widget)

    out = viewer.layers["cells x2"]
    regions = region_captions(labels, (20, 24), {4: "nuclei", 9: "actin filaments"})
    upscaler = widget.last_outcome.upscaler  # the widget's (its random encoder is drawn when loaded)
    assert upscaler.description.name == "random:pdn:2:tiny"
    expected = upscaler.upscale(data, "a fluorescence image", regions=regions, text_effect=True, tile=0)
    np.testing.assert_array_equal(out.data, expected.image)
    np.testing.assert_array_equal(viewer.layers["cells x2 text effect"].data, expected.text_effect)
    assert [r["caption"] for r in out.metadata["regions"]["regions"]] == ["nuclei", "actin filaments"]
    assert "cells x2 attention: region 9: DCM 1" in viewer.layers

    path = controls.save_report(str(tmp_path / "report.json"), out)
    report = json.loads(path.read_text())
    assert report["output"]["layer"] == "cells x2"
    assert report["statistics"]["text_effect"] == pytest.approx(expected.text_effect_stats)
    assert report["parameters"]["regions"]["captions"] == {"4": "nuclei", "9": "actin filaments"}
    with pytest.raises(ValueError, match="output layer"):
        controls.report_for(image)
