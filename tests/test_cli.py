"""``textsr upscale``, ``textsr info`` and ``textsr models``, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_textsr import loading
from napari_textsr.checkpoints import TrainingRecord, save_checkpoint
from napari_textsr.cli import main
from napari_textsr.inference import load_model
from napari_textsr.models import create_model

MODEL = "random:pdn:2:tiny"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_upscale_png(tmp_path, rng, capsys):
    image = (rng.random((20, 26, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    code = main(
        [
            "upscale",
            str(tmp_path / "in.png"),
            str(tmp_path / "out.png"),
            "--caption",
            "two cells",
            "--model",
            MODEL,
            "--quiet",
        ]
    )
    assert code == 0
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGB" and out.size == (52, 40)
        provenance = json.loads(out.text["textsr"])["textsr"]
        pixels = np.asarray(out)
    assert provenance["caption"] == "two cells" and provenance["scale"] == 2 and provenance["model"] == MODEL
    expected = load_model(MODEL, device="cpu").upscale(image, "two cells").image
    np.testing.assert_array_equal(pixels, expected)
    assert "wrote" in capsys.readouterr().out
    args = ["upscale", str(tmp_path / "in.png"), str(tmp_path / "se.png"), "--model", MODEL, "--quiet"]
    assert main([*args, "--self-ensemble"]) == 0
    with Image.open(tmp_path / "se.png") as out:
        assert json.loads(out.text["textsr"])["textsr"]["self_ensemble"] is True
        expected = load_model(MODEL, device="cpu", self_ensemble=True).upscale(image, "").image
        np.testing.assert_array_equal(np.asarray(out), expected)


def test_upscale_16_bit_tif_stack_with_attention_maps(tmp_path, rng, capsys):
    stack = (rng.random((3, 20, 22)) * 50000 + 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    maps = tmp_path / "maps"
    code = main(
        [
            "upscale",
            str(tmp_path / "stack.tif"),
            str(tmp_path / "out.tif"),
            "--caption",
            "nuclei",
            "--model",
            MODEL,
            "--tile",
            "8",
            "--consistency",
            "--attention-dir",
            str(maps),
            "--quiet",
        ]
    )
    assert code == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16 and out.shape == (3, 40, 44)
    expected = load_model(MODEL, device="cpu").upscale(stack, "nuclei", tile=8, consistency=True)
    np.testing.assert_array_equal(out, expected.image)
    names = sorted(p.name for p in maps.iterdir())
    assert names == ["out_attention01_DCM_1.tif", "out_attention02_DCM_2.tif", "out_consistency.tif"]
    dcm = tifffile.imread(maps / "out_attention01_DCM_1.tif")
    assert dcm.dtype == np.float32 and dcm.shape == (3, 40, 44)
    np.testing.assert_array_equal(dcm, expected.attention["DCM 1"])
    assert "consistency error" in capsys.readouterr().out

    # 8-bit PNG maps: one file per slice, scaled to the map's maximum.
    code = main(
        [
            "upscale",
            str(tmp_path / "stack.tif"),
            str(tmp_path / "out2.tif"),
            "--model",
            MODEL,
            "--attention-dir",
            str(tmp_path / "png"),
            "--attention-format",
            "png",
            "--quiet",
        ]
    )
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert len(pngs) == 6 and pngs[0] == "out2_attention01_DCM_1_0000.png"
    planes = [np.asarray(Image.open(tmp_path / "png" / name)) for name in pngs[:3]]
    assert all(p.dtype == np.uint8 and p.shape == (40, 44) for p in planes)
    assert max(p.max() for p in planes) == 255


def test_upscale_errors_are_one_line(tmp_path, rng, capsys):
    stack = (rng.random((2, 10, 10)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    assert main(["upscale", str(tmp_path / "missing.png"), str(tmp_path / "o.png"), "--model", MODEL]) == 1
    assert "no such image file" in capsys.readouterr().err
    code = main(["upscale", str(tmp_path / "stack.tif"), str(tmp_path / "o.png"), "--model", MODEL, "--quiet"])
    assert code == 1
    assert "write a .tif" in capsys.readouterr().err
    # Options that do not fit how the command was called are refused, saying what fits instead.
    Image.fromarray(stack[0]).save(tmp_path / "one.png")
    assert main(["upscale", str(tmp_path / "one.png"), str(tmp_path / "o.png"), "--format", "jpg"]) == 1
    assert "--format is for --out-dir batches" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    assert main(["upscale", str(tmp_path), str(tmp_path / "o.png"), "--model", MODEL]) == 1
    assert "is a folder or pattern: give --out-dir DIR instead of OUT" in capsys.readouterr().err


def test_info_prints_the_description_as_json(capsys):
    assert main(["info", "random:pdn:4:tiny"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["method"] == "pdn" and described["scale"] == 4 and described["trained"] is False
    assert described["tiling"]["receptive_field"] > 0 and described["parameters"] > 0


def test_models_lists_bundled_checkpoints(tmp_path, monkeypatch, capsys, tiny_encoder):
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "No bundled models" in capsys.readouterr().out
    encoder = tiny_encoder
    torch.manual_seed(0)
    model = create_model("pdn", 4, "tiny", prompt_dim=encoder.embed_dim)
    record = TrainingRecord(
        data=["synthetic:512:0", "shared/data/train"],
        steps=2000,
        validation={"psnr_y": 31.234567, "psnr_bicubic_y": 29.5},
    )
    save_checkpoint(tmp_path / "cells-x4.textsr.safetensors", model, encoder, training=record)
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["cells-x4", "pdn", "x4", "2000", "steps"]
    assert lines[0].endswith("[default at x4]")  # the only x4 model is the x4 default
    assert lines[1].strip() == "validation: psnr_y=31.23, psnr_bicubic_y=29.5"
    assert lines[2].strip() == "trained 2000 steps on: synthetic:512:0; shared/data/train"
    assert lines[3].strip() == "degradation: not recorded"
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "cells-x4" and listed[0]["training"]["validation"]["psnr_bicubic_y"] == 29.5
    # A fine-tune lists its chain of starting points.
    base = {"data": ["photos"], "steps": 300, "extra": {}}
    middle = {"data": ["synthetic:8:1"], "steps": 200, "extra": {"init_training": base}}
    tuned = TrainingRecord(data=["shared/data/train"], steps=100, extra={"init_training": middle})
    save_checkpoint(tmp_path / "cells-x4.textsr.safetensors", model, encoder, training=tuned)
    assert main(["models"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert lines[1] == "trained 100 steps on: shared/data/train"
    assert lines[3:7:2] == [
        "fine-tuned from a model trained 200 steps on: synthetic:8:1",
        "fine-tuned from a model trained 300 steps on: photos",
    ]
    family = TrainingRecord(data=["photos"], steps=5, degradation={"kind": "family", "scale": 4, "preset": "realistic"})
    save_checkpoint(tmp_path / "cells-x4.textsr.safetensors", model, encoder, training=family)
    assert main(["models"]) == 0
    assert "degradation: realistic family (drawn per sample)" in capsys.readouterr().out
