"""CLIP-SR (tiny preset) specifics: per-iteration maps, the CLIP-ViT branch, CLIP loading, window reach.

The contract every method keeps (shapes, captions, tiling, round trip) is in test_model_contract.py."""

from __future__ import annotations

import pytest
import torch

from napari_textsr.models import create_model
from napari_textsr.models.clipsr import CLIPSR, CLIPSRConfig, ResidualAttentionBlock
from napari_textsr.prompts import PromptEncoder


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    return PromptEncoder.from_spec("textsr-tiny:none")


def make_model(encoder: PromptEncoder, scale: int = 4, seed: int = 0, **overrides) -> CLIPSR:
    torch.manual_seed(seed)
    model = create_model("clipsr", scale=scale, preset="tiny", prompt_dim=encoder.embed_dim, **overrides)
    assert isinstance(model, CLIPSR)
    return model.eval()


def perturb_fusion(model: CLIPSR, seed: int = 1, std: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(seed)
    params = model.fusion_parameters()
    assert params, "a text-fused model has fusion parameters"
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator) * std)


def lr_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator)


def test_one_attention_map_per_iteration(encoder):
    model = make_model(encoder)
    config: CLIPSRConfig = model.config  # type: ignore[assignment]
    perturb_fusion(model)
    with torch.inference_mode():
        out = model(lr_batch(2, 11, 17), encoder.encode(["a cat", "a dog"]))
    assert list(out.attention) == [f"iteration {k + 1}" for k in range(config.n_iterations)]
    for heatmap in out.attention.values():
        assert heatmap.shape == (2, 1, 11, 17)
        assert torch.isfinite(heatmap).all() and (heatmap >= 0).all()
        assert heatmap.max() > 0  # the perturbed text modulation acts somewhere
    # The maps say where the caption acted, so they depend on it.
    with torch.inference_mode():
        other = model(lr_batch(2, 11, 17), encoder.encode(["a house", "a tree"]))
    assert not torch.allclose(out.attention["iteration 1"], other.attention["iteration 1"])


def test_without_text_fusion_the_caption_is_ignored(encoder):
    model = make_model(encoder, text_fusion=False)
    assert model.fusion_parameters() == []
    assert not any(name.startswith(("tif", "prompt_predictor")) for name, _ in model.named_modules())
    lr = lr_batch(2, 12, 15)
    with torch.inference_mode():
        a = model(lr, encoder.encode(["a red bird", "a cat"]))
        b = model(lr, encoder.encode(["vertical stripes", ""]))
    assert torch.equal(a.image, b.image)
    assert a.attention == {}
    # The baseline keeps the same backbone, the ViT included.
    fused = make_model(encoder)
    backbone = {n for n, _ in fused.named_parameters() if p_is_backbone(fused, n)}
    assert backbone == {n for n, _ in model.named_parameters()}
    assert any(n.startswith("clip_vit.resblocks") for n in backbone)


def p_is_backbone(model: CLIPSR, name: str) -> bool:
    fusion = {id(p) for p in model.fusion_parameters()}
    return id(dict(model.named_parameters())[name]) not in fusion


@pytest.mark.parametrize("text_fusion", [True, False])
def test_clip_vit_branch_changes_the_output(encoder, text_fusion):
    model = make_model(encoder, text_fusion=text_fusion)
    if text_fusion:
        perturb_fusion(model)
    lr = lr_batch(1, 16, 24)
    prompt = encoder.encode(["a red bird"])
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.inference_mode():
        reference = model(lr, prompt).image
        residual = (reference - bicubic).abs().mean()
        # Its blocks re-initialised: the ViT's content, not just its presence, reaches the image.
        config: CLIPSRConfig = model.config  # type: ignore[assignment]
        torch.manual_seed(123)
        model.clip_vit.resblocks = torch.nn.ModuleList(
            ResidualAttentionBlock(config.vit_width, config.vit_heads, config.vit_mlp_ratio).eval()
            for _ in range(config.vit_layers)
        )
        reinit = model(lr, prompt).image
        # Its contribution zeroed.
        model.clip_vit.to_features.weight.zero_()
        model.clip_vit.to_features.bias.zero_()
        zeroed = model(lr, prompt).image
    # Float noise is ~1e-7; the untrained network's whole residual over bicubic is ~0.1.
    assert (reference - reinit).abs().mean() > max(1e-3, 0.02 * residual)
    assert (reference - zeroed).abs().mean() > max(1e-3, 0.05 * residual)
    assert residual > 1e-3


def test_load_clip_vit_copies_the_encoder_blocks_and_freezes_them(encoder):
    model = make_model(encoder)
    visual = encoder.clip.visual
    lr, prompt = lr_batch(1, 16, 16), encoder.encode(["a red bird"])
    with torch.inference_mode():
        before = model(lr, prompt).image
    copied = model.load_clip_vit_(encoder)
    stage = model.clip_vit
    assert len(stage.resblocks) == 1
    for mine, theirs in zip(stage.resblocks, visual.transformer.resblocks):
        theirs_state = theirs.state_dict()
        for name, value in mine.state_dict().items():
            assert torch.equal(value, theirs_state[name]), name
        assert all(not p.requires_grad for p in mine.parameters())
    # Same function, not only the same numbers: open_clip's block and ours agree on tokens.
    tokens = torch.randn(3, 17, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(stage.resblocks[0](tokens), visual.transformer.resblocks[0](tokens))
    # textsr-tiny's 4x4 patch grid equals the tiny preset's window: positions load too.
    assert torch.equal(stage.positional_embedding, visual.positional_embedding)
    assert torch.equal(stage.class_embedding, visual.class_embedding)
    assert torch.equal(stage.ln_pre.weight, visual.ln_pre.weight)
    assert {"positional_embedding", "resblocks.0.attn.in_proj_weight"} <= set(copied)
    # Trainable pieces stay trainable: patch embedding, output projection, fusion.
    assert stage.patch_embed.weight.requires_grad and stage.to_features.weight.requires_grad
    assert all(p.requires_grad for p in model.fusion_parameters())
    with torch.inference_mode():
        after = model(lr, prompt).image
    assert not torch.allclose(before, after)
    # Training still reaches the trainable parameters through the frozen ViT.
    model.train()
    model(lr, prompt).image.square().mean().backward()
    assert stage.resblocks[0].attn.in_proj_weight.grad is None
    assert stage.patch_embed.weight.grad is not None and stage.patch_embed.weight.grad.abs().sum() > 0


def test_load_clip_vit_refuses_a_mismatch(encoder):
    wide = make_model(encoder, vit_width=64, vit_heads=2)
    with pytest.raises(ValueError, match="width 32 and 2 heads"):
        wide.load_clip_vit_(encoder)
    more_heads = make_model(encoder, vit_heads=4)
    with pytest.raises(ValueError, match="heads"):
        more_heads.load_clip_vit_(encoder)
    deeper = make_model(encoder, vit_layers=2)
    with pytest.raises(ValueError, match="1 blocks"):
        deeper.load_clip_vit_(encoder)
    quick = make_model(encoder, vit_activation="quick_gelu")
    with pytest.raises(ValueError, match="activation"):
        quick.load_clip_vit_(encoder)
    # Nothing was copied or frozen by the refused calls.
    assert all(p.requires_grad for p in wide.parameters())


@pytest.mark.parametrize("scale", [16])
def test_output_on_an_aligned_crop_equals_the_full_image_interior(encoder, scale):
    """The contract test checks locality at x2 and x8; this adds x16, the 8-pixel
    alignment and that the window attention needs the whole margin."""
    model = make_model(encoder, scale)
    perturb_fusion(model)
    info = model.tiling_info()
    assert info.exact and info.alignment == 8 and info.receptive_field >= info.alignment
    rf, align = info.receptive_field, info.alignment
    full = lr_batch(1, 61, 75, seed=3)
    y0, x0 = align, 2 * align
    height, width = 2 * rf + 11, 2 * rf + 16
    crop = full[:, :, y0 : y0 + height, x0 : x0 + width]
    prompt = encoder.encode(["a red bird"])
    with torch.inference_mode():
        out_full = model(full, prompt)
        out_crop = model(crop, prompt)
    s = scale
    interior_crop = out_crop.image[:, :, s * rf : s * (height - rf), s * rf : s * (width - rf)]
    interior_full = out_full.image[:, :, s * (y0 + rf) : s * (y0 + height - rf), s * (x0 + rf) : s * (x0 + width - rf)]
    torch.testing.assert_close(interior_crop, interior_full, atol=1e-5, rtol=0)
    for name, heatmap in out_crop.attention.items():
        torch.testing.assert_close(
            heatmap[:, :, rf : height - rf, rf : width - rf],
            out_full.attention[name][:, :, y0 + rf : y0 + height - rf, x0 + rf : x0 + width - rf],
            atol=1e-5,
            rtol=0,
        )
    # The margin is needed: the window attention reaches well beyond the convolutions.
    near_edge_crop = out_crop.image[:, :, s * 2 : s * 4, s * 2 : s * 4]
    near_edge_full = out_full.image[:, :, s * (y0 + 2) : s * (y0 + 4), s * (x0 + 2) : s * (x0 + 4)]
    assert (near_edge_crop - near_edge_full).abs().max() > 1e-4


def test_a_pixel_influences_its_whole_attention_window(encoder):
    """The ViT mixes each window (beyond the convolutions' reach), and nothing beyond the receptive field."""
    model = make_model(encoder, 2)
    info = model.tiling_info()
    lr = lr_batch(1, 48, 48, seed=4)
    changed = lr.clone()
    changed[:, :, 16, 16] += 0.5  # top-left pixel of the window [16, 24)
    with torch.inference_mode():
        delta = (model(changed, encoder.encode("")).image - model(lr, encoder.encode("")).image).abs()
    lr_delta = delta.amax(dim=(0, 1)).view(48, 2, 48, 2).amax(dim=(1, 3))
    reach = lr_delta > 0
    rows = reach.any(1).nonzero().flatten()
    # Far side of the window (23) is reached plus the convs after the ViT.
    assert rows.max() >= 23 + 2
    assert rows.min() >= 16 - info.receptive_field and rows.max() <= 16 + info.receptive_field


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        CLIPSRConfig.from_preset("tiny", vit_width=30, vit_heads=4)
    with pytest.raises(ValueError, match="prompt tokens"):
        CLIPSRConfig.from_preset("tiny", n_prompts=3)
