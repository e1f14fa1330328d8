"""The contract every method in the method table keeps (spandrel-style), run over all of them.

A new method passes this file before anything else: its table entry resolves,
its model gives the right shapes and dtype at every scale, is as local as its
``tiling_info`` says (so the engine's tiles are exact), listens to the caption
(and ignores it without text fusion), rebuilds from its config and state dict,
and its criterion gives a finite loss with a gradient. Method-specific details
stay in ``test_model_<method>.py``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_textsr.methods import METHODS, MethodEntry, UnknownMethodError, default_preference, get_method, method_names
from napari_textsr.models import SUPPORTED_SCALES, TextSRModel, available_methods, create_model, model_from_config
from napari_textsr.models.base import ModelConfig
from napari_textsr.training.losses import LossWeights, SRCriterion, build_criterion, default_loss_weights

CAPTIONS = ["a red bird on a branch", "vertical stripes on a grey wall"]
METHOD_NAMES = method_names()


def make_model(method: str, encoder, scale: int = 4, seed: int = 0, **overrides) -> TextSRModel:
    torch.manual_seed(seed)
    return create_model(method, scale, "tiny", prompt_dim=encoder.embed_dim, **overrides).eval()


def perturb_fusion(model: TextSRModel, seed: int = 1, std: float = 0.3) -> None:
    """Random init can leave the text path near zero; push it so the caption visibly matters."""
    generator = torch.Generator().manual_seed(seed)
    params = model.fusion_parameters()
    assert params, "a text-fused model names its fusion modules with FUSION_MODULE_PREFIXES"
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator) * std)


def lr_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the table
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_table_entry_resolves(method):
    entry = get_method(method)
    assert isinstance(entry, MethodEntry) and entry.name == method
    model_class = entry.model_class()
    assert issubclass(model_class, TextSRModel) and model_class.method == method
    assert issubclass(entry.config_class(), ModelConfig)
    assert {"tiny", "default"} <= set(entry.presets())
    weights = default_loss_weights(method)
    assert isinstance(weights, entry.loss_weights_class()) and isinstance(weights, LossWeights)
    assert weights.method == method
    assert issubclass(entry.criterion_class(), SRCriterion)
    assert entry.title and entry.description.startswith(entry.title)


def test_the_rest_is_derived_from_the_table():
    from napari_textsr.cli import build_parser
    from napari_textsr.napari.model_store import method_title

    assert available_methods() == list(METHODS) == list(METHOD_NAMES) == ["tgsr", "clipsr", "pdn"]
    train = build_parser(full=True)._subparsers._group_actions[0].choices["train"]
    method_option = next(a for a in train._actions if "--method" in a.option_strings)
    assert tuple(method_option.choices) == METHOD_NAMES
    assert [method_title(m) for m in METHOD_NAMES] == ["TGSR", "CLIP-SR", "PDN"]
    assert method_title("custom") == "custom"
    assert default_preference(4) == default_preference(None) == ("pdn", "tgsr", "clipsr")
    # PDN first at every scale: the bundled PDNs are the realistic-family models (README, "Bundled models")
    assert default_preference(8) == default_preference(16) == ("pdn", "tgsr", "clipsr")
    with pytest.raises(UnknownMethodError, match=r"unknown method 'esrgan'; choose from \['tgsr', 'clipsr', 'pdn'\]"):
        create_model("esrgan")
    with pytest.raises(ValueError, match="unknown method"):
        default_loss_weights("esrgan")


# --------------------------------------------------------------------------- the model
@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_shapes_and_dtype(method, scale, tiny_encoder):
    model = make_model(method, tiny_encoder, scale)
    h, w = 11, 17  # odd, non-square
    with torch.inference_mode():
        out = model(lr_batch(2, h, w), tiny_encoder.encode(CAPTIONS))
    assert out.image.shape == (2, 3, h * scale, w * scale)
    assert out.image.dtype == torch.float32 and torch.isfinite(out.image).all()
    assert out.attention, "every method shows where the caption acted"
    for name, amap in out.attention.items():
        assert isinstance(name, str) and name
        assert amap.ndim == 4 and amap.shape[:2] == (2, 1), name
        assert torch.isfinite(amap).all() and (amap >= 0).all(), name
    info = model.tiling_info()
    assert info.receptive_field >= 0 and info.alignment >= 1 and info.min_size >= 1


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_empty_caption_is_the_unconditional_prompt(method, tiny_encoder):
    model = make_model(method, tiny_encoder, 2)
    with torch.inference_mode():
        out = model(lr_batch(1, 9, 14), tiny_encoder.encode([""]))
    assert out.image.shape == (1, 3, 18, 28) and torch.isfinite(out.image).all()
    assert all(torch.isfinite(m).all() for m in out.attention.values())


@pytest.mark.parametrize("scale", [2, 8])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_crop_equals_full_image_beyond_the_receptive_field(method, scale, tiny_encoder):
    """What makes the engine's tiling exact: the model is as local as ``tiling_info`` says."""
    model = make_model(method, tiny_encoder, scale)
    perturb_fusion(model)
    info = model.tiling_info()
    assert info.exact  # the tiny presets tile exactly
    rf, align = info.receptive_field, info.alignment
    y0, x0 = align, 2 * align  # crop origins on the alignment grid
    height, width = 2 * rf + 9, 2 * rf + 12
    full = lr_batch(1, y0 + height + 5, x0 + width + 3, seed=3)
    crop = full[:, :, y0 : y0 + height, x0 : x0 + width]
    prompt = tiny_encoder.encode(CAPTIONS[0])
    with torch.inference_mode():
        out_full, out_crop = model(full, prompt), model(crop, prompt)
    s = scale
    interior_crop = out_crop.image[..., s * rf : s * (height - rf), s * rf : s * (width - rf)]
    interior_full = out_full.image[..., s * (y0 + rf) : s * (y0 + height - rf), s * (x0 + rf) : s * (x0 + width - rf)]
    assert interior_crop.numel() > 0
    torch.testing.assert_close(interior_crop, interior_full, atol=1e-5, rtol=0)
    assert out_crop.attention.keys() == out_full.attention.keys()
    for name, amap in out_crop.attention.items():  # maps at LR or HR resolution: f = 1 or scale
        f = amap.shape[-2] // height
        assert f >= 1 and amap.shape[-2:] == (f * height, f * width), name
        torch.testing.assert_close(
            amap[..., f * rf : f * (height - rf), f * rf : f * (width - rf)],
            out_full.attention[name][
                ..., f * (y0 + rf) : f * (y0 + height - rf), f * (x0 + rf) : f * (x0 + width - rf)
            ],
            atol=1e-5,
            rtol=0,
        )
    # Not vacuous: at the crop's own border the two differ.
    border_full = out_full.image[..., s * y0 : s * (y0 + height), s * x0 : s * (x0 + 1)]
    assert (out_crop.image[..., :, :s] - border_full).abs().max() > 1e-4


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_caption_changes_the_output(method, tiny_encoder):
    model = make_model(method, tiny_encoder)
    perturb_fusion(model)
    lr = lr_batch(1, 16, 20)
    with torch.inference_mode():
        a = model(lr, tiny_encoder.encode(CAPTIONS[0])).image
        a_again = model(lr, tiny_encoder.encode(CAPTIONS[0])).image
        b = model(lr, tiny_encoder.encode(CAPTIONS[1])).image
    assert torch.equal(a, a_again)  # eval is deterministic
    assert (a - b).abs().mean() > 1e-3


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_without_text_fusion_the_caption_is_ignored(method, tiny_encoder):
    model = make_model(method, tiny_encoder, text_fusion=False)
    assert model.fusion_parameters() == []
    lr = lr_batch(1, 12, 15)
    with torch.inference_mode():
        a = model(lr, tiny_encoder.encode(CAPTIONS[0]))
        b = model(lr, tiny_encoder.encode(""))
    assert torch.equal(a.image, b.image) and a.attention == {}


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_config_and_state_dict_round_trip(method, tiny_encoder):
    model = make_model(method, tiny_encoder, 4, seed=5)
    perturb_fusion(model)
    rebuilt = model_from_config(method, model.config.to_dict())
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    lr, prompt = lr_batch(1, 10, 13, seed=6), tiny_encoder.encode(CAPTIONS[1])
    with torch.inference_mode():
        assert torch.equal(rebuilt(lr, prompt).image, model(lr, prompt).image)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_criterion_gives_a_finite_loss_with_a_gradient(method, tiny_encoder):
    scale = 2
    model = make_model(method, tiny_encoder, scale).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # terms switched off for the random encoder / missing VGG weights
        criterion = build_criterion(default_loss_weights(method), tiny_encoder, scale)
    assert isinstance(criterion, get_method(method).criterion_class())
    captions = CAPTIONS
    prompt = tiny_encoder.encode(captions)
    lr = lr_batch(2, 12, 12, seed=7)
    hr = torch.rand(2, 3, 12 * scale, 12 * scale, generator=torch.Generator().manual_seed(8))
    criterion.prepare(model)
    loss, terms = criterion.generator_loss(model(lr, prompt), hr, prompt, captions)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0 and terms
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_build_criterion_refuses_weights_of_another_class(tiny_encoder):
    class Impostor(LossWeights):
        method = "pdn"

    with pytest.raises(ValueError, match="no criterion for Impostor"):
        build_criterion(Impostor(), tiny_encoder, 2)
