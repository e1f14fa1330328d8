"""The models that ship in the package: present, described, loadable, better than bicubic."""

import json

import numpy as np
import pytest
import torch

from napari_textsr.benchmark import bicubic_upscale
from napari_textsr.cli import main
from napari_textsr.inference import WEIGHTS_DIR, list_models, load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training.degradations import Degradation

SHIPPED = {"pdn-x4": ("pdn", 4), "pdn-x8": ("pdn", 8), "tgsr-x8": ("tgsr", 8), "clipsr-x4": ("clipsr", 4)}


def test_shipped_models_are_listed_with_their_training_record():
    models = {m.name: m for m in list_models()}
    assert set(SHIPPED) <= set(models)
    for name, (method, scale) in SHIPPED.items():
        m = models[name]
        assert (m.method, m.scale) == (method, scale)
        assert m.encoder == "textsr-clip-s:bundled:textsr-clip-s"
        assert m.training is not None and m.training.command.startswith("textsr train")
        assert any("bsd200" in d for d in m.training.data) and m.training.steps > 0
        assert "psnr_y" in m.training.validation
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert total < 60e6


def test_default_picks_the_best_measured_method_per_scale():
    assert load_model("default", scale=4).description.name == "pdn-x4"
    assert load_model("default", scale=8).description.name == "tgsr-x8"


@pytest.mark.parametrize("name", ["pdn-x4", "pdn-x8"])
def test_shipped_pdn_beats_bicubic_on_unseen_synthetic_scenes(name):
    """Scenes from a seed training never used, degraded the way training degrades."""
    upscaler = load_model(name)
    scale = upscaler.scale
    gains = []
    for item in synthetic_dataset(4, seed=4242, size=128):
        hr = item.image
        lr = Degradation(scale=scale)(torch.from_numpy(hr).permute(2, 0, 1)[None])[0]
        lr8 = np.round(lr.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        sr = upscaler.upscale(lr8, item.captions[0]).image.astype(np.float32) / 255
        gains.append(quality_scores(sr, hr, scale).psnr_y - quality_scores(bicubic_upscale(lr8, scale), hr, scale).psnr_y)
    assert np.mean(gains) > 0.2, gains


@pytest.mark.parametrize("name", ["tgsr-x8", "clipsr-x4"])
def test_other_shipped_models_load_and_run(name):
    upscaler = load_model(name)
    result = upscaler.upscale(np.full((20, 24, 3), 120, np.uint8), "a grey wall")
    assert result.image.shape == (20 * upscaler.scale, 24 * upscaler.scale, 3)
    assert abs(float(result.image.mean()) - 120) < 3  # a flat input stays flat
    assert result.attention


def test_headless_demo_writes_the_upscaled_sample_and_its_maps(tmp_path, capsys):
    import tifffile

    assert main(["demo", "--headless", str(tmp_path)]) == 0
    out = tifffile.imread(tmp_path / "nuclei_lr_x4.tif")
    source = tifffile.imread(tmp_path / "nuclei_lr_input.tif")
    assert out.dtype == np.uint16 and out.shape == (source.shape[0] * 4, source.shape[1] * 4)
    maps = sorted(tmp_path.glob("nuclei_lr_attention_*.png"))
    assert len(maps) == 8  # one per DCM of the default PDN
    provenance = json.loads((tmp_path / "nuclei_lr_provenance.json").read_text())
    assert provenance["model"] == "pdn-x4" and provenance["caption"]
    assert "pdn-x4" in capsys.readouterr().out
