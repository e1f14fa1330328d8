"""PDN specifics: DCM attention names and masks, the Gram shortcut, the temperature, RCAN (the contract is in test_model_contract.py)."""

import pytest
import torch

from napari_textsr.models import create_model
from napari_textsr.models.pdn import DynamicCorrelationModule


@pytest.mark.parametrize("preset", ["tiny", "rcan-tiny"])
@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_every_scale_gives_the_right_shape(tiny_encoder, preset, scale):
    model = create_model("pdn", scale=scale, preset=preset, prompt_dim=32).eval()
    prompt = tiny_encoder.encode(["nuclei", "green filaments along the membrane"])
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 7, 10), prompt)
    assert out.image.shape == (2, 3, 7 * scale, 10 * scale)
    assert torch.isfinite(out.image).all()
    n_dcm = len(model.dcm_after)
    assert list(out.attention) == [f"DCM {i + 1}" for i in range(n_dcm)]
    for mask in out.attention.values():
        assert mask.shape == (2, 1, 7, 10) and mask.min() >= 0 and mask.max() <= 1


def test_attention_mask_matches_explicit_projection():
    """The Gram-matrix shortcut gives the paper's cosine mask exactly."""
    torch.manual_seed(1)
    dcm = DynamicCorrelationModule(channels=6, prompt_dim=10, n_kernels=4, kernel_size=3, temperature=34.0)
    f = torch.randn(2, 6, 5, 7)
    p = torch.randn(2, 10)
    projected = dcm.proj(f)  # (B, D, h, w)
    cos = torch.nn.functional.cosine_similarity(projected, p[:, :, None, None], dim=1)
    expected = torch.sigmoid(50.0 * cos)[:, None]
    torch.testing.assert_close(dcm.attention_mask(f, p), expected, atol=1e-5, rtol=1e-4)


def test_kernel_temperature_is_annealable_and_saved(tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=32)
    model.set_kernel_temperature(34.0 / 3)
    assert all(float(d.temperature) == pytest.approx(34.0 / 3) for d in model.dcms)
    assert any(k.endswith("temperature") for k in model.state_dict())


def test_only_the_edsr_variant_tiles_exactly():
    # EDSR's locality is checked for every method in test_model_contract.py; RCAN's
    # channel attention pools over the whole image, so its tiles are not exact.
    assert create_model("pdn", scale=2, preset="tiny", prompt_dim=32).tiling_info().exact
    assert not create_model("pdn", scale=2, preset="rcan-tiny", prompt_dim=32).tiling_info().exact


def test_presets_and_scales():
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("pdn", preset="huge")
    with pytest.raises(ValueError, match="scale must be one of"):
        create_model("pdn", scale=3)


def test_a_deepened_pdn_computes_the_same_and_its_new_blocks_learn(tiny_encoder):
    """Net2Net-style growth: appended blocks start as the identity, but their gradients are not zero."""
    torch.manual_seed(0)
    model = create_model("pdn", scale=4, preset="tiny", prompt_dim=32)
    model.set_kernel_temperature(34.0 / 3)
    for dcm in model.dcms:  # a trained model's kernel banks are not near zero
        torch.nn.init.normal_(dcm.weight, std=0.3)
    grown = model.deepened(5)
    assert grown.config.n_blocks == 5 and len(grown.blocks) == len(grown.dcms) == 5 and model.config.n_blocks == 2
    assert all(float(d.temperature) == pytest.approx(34.0 / 3) for d in grown.dcms)
    prompt = tiny_encoder.encode(["nuclei", "green filaments along the membrane"])
    lr = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        before, after = model(lr, prompt), grown(lr, prompt)
    assert torch.equal(before.image, after.image) and list(after.attention)[-1] == "DCM 5"
    grown(lr, prompt).image.square().mean().backward()
    for i in (2, 3, 4):
        assert grown.blocks[i].body[2].weight.grad.abs().sum() > 0
        assert grown.dcms[i].weight.grad.abs().sum() > 0
    assert grown.tiling_info().receptive_field > model.tiling_info().receptive_field
    with pytest.raises(ValueError, match="more than its 2 blocks"):
        model.deepened(2)
    with pytest.raises(ValueError, match="EDSR-backbone"):
        create_model("pdn", scale=2, preset="rcan-tiny", prompt_dim=32).deepened(9)


@pytest.mark.parametrize("scale", [2, 8])
def test_a_widened_pdn_computes_the_same_and_its_new_channels_learn(tiny_encoder, scale):
    """Net2Net-style widening: the new channels start at zero, but the weights writing them get gradients."""
    torch.manual_seed(0)
    model = create_model("pdn", scale=scale, preset="tiny", prompt_dim=32)
    for dcm in model.dcms:  # a trained model's kernel banks are not near zero
        torch.nn.init.normal_(dcm.weight, std=0.3)
    old = model.config.n_feats
    wide = model.widened(old + 4)
    assert wide.config.n_feats == old + 4 and model.config.n_feats == old
    assert torch.equal(wide.blocks[1].body[0].weight[:old, :old], model.blocks[1].body[0].weight)
    prompt = tiny_encoder.encode(["nuclei", "green filaments along the membrane"])
    lr = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        before, after = model(lr, prompt), wide(lr, prompt)
    torch.testing.assert_close(after.image, before.image, rtol=0, atol=1e-5)
    for name in before.attention:
        torch.testing.assert_close(after.attention[name], before.attention[name], rtol=0, atol=1e-5)
    wide(lr, prompt).image.square().mean().backward()
    assert wide.head.weight.grad[old:].abs().sum() > 0  # the zero rows of the new stream channels
    assert wide.blocks[0].body[2].weight.grad[:old, old:].abs().sum() > 0  # new hidden channels into old
    assert wide.upsampler[0].weight.grad[4 * old :].abs().sum() > 0
    with pytest.raises(ValueError, match="more than its"):
        model.widened(old)
    with pytest.raises(ValueError, match="EDSR-backbone"):
        create_model("pdn", scale=2, preset="rcan-tiny", prompt_dim=32).widened(16)
