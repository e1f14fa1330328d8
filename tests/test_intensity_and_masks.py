"""Issue 10 rows 5, 9, 10, 13, 14, 15 (engine side) and issue 9's clipping: values, not shapes."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_textsr import inference
from napari_textsr.inference import Upscaler
from napari_textsr.intensity import FLOAT_HEADROOM, compute_mappings
from napari_textsr.models import ModelConfig, SROutput, TextSRModel, TilingInfo


class Bicubic(TextSRModel):
    """Test double: bicubic upsampling times ``gain`` (a gain > 1 predicts peaks brighter than the input)."""

    method: ClassVar[str] = "bicubic-gain"

    def __init__(self, config: ModelConfig, gain: float = 1.0) -> None:
        super().__init__(config)
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.gain = gain

    def forward(self, lr, prompt):
        image = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False) * self.gain
        return SROutput(image=image, attention={"mean": lr.mean(1, keepdim=True)})

    def tiling_info(self) -> TilingInfo:
        return TilingInfo(receptive_field=2, min_size=1, bytes_per_lr_pixel=100)


def _upscaler(encoder, scale: int = 2, gain: float = 1.0) -> Upscaler:
    return Upscaler(Bicubic(ModelConfig(scale=scale, prompt_dim=encoder.embed_dim), gain), encoder)


def _beads() -> np.ndarray:
    image = np.zeros((64, 64), np.uint16)
    image[10, 12] = image[40, 50] = image[30, 20] = 3000
    return image


# --------------------------------------------------------------------------- row 9
def test_row9_sparse_beads_fall_back_to_min_max():
    colour, _ = compute_mappings(_beads(), (), rgb=False)
    assert colour.mode == "minmax" and (colour.low, colour.high) == (0.0, 3000.0)
    assert colour.to_unit(_beads()).max() == pytest.approx(1.0)  # not 3000x


def test_row9_uint16_and_the_same_float_image_give_the_same_output(tiny_encoder):
    upscaler = _upscaler(tiny_encoder)
    as_uint16 = upscaler.upscale(_beads(), "beads", attention=False).image
    as_float = upscaler.upscale(_beads().astype(np.float32), "beads", attention=False).image
    assert as_float.max() > 2000  # the beads came through
    np.testing.assert_allclose(as_uint16, np.clip(np.rint(as_float), 0, 65535), atol=1)


# --------------------------------------------------------------------------- issue 9: no clip to the input's range
def test_output_of_a_sub_pixel_peak_may_exceed_the_input_maximum(tiny_encoder):
    image = np.full((32, 32), 100, np.uint16)
    image[16, 16] = 4147
    plain = _upscaler(tiny_encoder, gain=1.0).upscale(image, "a bright bead", attention=False).image
    brighter = _upscaler(tiny_encoder, gain=1.5).upscale(image, "a bright bead", attention=False).image
    # A model that predicts the peak 1.5x brighter than bicubic does: the output keeps it,
    # above the input maximum (in-range background 100 + 1.5 x the bicubic peak's height).
    assert plain.max() < 4147 < brighter.max()
    assert brighter.max() == pytest.approx(100 + 1.5 * (float(plain.max()) - 100), abs=1.5)


def test_float_output_headroom_is_documented_and_applied(tiny_encoder):
    image = np.full((16, 16), 0.5, np.float32)
    image[8, 8] = 1.0
    result = _upscaler(tiny_encoder, gain=50.0).upscale(image, "", attention=False)
    assert result.image.max() == pytest.approx(1.0 + FLOAT_HEADROOM * 0.5)  # input max + headroom x range
    assert result.image.min() >= 0  # a non-negative input stays non-negative


# --------------------------------------------------------------------------- row 10
def test_row10_uint32_offset_keeps_all_levels(tiny_encoder):
    image = (np.uint32(4_000_000_000) + (np.arange(64 * 64) % 100).astype(np.uint32)).reshape(64, 64)
    colour, _ = compute_mappings(image, (), rgb=False)
    assert len(np.unique(colour.from_unit(colour.to_unit(image)))) == 100  # all 100 levels survive
    np.testing.assert_array_equal(colour.from_unit(colour.to_unit(image)), image)
    # Through the engine (bicubic of a constant-per-block image keeps the levels at block centres).
    blocks = np.kron((np.arange(64) % 100).reshape(8, 8), np.ones((8, 8))).astype(np.uint32) + np.uint32(4_000_000_000)
    out = _upscaler(tiny_encoder).upscale(blocks, "", attention=False).image
    assert out.dtype == np.uint32
    centres = out[8::16, 8::16]
    np.testing.assert_array_equal(centres, blocks[4::8, 4::8])


def test_row10_int64_near_its_limits_does_not_wrap(tiny_encoder):
    info = np.iinfo(np.int64)
    image = np.linspace(info.max * 0.999, info.min * 0.999, 4096).reshape(64, 64).astype(np.int64)
    image[0, :8] = info.max
    image[-1, -8:] = info.min
    out = _upscaler(tiny_encoder).upscale(image, "", attention=False).image
    assert out.dtype == np.int64
    # Bicubic overshoot near the limits is clipped below them, never wrapped to the other sign.
    assert (out[:8, :16] > 0).all() and (out[-8:, -16:] < 0).all()
    assert out.max() == 2**63 - 1024  # the largest float64 below int64's limit
    wrapped = np.sign(out[::2, ::2].astype(np.float64)) != np.sign(image.astype(np.float64))
    assert wrapped.sum() <= 64  # only at the zero crossing, where the sign may legitimately flip


# --------------------------------------------------------------------------- row 5
@pytest.mark.parametrize("rgb", [False, True])
def test_row5_nan_mask_is_upsampled_and_the_rest_upscaled(tiny_encoder, rgb):
    rng = np.random.default_rng(5)
    image = rng.random((24, 28, 3) if rgb else (24, 28)).astype(np.float32) + 1.0
    image[5:9, 6:12] = np.nan
    result = _upscaler(tiny_encoder, scale=4).upscale(image, "", rgb=rgb, tile=10, attention=False)
    out = result.image
    expected_mask = np.repeat(np.repeat(np.isnan(image), 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(np.isnan(out), expected_mask)  # exactly the nearest-neighbour mask
    assert np.isfinite(out[~expected_mask]).all()
    # Away from the mask the output is the plain upscale of the valid values.
    clean = _upscaler(tiny_encoder, scale=4).upscale(np.nan_to_num(image, nan=1.5), "", rgb=rgb, attention=False).image
    np.testing.assert_allclose(out[60:, 60:], clean[60:, 60:], rtol=1e-5)


# --------------------------------------------------------------------------- row 13
def test_row13_long_caption_warns_and_provenance_records_the_encoded_text(tiny_encoder):
    caption = "the red cat sat on the mat and " * 15 + "final words here"
    fit = tiny_encoder.fit_caption(caption)
    assert fit.truncated and fit.tokens_used == 75 and fit.tokens_total == 123
    with pytest.warns(UserWarning, match=r"the caption has \d+ tokens but the text encoder reads 75"):
        result = _upscaler(tiny_encoder).upscale(np.zeros((8, 8), np.uint8), caption, attention=False)
    record = result.provenance()
    assert record["caption"] == fit.encoded and record["caption_given"] == caption
    assert record["caption"].startswith("the red cat sat on the mat and the red") and "final" not in record["caption"]
    # A caption that fits: no warning, recorded as given.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = _upscaler(tiny_encoder).upscale(np.zeros((8, 8), np.uint8), "two nuclei", attention=False)
    assert short.provenance()["caption"] == "two nuclei" and "caption_given" not in short.provenance()


# --------------------------------------------------------------------------- rows 14, 15
def test_row14_attention_maps_above_the_limit_come_on_the_input_grid(tiny_encoder, monkeypatch):
    monkeypatch.setattr(inference, "MAX_ATTENTION_OUTPUT_PIXELS", 32 * 32)
    image = np.zeros((20, 24), np.uint8)
    with pytest.warns(UserWarning, match="attention maps on the input grid"):
        result = _upscaler(tiny_encoder, scale=4).upscale(image, "x")
    assert result.attention_scale == 1 and result.attention["mean"].shape == (20, 24)
    small = _upscaler(tiny_encoder, scale=4).upscale(np.zeros((4, 6), np.uint8), "x")
    assert small.attention_scale == 4 and small.attention["mean"].shape == (16, 24)


def test_row15_output_guard_counts_maps_and_the_tile(tiny_encoder, monkeypatch):
    upscaler = _upscaler(tiny_encoder, scale=4)
    image = np.zeros((64, 64), np.uint8)  # output 64 KiB; 8 assumed maps 2 MiB
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 2**20)
    with pytest.raises(ValueError, match="attention maps.*needs 0.00.* GB but only 0.00105 GB"):
        upscaler.upscale(image, "", tile=16)
    # Without maps the output and one tile fit.
    assert upscaler.upscale(image, "", tile=16, attention=False).image.shape == (256, 256)
    # With out= the output is not counted; the tile still is.
    sink = np.zeros((256, 256), np.uint8)
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 2**18)
    assert upscaler.upscale(image, "", tile=8, attention=False, out=sink).image is sink
    with pytest.raises(ValueError, match="one tile's working memory"):
        upscaler.upscale(image, "", tile=64, attention=False, out=sink)


def test_out_must_match_shape_and_dtype(tiny_encoder):
    with pytest.raises(ValueError, match=r"out must have shape \(16, 16\) and dtype uint8"):
        _upscaler(tiny_encoder).upscale(np.zeros((8, 8), np.uint8), "", out=np.zeros((16, 16), np.uint16))
