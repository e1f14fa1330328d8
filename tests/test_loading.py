"""Model lookup: ModelSpec parsing, named errors, default picking, the old import paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from napari_textsr import loading
from napari_textsr.checkpoints import TrainingRecord
from napari_textsr.loading import BundledModel, ModelSpec, ModelSpecError, pick_default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default", ModelSpec("default")),
        ("random:pdn:4:tiny", ModelSpec("random", method="pdn", scale=4, preset="tiny")),
        ("random:TGSR:x8", ModelSpec("random", method="tgsr", scale=8)),
        ("random:clipsr", ModelSpec("random", method="clipsr")),
        ("random:pdn::tiny", ModelSpec("random", method="pdn", preset="tiny")),
        ("pdn-x4", ModelSpec("bundled", name="pdn-x4")),
        ("runs/a/model.textsr.safetensors", ModelSpec("file", name="runs/a/model.textsr.safetensors")),
        ("elsewhere.safetensors", ModelSpec("file", name="elsewhere.safetensors")),
    ],
)
def test_parse(text, expected):
    spec = ModelSpec.parse(text)
    assert spec == expected
    assert ModelSpec.parse(str(spec)) == spec  # the text form round-trips


def test_an_existing_file_without_suffix_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "mymodel").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert ModelSpec.parse("mymodel") == ModelSpec("file", name="mymodel")
    assert ModelSpec.parse(Path("mymodel")).path == Path("mymodel")
    assert ModelSpec.parse("othermodel").kind == "bundled" and ModelSpec.parse("othermodel").path is None


def test_random_constructor_matches_the_text_form():
    assert str(ModelSpec.random("pdn", 4, "tiny")) == "random:pdn:4:tiny"
    assert str(ModelSpec.random("PDN")) == "random:pdn"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("random:esrgan:4", "unknown method 'esrgan'"),
        ("random:", "bad model spec"),
        ("random:pdn:4:tiny:extra", "bad model spec"),
        ("random:pdn:four", "bad scale 'four'"),
        ("", "empty model spec"),
    ],
)
def test_malformed_specs_raise_the_named_error(text, message):
    with pytest.raises(ModelSpecError, match=message):
        ModelSpec.parse(text)
    assert issubclass(ModelSpecError, ValueError)  # callers catching ValueError keep working


def test_unknown_names_raise_the_named_error_listing_what_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelSpecError, match="no model 'nope': it is not a file and not a bundled model. No models"):
        loading.load("nope")
    with pytest.raises(ModelSpecError, match="no bundled model for x8"):
        loading.load("default", scale=8)
    with pytest.raises(FileNotFoundError, match="missing.textsr.safetensors"):
        loading.load(str(tmp_path / "missing.textsr.safetensors"))


def _bundled(name: str, method: str, scale: int) -> BundledModel:
    return BundledModel(
        name=name, path=Path(f"{name}.textsr.safetensors"), method=method, scale=scale, encoder="e:none"
    )


def test_pick_default_order():
    models = [
        _bundled("a-clipsr", "clipsr", 4),
        _bundled("b-tgsr", "tgsr", 4),
        _bundled("c-pdn", "pdn", 4),
        _bundled("pdn-x8", "pdn", 8),
        _bundled("tgsr-x8", "tgsr", 8),
        _bundled("other", "custom", 2),
    ]
    assert pick_default(4, models).name == "c-pdn"  # PDN first at x4
    assert pick_default(None, models).name == "c-pdn"  # x4 when no scale is asked
    assert pick_default(8, models).name == "pdn-x8"  # PDN first at every scale (the realistic-family models)
    assert pick_default(2, models).name == "other"  # an unranked method is still found
    assert pick_default(4, [*models, _bundled("default-mine", "clipsr", 4)]).name == "default-mine"
    with pytest.raises(ModelSpecError, match=r"no bundled model for x3. Bundled models: a-clipsr \(clipsr, x4\)"):
        pick_default(3, models)


def _jpeg_only(name: str, scale: int, p_jpeg: float = 1.0) -> BundledModel:
    record = TrainingRecord(degradation={"kind": "family", "scale": scale, "p_jpeg": p_jpeg})
    return dataclasses.replace(_bundled(name, "pdn", scale), training=record)


def test_a_model_trained_on_jpeg_inputs_only_is_the_default_for_jpeg_inputs_alone():
    general, jpeg = _bundled("pdn-x4", "pdn", 4), _jpeg_only("pdn-x4-jpeg", 4)
    assert jpeg.for_jpeg_inputs and not general.for_jpeg_inputs
    assert not _jpeg_only("mixed", 4, p_jpeg=0.45).for_jpeg_inputs
    # Named "a..." so that it would win on the name if it were not left out.
    models = [general, dataclasses.replace(jpeg, name="a-jpeg"), _bundled("pdn-x2", "pdn", 2)]
    assert pick_default(4, models).name == "pdn-x4"
    assert pick_default(4, models, jpeg=True).name == "a-jpeg"
    assert pick_default(2, models, jpeg=True).name == "pdn-x2"  # no JPEG model at x2: the general one
    with pytest.raises(ModelSpecError, match="no bundled model for x8"):
        pick_default(8, [_jpeg_only("only-jpeg", 8)])  # never the default for other inputs
    assert jpeg.to_dict()["for_jpeg_inputs"] is True


def test_default_for_input_routes_only_the_default_and_only_heavy_jpeg(jpeg_model_weights):
    route = loading.default_for_input
    assert route("default", 2, 60) == route("pdn-x2", None, 30) == route("pdn-x2", 2, 45) == "pdn-x2-jpeg"
    assert route("default", 2, 61) == route("default", 2, None) == "default"  # light or no JPEG
    assert route("pdn-x2", None, 95) == "pdn-x2"
    assert route("default", None, 30) == "default"  # x4: nothing is bundled there in this folder
    assert route("pdn-x2", 4, 30) == "pdn-x2"  # a wrong scale is for loading to refuse
    path = str(jpeg_model_weights / "pdn-x2.textsr.safetensors")
    assert route(path, 2, 30) == path  # a model chosen by path is used as chosen
    assert route("pdn-x2-jpeg", 2, 90) == "pdn-x2-jpeg"  # and one chosen by name
    assert route("random:pdn:2:tiny", 2, 30) == "random:pdn:2:tiny"
    assert route("no-such-model", 2, 30) == "no-such-model"
    assert pick_default(2).name == "pdn-x2" and pick_default(2, jpeg=True).name == "pdn-x2-jpeg"


def test_random_load_checks_the_asked_scale():
    loaded = loading.load("random:pdn::tiny", scale=2, device="cpu")
    assert (loaded.model.scale, loaded.description.name) == (2, "random:pdn:2:tiny")
    with pytest.raises(ValueError, match="x4 model, but scale=2"):
        loading.load("random:pdn:4:tiny", scale=2, device="cpu")


def test_old_import_paths_still_work():
    import napari_textsr
    from napari_textsr import inference

    assert napari_textsr.list_models is loading.list_models
    assert napari_textsr.ModelSpec is ModelSpec and napari_textsr.ModelSpecError is ModelSpecError
    assert inference.ModelDescription is loading.ModelDescription
    assert inference.WEIGHTS_DIR == loading.WEIGHTS_DIR == Path(loading.__file__).parent / "weights"
