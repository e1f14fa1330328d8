"""Training losses of every method: TGSR's TAR and DAMSM, PDN's kernel-temperature schedule, loss settings, VGG perceptual."""

from __future__ import annotations

import pytest
import torch

from napari_textsr.models import create_model
from napari_textsr.models.base import SROutput
from napari_textsr.training import losses as L


def test_tar_weights_from_word_attention(tiny_encoder):
    criterion = L.TGSRCriterion(L.TGSRLossWeights(), tiny_encoder, scale=4)
    prompt = tiny_encoder.encode(["red dots"])
    words = prompt.whole_words(0)
    assert [w for w, _ in words] == ["red", "dots", "<sentence>"]
    attention = torch.zeros(1, prompt.tokens.shape[1], 4, 4)
    attention[0, words[0][1][0], 0, 0] = 1.0  # "red" on one pixel
    attention[0, words[1][1][0]] = 1.0  # "dots" on all the others
    attention[0, words[1][1][0], 0, 0] = 0.0
    attention[0, words[2][1][0]] = 5.0  # the end-of-text token is not a keyword
    output = SROutput(image=torch.zeros(1, 3, 16, 16), aux={"word_attention": attention})
    weights = criterion.tar_weights(output, prompt)
    # Each word's map is scaled to mean 1, then the words are averaged.
    expected = torch.full((1, 1, 4, 4), 8 / 15)
    expected[0, 0, 0, 0] = 8.0
    assert torch.allclose(weights, expected)
    assert float(weights.mean()) == pytest.approx(1.0)
    # An empty caption has only the end-of-text token: its map is used.
    empty = tiny_encoder.encode([""])
    attention = torch.zeros(1, 1, 4, 4)
    attention[0, 0, :2] = 1.0
    weights = criterion.tar_weights(SROutput(image=torch.zeros(1, 3, 16, 16), aux={"word_attention": attention}), empty)
    assert torch.allclose(weights[0, 0, :2], torch.full((2, 4), 2.0)) and float(weights[0, 0, 2:].abs().sum()) == 0


def test_damsm_prefers_matching_captions(tiny_encoder):
    captions = ["red circle", "blue stripes", "green dots", "yellow star"]
    prompt = tiny_encoder.encode(captions)
    # Regions that are the words themselves match their own caption best.
    regions = prompt.tokens.clone()
    pooled = prompt.pooled.clone()
    matched = L.damsm_loss(regions, pooled, prompt, captions)
    shuffled = L.damsm_loss(regions.roll(1, 0), pooled.roll(1, 0), prompt, captions)
    assert float(matched) < float(shuffled)
    # Samples sharing a caption are not negatives of each other.
    same = ["red circle"] * 4
    assert float(L.damsm_loss(regions, pooled, tiny_encoder.encode(same), same)) == pytest.approx(0.0, abs=1e-5)


def test_pdn_kernel_temperature_schedule():
    criterion = L.PDNCriterion(L.PDNLossWeights())
    model = create_model("pdn", 4, "tiny", prompt_dim=32)
    criterion.prepare(model)
    assert criterion.temperature_at(0, steps_per_epoch=5) == 34.0
    assert criterion.temperature_at(49, steps_per_epoch=5) == 34.0  # epoch 9
    assert criterion.temperature_at(50, steps_per_epoch=5) == pytest.approx(34 / 3)  # epoch 10
    assert criterion.temperature_at(100, steps_per_epoch=5) == pytest.approx(34 / 9)
    criterion.schedule(model, 100, steps_per_epoch=5)
    assert float(model.dcms[0].temperature) == pytest.approx(34 / 9)
    # Fine-tuning starts from the model's (annealed) temperature, not from 34.
    again = L.PDNCriterion(L.PDNLossWeights())
    again.prepare(model)
    assert again.temperature_at(0, 5) == pytest.approx(34 / 9)


def test_pdn_l2_term_is_the_mean_squared_error_and_l1_can_be_switched_off():
    criterion_default = L.PDNCriterion(L.PDNLossWeights())
    sr = torch.tensor([0.0, 0.5, 1.0, 0.25]).reshape(1, 1, 2, 2)
    hr = torch.tensor([0.5, 0.5, 0.0, 0.25]).reshape(1, 1, 2, 2)
    output = SROutput(image=sr)
    total, terms = criterion_default.generator_loss(output, hr, None, [""])
    assert set(terms) == {"l1"} and float(total) == pytest.approx(1.5 / 4)  # the paper's L1 alone by default
    weights = L.default_loss_weights("pdn").replace(**L.parse_loss_overrides("l1=0,l2=2"))
    total, terms = L.PDNCriterion(weights).generator_loss(output, hr, None, [""])
    assert set(terms) == {"l2"} and float(total) == pytest.approx(2 * 1.25 / 4)  # 2 x mean of 0.25 + 1
    with pytest.raises(ValueError, match="every term off"):
        L.default_loss_weights("pdn").replace(l1=0)
    with pytest.raises(ValueError, match=">= 0"):
        L.default_loss_weights("pdn").replace(l2=-1)


def test_loss_settings_parse_and_reject_unknown_names():
    weights = L.default_loss_weights("tgsr").replace(**L.parse_loss_overrides("tic=0, cgan=0.2,adversarial=true"))
    assert (weights.tic, weights.cgan, weights.adversarial) == (0.0, 0.2, True)
    assert L.default_loss_weights("clipsr").generator_betas() == (0.9, 0.999)
    assert L.default_loss_weights("clipsr").replace(adversarial=True).generator_betas() == (0.0, 0.9)
    with pytest.raises(ValueError, match="no loss setting"):
        L.default_loss_weights("pdn").replace(adversarial=True)
    paper = L.paper_loss_weights("tgsr")
    assert paper.adversarial and paper.consistency and paper.tic == 0.5 and paper.cgan == 0.1
    assert L.paper_loss_weights("pdn") == L.default_loss_weights("pdn")


def test_vgg_perceptual_from_a_local_file_and_fallback(tmp_path, tiny_encoder):
    from napari_textsr._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    with torch.device("meta"):  # shapes only: random values are drawn below, without VGG's slow init
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": torch.randn(shape) * 0.05 for k, shape in shapes.items()}, path)
    criterion = L.CLIPSRCriterion(L.CLIPSRLossWeights(vgg_weights=str(path)), tiny_encoder)
    assert criterion.perceptual is not None and not criterion.notes
    hr = torch.rand(1, 3, 16, 16)
    assert float(criterion.perceptual(hr, hr)) == 0.0
    assert float(criterion.perceptual(hr.flip(-1), hr)) > 0.0
    # Without a file and without the torch hub cache the term is off, and says so.
    if L.vgg19_weights_path(None) is None:
        fallback = L.CLIPSRCriterion(L.CLIPSRLossWeights(), tiny_encoder)
        assert fallback.perceptual is None and "perceptual loss off" in fallback.notes[0]
