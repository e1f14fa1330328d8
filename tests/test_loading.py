"""Model lookup: ModelSpec parsing, named errors, default picking, the old import paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_textsr import loading
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
