"""``textsr upscale`` with region captions, a text-effect map and an evidence report; the report's hashes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile

from napari_textsr.cli import main
from napari_textsr.cli.upscale import read_region_captions
from napari_textsr.inference import load_model
from napari_textsr.regions import RegionCaptions
from napari_textsr.report import sha256_array, sha256_file, sha256_module

MODEL = "random:pdn:2:tiny"


def _files(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((24, 28)) * 50000 + 1000).astype(np.uint16)
    labels = np.zeros((24, 28), np.uint8)
    labels[2:10, 3:12] = 1
    labels[14:22, 15:26] = 2
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    (tmp_path / "captions.csv").write_text('label,caption\n1,"nuclei, two in mitosis"\n2,actin filaments\n')
    return image, labels


def _run(tmp_path, name: str) -> int:
    """Upscale into the folder ``name`` (out.tif, effect.tif, report.json)."""
    folder = tmp_path / name
    return main(
        [
            "upscale",
            str(tmp_path / "in.tif"),
            str(folder / "out.tif"),
            "--caption",
            "a cell",
            "--model",
            MODEL,
            "--tile",
            "12",
            "--regions",
            str(tmp_path / "labels.tif"),
            "--region-captions",
            str(tmp_path / "captions.csv"),
            "--text-effect",
            str(folder / "effect.tif"),
            "--report",
            str(folder / "report.json"),
            "--quiet",
        ]
    )


def test_upscale_with_regions_text_effect_and_a_stable_report(tmp_path, capsys):
    image, labels = _files(tmp_path)
    assert _run(tmp_path, "first") == 0 and _run(tmp_path, "second") == 0
    out = capsys.readouterr().out
    assert "2 region caption(s) blended" in out and "text effect" in out

    upscaler = load_model(MODEL, device="cpu")
    regions = RegionCaptions(labels, {1: "nuclei, two in mitosis", 2: "actin filaments"})
    expected = upscaler.upscale(image, "a cell", tile=12, regions=regions, text_effect=True)
    written = tifffile.imread(tmp_path / "first" / "out.tif")
    np.testing.assert_array_equal(written, expected.image)
    effect = tifffile.imread(tmp_path / "first" / "effect.tif")
    assert effect.dtype == np.float32 and effect.shape == (48, 56)
    np.testing.assert_array_equal(effect, expected.text_effect)
    assert np.abs(effect).max() > 0  # the captions change this model's output, if only a little

    first = json.loads((tmp_path / "first" / "report.json").read_text())
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert first["input"]["file_sha256"] == hashlib.sha256((tmp_path / "in.tif").read_bytes()).hexdigest()
    assert first["input"]["array_sha256"] == sha256_array(image)
    assert first["output"]["file_sha256"] == sha256_file(tmp_path / "first" / "out.tif")
    assert first["output"]["array_sha256"] == sha256_array(written)
    assert first["model"]["weights_sha256"] == sha256_module(upscaler.model)
    assert first["model"]["file"] is None and first["seed"] == 0  # an untrained random: model
    for part, key in [
        ("input", "file_sha256"),
        ("output", "file_sha256"),
        ("output", "array_sha256"),
        ("output", "text_effect_array_sha256"),
        ("model", "weights_sha256"),
        ("model", "encoder_weights_sha256"),
        ("input", "regions_file_sha256"),
    ]:
        assert first[part][key] == second[part][key], (part, key)
    assert first["parameters"]["caption"] == "a cell" and first["parameters"]["tile"] == 12
    assert first["parameters"]["region_captions"] == str(tmp_path / "captions.csv")
    assert first["device"] == "cpu" and first["precision"] == "float32"
    assert first["environment"]["libraries"]["torch"] and first["determinism"]["torch_threads"] >= 1
    stats = first["statistics"]["text_effect"]
    assert stats == pytest.approx(expected.text_effect_stats)
    regions_record = first["provenance"]["regions"]["regions"]
    assert [(r["label"], r["caption"]) for r in regions_record] == [
        (1, "nuclei, two in mitosis"),
        (2, "actin filaments"),
    ]
    # The file's own metadata has the regions too, and no run time (so reruns write the same bytes).
    with tifffile.TiffFile(tmp_path / "first" / "out.tif") as tif:
        embedded = json.loads(tif.pages[0].description)["textsr"]
    assert embedded["regions"]["labels_sha256"] == regions.labels_sha256()
    assert "time" not in embedded and embedded["report"] == "report.json"


def test_bundled_model_file_is_hashed(tmp_path):
    from napari_textsr.report import build_report

    upscaler = load_model("default", scale=4, device="cpu")
    result = upscaler.upscale(np.zeros((8, 8), np.uint8), "", tile=0)
    report = build_report(result, upscaler, parameters={"model": "default"})
    path = report["model"]["file"]
    assert path.endswith(".textsr.safetensors")
    assert report["model"]["file_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_region_option_errors_are_one_line(tmp_path, capsys):
    _files(tmp_path)
    args = ["upscale", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--model", MODEL, "--quiet"]
    assert main(args + ["--regions", str(tmp_path / "labels.tif")]) == 1
    assert "go together" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("1,a\nx,b\n")
    assert main(args + ["--regions", str(tmp_path / "labels.tif"), "--region-captions", str(tmp_path / "bad.csv")]) == 1
    assert "bad.csv:2: label 'x' is not an integer" in capsys.readouterr().err


def test_read_region_captions(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('1,"red, stripes"\n\n7, green nuclei \n')
    assert read_region_captions(path) == {1: "red, stripes", 7: "green nuclei"}
    path.write_text("1,a\n1,b\n")
    with pytest.raises(ValueError, match="given twice"):
        read_region_captions(path)
    path.write_text("0,a\n")
    with pytest.raises(ValueError, match="positive"):
        read_region_captions(path)
    path.write_text("1,a,b\n")
    with pytest.raises(ValueError, match="3 field"):
        read_region_captions(path)


def test_array_hash_covers_dtype_shape_and_values():
    a = np.arange(6, dtype=np.uint16).reshape(2, 3)
    assert sha256_array(a) == hashlib.sha256(b"<u2 (2, 3)\n" + a.tobytes()).hexdigest()
    assert sha256_array(a) != sha256_array(a.astype(np.int16))
    assert sha256_array(a) != sha256_array(a.reshape(3, 2))
    b = a.copy()
    b[1, 2] += 1
    assert sha256_array(a) != sha256_array(b)
    assert sha256_array(np.asfortranarray(a)) == sha256_array(a)
