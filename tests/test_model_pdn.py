import pytest
import torch

from napari_textsr.models import available_methods, create_model
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


def test_captions_change_the_output(tiny_encoder):
    model = create_model("pdn", scale=4, preset="tiny", prompt_dim=32).eval()
    lr = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        a = model(lr, tiny_encoder.encode("bright puncta")).image
        b = model(lr, tiny_encoder.encode("long dim filaments")).image
    assert (a - b).abs().max() > 1e-3


def test_without_text_fusion_there_is_no_fusion_and_caption_is_ignored(tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=32, text_fusion=False).eval()
    assert model.fusion_parameters() == []
    lr = torch.rand(1, 3, 9, 9)
    with torch.inference_mode():
        a = model(lr, tiny_encoder.encode("one"))
        b = model(lr, tiny_encoder.encode("something else entirely"))
    assert torch.equal(a.image, b.image) and a.attention == {}


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


def test_edsr_variant_is_local_so_tiles_are_exact(tiny_encoder):
    model = create_model("pdn", scale=2, preset="tiny", prompt_dim=32).eval()
    rf = model.tiling_info().receptive_field
    lr = torch.rand(1, 3, 40, 44)
    prompt = tiny_encoder.encode("nuclei")
    with torch.inference_mode():
        full = model(lr, prompt).image
        y0, x0 = 5, 3
        crop = model(lr[:, :, y0 : y0 + 34, x0 : x0 + 40], prompt).image
    s = 2
    inner_full = full[:, :, (y0 + rf) * s : (y0 + 34 - rf) * s, (x0 + rf) * s : (x0 + 40 - rf) * s]
    inner_crop = crop[:, :, rf * s : (34 - rf) * s, rf * s : (40 - rf) * s]
    torch.testing.assert_close(inner_crop, inner_full, atol=1e-5, rtol=0)
    assert model.tiling_info().exact
    assert not create_model("pdn", scale=2, preset="rcan-tiny", prompt_dim=32).tiling_info().exact


def test_registry_and_presets():
    assert set(available_methods()) == {"tgsr", "clipsr", "pdn"}
    with pytest.raises(ValueError, match="unknown method"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("pdn", preset="huge")
    with pytest.raises(ValueError, match="scale must be one of"):
        create_model("pdn", scale=3)
