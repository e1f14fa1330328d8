"""Layer construction, the scripted path, sample data and the napari manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image

from napari_support import dock, grey_image, viewer, wait_idle  # noqa: F401 (fixtures)
from napari_textsr.napari import upscale_layer
from napari_textsr.napari.layers import output_geometry, result_layer_data, source_from_layer, unique_name

ROOT = Path(__file__).resolve().parent.parent
PDN2 = "random:pdn:2:tiny"


@pytest.mark.parametrize(
    "shape, factor, kwargs",
    [
        ((20, 30), 4, {}),
        ((20, 30), 2, {"scale": (0.5, 2.0), "translate": (10.0, -3.0)}),
        ((20, 30), 8, {"scale": (1.5, 1.5), "translate": (1.0, 2.0), "rotate": 30.0, "shear": [0.2]}),
        (
            (5, 20, 30),
            2,
            {"scale": (3.0, 0.5, 0.5), "translate": (4.0, 0.0, 1.0), "affine": np.diag([1.0, 2.0, 1.0, 1.0])},
        ),
    ],
)
def test_output_pixel_centres_land_on_input_coordinates(shape, factor, kwargs):
    source_layer = Image(np.zeros(shape, dtype=np.float32), **kwargs)
    geometry = output_geometry(source_from_layer(source_layer), factor)
    out_shape = shape[:-2] + tuple(s * factor for s in shape[-2:])
    output = Image(np.zeros(out_shape, dtype=np.float32), **geometry)
    rng = np.random.default_rng(0)
    for _ in range(5):
        j = np.array([rng.integers(0, s) for s in out_shape], dtype=float)
        expected_input = j.copy()
        expected_input[-2:] = (j[-2:] + 0.5) / factor - 0.5
        np.testing.assert_allclose(output.data_to_world(j), source_layer.data_to_world(expected_input), atol=1e-9)


def test_slice_offset_and_caption_stack_keep_the_overlay():
    source_layer = Image(np.zeros((4, 10, 12), dtype=np.float32), scale=(2.0, 1.0, 1.0), translate=(1.0, 0.0, 0.0))
    source = source_from_layer(source_layer)
    one_slice = Image(np.zeros((1, 20, 24), dtype=np.float32), **output_geometry(source, 2, offset=(3,)))
    np.testing.assert_allclose(one_slice.data_to_world((0, 0, 0)), source_layer.data_to_world((3, -0.25, -0.25)))
    stacked = output_geometry(source, 2, offset=(3,), stacked=True)
    stack = Image(np.zeros((2, 1, 20, 24), dtype=np.float32), **stacked)
    assert stack.ndim == 4
    np.testing.assert_allclose(stack.data_to_world((1, 0, 5, 7))[1:], source_layer.data_to_world((3, 2.25, 3.25)))


def test_unique_name_follows_napari_style():
    assert unique_name("a x4", []) == "a x4"
    assert unique_name("a x4", ["a x4"]) == "a x4 [1]"
    assert unique_name("a x4", ["a x4", "a x4 [1]"]) == "a x4 [2]"


@pytest.fixture(scope="module")
def pdn_results():
    from napari_textsr.napari.model_store import MODEL_STORE

    upscaler = MODEL_STORE.get(PDN2, "cpu")
    image = grey_image((24, 20), seed=4)
    return image, [upscaler.upscale(image, c, tile=0, consistency=True) for c in ("nuclei", "filaments")]


def test_layer_data_names_visibility_and_contrast(pdn_results):
    image, results = pdn_results
    source = source_from_layer(Image(image, name="in"))
    single = result_layer_data(source, results[:1], existing_names=["in", "in x2"])
    names = [kwargs["name"] for _, kwargs, _ in single]
    maps = list(results[0].attention)
    assert names == ["in x2 [1]"] + [f"in x2 [1] attention: {m}" for m in maps] + ["in x2 [1] consistency"]
    assert [kwargs.get("visible", True) for _, kwargs, _ in single] == [True] + [False] * len(maps) + [False]
    assert all(kind == "image" for _, _, kind in single)
    data, kwargs, _ = single[1]
    low, high = kwargs["contrast_limits"]
    assert low == 0.0 and np.percentile(data, 99) <= high <= data.max()
    assert single[0][1]["metadata"]["consistency_error"] == pytest.approx(results[0].consistency_error)

    stack = result_layer_data(source, results, compare=True)
    data, kwargs, _ = stack[0]
    assert data.shape == (2, 48, 40) and kwargs["name"] == "in x2 captions"
    assert kwargs["metadata"]["captions"] == ["nuclei", "filaments"]
    assert np.array_equal(data[1], results[1].image)
    assert stack[-1][1]["metadata"]["consistency_error"] == [r.consistency_error for r in results]


def test_scripted_function_adds_the_same_layers_as_the_widget(viewer, qtbot):
    from napari.components import ViewerModel

    from napari_textsr.napari.sr_widget import SuperResolutionWidget

    data = grey_image((32, 40), seed=2)
    scripted_viewer = ViewerModel()
    for target in (viewer, scripted_viewer):
        target.add_image(data, name="cells", scale=(0.5, 0.5), translate=(1.0, 2.0))

    widget = dock(viewer, SuperResolutionWidget(viewer), qtbot)
    widget.select_model(PDN2)
    widget.caption_edit.setPlainText("round nuclei")
    widget.device_combo.setCurrentText("cpu")
    widget.consistency_check.setChecked(True)
    widget.run_button.click()
    wait_idle(qtbot, widget)

    scripted = upscale_layer(scripted_viewer, "cells", "round nuclei", model=PDN2, device="cpu", consistency=True)
    assert [lay.name for lay in scripted] == [lay.name for lay in widget.last_layers]
    assert [lay.name for lay in scripted_viewer.layers] == [lay.name for lay in viewer.layers]
    for a, b in zip(widget.last_layers, scripted):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.data.dtype == b.data.dtype
        np.testing.assert_allclose(a.scale, b.scale)
        np.testing.assert_allclose(a.translate, b.translate)
        assert (a.visible, a.blending, a.colormap.name) == (b.visible, b.blending, b.colormap.name)
        np.testing.assert_allclose(a.contrast_limits, b.contrast_limits)
    drop_times = lambda m: {k: v for k, v in m.items() if k not in ("time", "seconds")}  # noqa: E731
    assert drop_times(widget.last_layers[0].metadata) == drop_times(scripted[0].metadata)


def test_scripted_function_current_slice_and_errors():
    from napari.components import ViewerModel

    v = ViewerModel()
    v.add_image(grey_image((3, 24, 24), dtype=np.float32), name="stack")
    v.dims.set_point(0, 2.0)
    (out, *maps) = upscale_layer(v, "stack", "nuclei", model=PDN2, device="cpu", whole_stack=False, attention=False)
    assert out.data.shape == (1, 48, 48) and maps == []
    np.testing.assert_allclose(out.translate, [2.0, -0.25, -0.25])

    v.add_labels(np.zeros((8, 8), dtype=np.int32), name="mask")
    with pytest.raises(TypeError, match="Labels layer"):
        upscale_layer(v, "mask", "x", model=PDN2, device="cpu")
    v.add_image(np.zeros((1, 1), dtype=np.float32), name="dot")
    with pytest.raises(ValueError, match="2x2"):
        upscale_layer(v, "dot", "x", model=PDN2, device="cpu")
    with pytest.raises(KeyError):
        upscale_layer(v, "no such layer", "x", model=PDN2, device="cpu")


def test_scripted_function_says_jpeg_for_a_layer_from_a_low_quality_jpeg(tmp_path):
    from napari.components import ViewerModel
    from napari.layers._source import layer_source  # how napari's readers set a layer's file
    from PIL import Image as Picture

    Picture.fromarray(grey_image((24, 28), dtype=np.uint8)).save(tmp_path / "frame.jpg", quality=40)
    v = ViewerModel()
    with layer_source(path=str(tmp_path / "frame.jpg")):
        v.add_image(np.asarray(Picture.open(tmp_path / "frame.jpg")), name="frame")
    (out,) = upscale_layer(v, "frame", "a street", model=PDN2, device="cpu", attention=False)
    assert out.metadata["caption"] == "a street, JPEG-compressed"
    (stack,) = upscale_layer(v, "frame", ["a street", ""], model=PDN2, device="cpu", attention=False)
    assert stack.metadata["captions"] == ["a street, JPEG-compressed", "JPEG-compressed"]
    (typed,) = upscale_layer(v, "frame", "a street", model=PDN2, device="cpu", attention=False, file_words=False)
    assert typed.metadata["caption"] == "a street"
    # A layer whose data were replaced by another image no longer holds the file's pixels.
    v.layers["frame"].data = grey_image((32, 36), dtype=np.uint8)
    (replaced,) = upscale_layer(v, "frame", "a street", model=PDN2, device="cpu", attention=False)
    assert replaced.metadata["caption"] == "a street" and "input_jpeg_quality" not in replaced.metadata


def _frame_and_clean_layers():
    """A viewer with the sample cat as a JPEG of quality 35 ("frame", an array layer) and as it is ("clean")."""
    import io

    from napari.components import ViewerModel
    from PIL import Image as Picture

    from napari_textsr.samples import sample_path

    photograph = Picture.open(sample_path("cat_lr.png")).convert("RGB")
    buffer = io.BytesIO()
    photograph.save(buffer, "JPEG", quality=35)
    v = ViewerModel()
    v.add_image(np.asarray(Picture.open(buffer)), name="frame", rgb=True)
    v.add_image(np.asarray(photograph), name="clean", rgb=True)
    return v


def test_scripted_function_says_jpeg_for_an_array_layer_whose_blocks_show_it():
    v = _frame_and_clean_layers()
    (out,) = upscale_layer(v, "frame", "a cat", model=PDN2, device="cpu", attention=False)
    assert out.metadata["caption"] == "a cat, JPEG-compressed"
    assert out.metadata["input_jpeg_quality"] == 35 and out.metadata["input_jpeg_quality_from"] == "pixels"
    (same,) = upscale_layer(v, "clean", "a cat", model=PDN2, device="cpu", attention=False)
    assert same.metadata["caption"] == "a cat" and "input_jpeg_quality" not in same.metadata


def test_scripted_function_takes_the_model_trained_for_jpeg_inputs_for_a_jpeg_layer(jpeg_model_weights):
    v = _frame_and_clean_layers()
    run = dict(device="cpu", attention=False, scale=2)
    for model in ("default", "pdn-x2"):
        (out,) = upscale_layer(v, "frame", "a cat", model=model, **run)
        assert out.metadata["model"] == "pdn-x2-jpeg"
    (typed,) = upscale_layer(v, "frame", "a cat", model="default", file_words=False, **run)
    assert typed.metadata["model"] == "pdn-x2-jpeg" and typed.metadata["caption"] == "a cat"
    (clean,) = upscale_layer(v, "clean", "a cat", model="default", **run)
    assert clean.metadata["model"] == "pdn-x2"


def test_sample_data_have_captions_and_the_documented_shapes():
    from napari_textsr.napari import sample_data

    expected = {
        sample_data.fluorescence_sample: ((128, 128), np.uint16, False),
        sample_data.photograph_sample: ((100, 150, 3), np.uint8, True),
        sample_data.text_sample: ((40, 192), np.uint8, False),
    }
    for function, (shape, dtype, rgb) in expected.items():
        [(data, kwargs, kind)] = function()
        assert kind == "image" and data.shape == shape and data.dtype == dtype
        assert kwargs.get("rgb", False) == rgb
        caption = kwargs["metadata"]["caption"]
        assert isinstance(caption, str) and len(caption.split()) >= 3
        assert caption == kwargs["metadata"]["captions"][0]
        assert data.std() > 0  # a real image, not a blank
    readme = (ROOT / "sample_data" / "README.md").read_text()
    from napari_textsr.samples import sample_captions

    for name in sample_captions():
        assert f"`{name}`" in readme  # every file has its licence noted


def test_manifest_is_valid_and_every_command_imports():
    import importlib

    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-textsr"
    package_copy = ROOT / "napari_textsr" / "napari.yaml"
    assert package_copy.resolve() == (ROOT / "napari.yaml").resolve()  # the entry point finds the same file
    for command in manifest.contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), command.id
    assert {s.key for s in manifest.contributions.sample_data} == {"fluorescence", "photograph", "text"}
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Text-guided super-resolution",
        "Train / fine-tune",
    ]
    installed = PluginManifest.from_distribution("napari-textsr")  # what napari itself reads
    assert [c.id for c in installed.contributions.commands] == [c.id for c in manifest.contributions.commands]
