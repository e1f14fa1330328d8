"""TGSR (napari_textsr.models.tgsr) specifics: per-word attention and aux outputs at every
scale, both fusion merges, the text-free baseline's backbone, conditioning augmentation,
receptive-field bound. The contract every method keeps is in test_model_contract.py."""

from __future__ import annotations

import pytest
import torch

from napari_textsr.models import create_model
from napari_textsr.models.tgsr import TGSR, TGSRConfig, unique_names
from napari_textsr.prompts import PromptEncoder

CAPTIONS = ["two DAPI-stained nuclei, two in mitosis", "a white van"]
# One map per whole word: CLIP's BPE splits "dapi", "nuclei" and "mitosis"
# into two tokens each; "two" repeats.
FIRST_CAPTION_NAMES = [
    "two", "dapi", "-", "stained", "nuclei", ",", "two (2)", "in", "mitosis", "<sentence>",
]  # fmt: skip


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    return PromptEncoder.from_spec("textsr-tiny:none")


def make_model(encoder: PromptEncoder, scale: int, seed: int = 0, **overrides) -> TGSR:
    torch.manual_seed(seed)
    model = create_model("tgsr", scale, "tiny", prompt_dim=encoder.embed_dim, **overrides)
    assert isinstance(model, TGSR)
    return model.eval()


def perturb_fusion(model: TGSR, seed: int = 1, std: float = 0.5) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.fusion_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)


def lr_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_presets_validation_and_size(encoder):
    model = make_model(encoder, 4)
    assert set(TGSRConfig.PRESETS) >= {"tiny", "small", "default", "paper"}
    with pytest.raises(ValueError):
        TGSRConfig(fusion_merge="sum")
    tiny_params = sum(p.numel() for p in model.parameters())
    assert 1_000 < tiny_params < 10_000


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_every_scale_shapes_attention_and_aux(encoder, scale):
    model = make_model(encoder, scale)
    prompt = encoder.encode(CAPTIONS)
    h, w = 11, 7  # odd, non-square
    with torch.inference_mode():
        out = model(lr_batch(2, h, w), prompt)
    H, W = scale * h, scale * w
    assert out.image.shape == (2, 3, H, W)
    assert torch.isfinite(out.image).all()
    assert out.aux["coarse"].shape == (2, 3, H, W)
    assert torch.isfinite(out.aux["coarse"]).all()

    tokens = prompt.tokens.shape[1]
    word_attention = out.aux["word_attention"]
    assert word_attention.shape == (2, tokens, H, W)
    # Softmax over the real tokens; padded tokens of the shorter caption get exactly 0.
    assert torch.allclose(word_attention.sum(1), torch.ones(2, H, W), atol=1e-5)
    padded = ~prompt.mask[1]
    assert padded.any()
    assert torch.all(word_attention[1, padded] == 0)
    assert torch.all(word_attention[1, ~padded] > 0)

    assert list(out.attention) == FIRST_CAPTION_NAMES
    words = prompt.whole_words(0)
    assert sum(len(positions) > 1 for _, positions in words) == 3
    for (name, amap), (_, positions) in zip(out.attention.items(), words):
        assert amap.shape == (2, 1, H, W), name
        torch.testing.assert_close(amap[:, 0], word_attention[:, positions].sum(1))
    # The words share each pixel's attention.
    torch.testing.assert_close(sum(out.attention.values())[:, 0], torch.ones(2, H, W))

    assert out.aux["ca_mu"].shape == (2, model.config.ca_dim)
    assert out.aux["ca_logvar"].shape == (2, model.config.ca_dim)


def test_unique_names():
    assert unique_names(["i", "x", "i", "i", ""]) == ["i", "x", "i (2)", "i (3)", "?"]


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_fusion_parameters_and_caption_dependence_of_each_merge(encoder, merge):
    model = make_model(encoder, 4, fusion_merge=merge)
    names = [n for n, _ in model.named_parameters() if any(p is _ for p in model.fusion_parameters())]
    assert any(n.startswith("tams.") for n in names)
    assert any(n.startswith("text_ca.") for n in names)
    perturb_fusion(model)
    lr = lr_batch(1, 12, 10)
    with torch.inference_mode():
        a = model(lr, encoder.encode(CAPTIONS[0])).image
        a_again = model(lr, encoder.encode(CAPTIONS[0])).image
        b = model(lr, encoder.encode(CAPTIONS[1])).image
    assert torch.equal(a, a_again)  # eval is deterministic (CA returns its mean)
    assert (a - b).abs().mean() > 1e-2


def test_without_text_fusion_caption_is_ignored(encoder):
    model = make_model(encoder, 4, text_fusion=False)
    assert model.fusion_parameters() == []
    assert not any(name.startswith(("tams", "text_")) for name, _ in model.named_modules() if name)
    lr = lr_batch(1, 9, 13)
    with torch.inference_mode():
        a = model(lr, encoder.encode(CAPTIONS[0]))
        b = model(lr, encoder.encode(CAPTIONS[1]))
    assert torch.equal(a.image, b.image)
    assert a.attention == {}
    assert set(a.aux) == {"coarse"} and a.aux["coarse"].shape == (1, 3, 36, 52)
    fused = make_model(encoder, 4)
    # Same backbone: every baseline parameter exists in the fused model (the
    # "concat" merge widens convs, "add" keeps every shape).
    fused_shapes = {n: p.shape for n, p in fused.named_parameters()}
    for name, p in model.named_parameters():
        assert fused_shapes[name] == p.shape


def test_conditioning_augmentation_samples_only_in_training(encoder):
    model = make_model(encoder, 2)
    lr = lr_batch(1, 8, 8)
    prompt = encoder.encode(CAPTIONS[0])
    model.train()
    with torch.no_grad():
        first = model(lr, prompt).image
        second = model(lr, prompt).image
    assert not torch.equal(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(lr, prompt).image, model(lr, prompt).image)


@pytest.mark.parametrize("scale,merge", [(4, "concat")])
def test_crop_equals_full_away_from_border(encoder, scale, merge):
    """The contract test checks locality with the default ("add") merge; this
    checks the "concat" merge and TGSR's per-word attention stack."""
    model = make_model(encoder, scale, fusion_merge=merge)
    perturb_fusion(model)
    rf = model.tiling_info().receptive_field
    assert model.tiling_info().exact
    prompt = encoder.encode(CAPTIONS[0])
    full_lr = lr_batch(1, 2 * rf + 14, 2 * rf + 12)
    y0, x0, ch, cw = 3, 5, 2 * rf + 7, 2 * rf + 6
    crop_lr = full_lr[:, :, y0 : y0 + ch, x0 : x0 + cw]
    with torch.inference_mode():
        full = model(full_lr, prompt)
        crop = model(crop_lr, prompt)
    s = scale

    def core_of_full(t: torch.Tensor) -> torch.Tensor:
        return t[..., s * (y0 + rf) : s * (y0 + ch - rf), s * (x0 + rf) : s * (x0 + cw - rf)]

    def core_of_crop(t: torch.Tensor) -> torch.Tensor:
        return t[..., s * rf : s * (ch - rf), s * rf : s * (cw - rf)]

    assert core_of_crop(crop.image).numel() > 0
    torch.testing.assert_close(core_of_crop(crop.image), core_of_full(full.image), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        core_of_crop(crop.aux["word_attention"]), core_of_full(full.aux["word_attention"]), atol=1e-5, rtol=0
    )
    # Not vacuous: at the crop's own border the two do differ.
    border_full = full.image[..., s * y0 : s * (y0 + ch), s * x0 : s * (x0 + 1)]
    assert (crop.image[..., :, :s] - border_full).abs().max() > 1e-4


def test_receptive_field_bounds_gradient_support(encoder):
    """No LR pixel farther than receptive_field influences an output pixel."""
    scale = 8
    model = make_model(encoder, scale)
    perturb_fusion(model)
    rf = model.tiling_info().receptive_field
    n = 2 * rf + 9
    lr = lr_batch(1, n, n).requires_grad_(True)
    centre = n // 2
    out = model(lr, encoder.encode(CAPTIONS[0])).image
    out[..., scale * centre : scale * (centre + 1), scale * centre : scale * (centre + 1)].sum().backward()
    support = (lr.grad.abs().sum((0, 1)) > 0).nonzero() - centre
    assert support.abs().max() <= rf
    assert support.abs().max() >= 3  # the gradient does reach across a few pixels


def test_empty_caption(encoder):
    model = make_model(encoder, 8)
    prompt = encoder.encode("")
    with torch.inference_mode():
        out = model(lr_batch(1, 5, 6), prompt)
    assert out.image.shape == (1, 3, 40, 48)
    assert torch.isfinite(out.image).all()
    assert list(out.attention) == ["<sentence>"]
    assert torch.allclose(out.attention["<sentence>"], torch.ones(1, 1, 40, 48))


@pytest.mark.parametrize("residual", [False, True])
def test_tam_chunked_inference_equals_autograd_path(residual):
    """CPU inference attends in pixel chunks; it must equal the training path."""
    from napari_textsr.models.tgsr import TextAttentionModule

    torch.manual_seed(0)
    tam = TextAttentionModule(6, 16, value_projection=residual)
    feature = torch.rand(2, 6, 150, 131).contiguous(memory_format=torch.channels_last)  # > one chunk
    words = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    context, attention = tam(feature, words, mask, residual=residual)
    assert context.requires_grad
    with torch.no_grad():
        context_chunked, attention_chunked = tam(feature, words, mask, residual=residual)
    torch.testing.assert_close(context_chunked, context, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(attention_chunked, attention, atol=1e-6, rtol=1e-6)
    assert torch.all(attention_chunked[1, 2:] == 0)
