"""The inference engine: layouts and dtypes round trip, exact tiling, consistency, cancel, loading."""

from __future__ import annotations

import json
import threading
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_textsr import inference, loading
from napari_textsr.checkpoints import TrainingRecord, save_checkpoint
from napari_textsr.consistency import BackProjection, downsample
from napari_textsr.inference import (
    UpscaleCancelled,
    UpscaleProgress,
    Upscaler,
    list_models,
    load_model,
)
from napari_textsr.intensity import compute_mappings, output_limits
from napari_textsr.models import (
    ModelConfig,
    SROutput,
    TextSRModel,
    TilingInfo,
    available_methods,
    create_model,
    get_model_class,
)
from napari_textsr.prompts import PromptEncoder
from napari_textsr.tiling import plan_tiles


@pytest.fixture(scope="module")
def encoder(tiny_encoder) -> PromptEncoder:
    return tiny_encoder  # conftest's textsr-tiny:none, built once per session


def _model(method: str, encoder: PromptEncoder, scale: int = 4, preset: str = "tiny", seed: int = 0) -> TextSRModel:
    torch.manual_seed(seed)
    return create_model(method, scale, preset, prompt_dim=encoder.embed_dim)


@pytest.fixture(scope="module")
def pdn(encoder) -> Upscaler:
    return Upscaler(_model("pdn", encoder), encoder)


def _smooth(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth random float32 data in [0, 1]; (..., Y, X), or (Y, X, 3|4) colour."""
    if len(shape) == 3 and shape[-1] in (3, 4):
        return np.stack([_smooth(shape[:2], seed + i, sigma) for i in range(shape[-1])], axis=-1)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random(shape).astype(np.float32)).reshape(-1, 1, *shape[-2:])
    k = torch.exp(-(torch.arange(-4, 5, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, 4, 4), mode="reflect"), k.view(1, 1, -1, 1))
    x = (x - x.min()) / (x.max() - x.min())
    return x.reshape(shape).numpy()


class BicubicModel(TextSRModel):
    """Test double: bicubic upsampling, one attention map; lets tests check the intensity round trip."""

    method: ClassVar[str] = "bicubic-double"

    def __init__(self, config: ModelConfig, min_size: int = 1) -> None:
        super().__init__(config)
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.min_size = min_size

    def forward(self, lr, prompt):
        image = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return SROutput(image=image, attention={"mean": lr.mean(1, keepdim=True)})

    def tiling_info(self) -> TilingInfo:
        return TilingInfo(receptive_field=2, min_size=self.min_size, bytes_per_lr_pixel=100)


def _bicubic_upscaler(encoder, scale: int = 2, min_size: int = 1) -> Upscaler:
    return Upscaler(BicubicModel(ModelConfig(scale=scale, prompt_dim=encoder.embed_dim), min_size), encoder)


def _methods() -> list[str]:
    methods = []
    for method in available_methods():
        try:
            get_model_class(method)
        except ModuleNotFoundError:  # another person's model not written yet
            continue
        methods.append(method)
    return methods


# --------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("method", _methods())
def test_tiled_equals_untiled(method, encoder):
    model = _model(method, encoder)
    upscaler = Upscaler(model, encoder)
    info = model.tiling_info()
    image = _smooth((72, 88), seed=1)
    tile = 32
    tiles = plan_tiles(72, 88, tile, info.receptive_field, info.alignment, info.min_size)
    assert len(tiles) > 1
    # At least one tile must see less than the whole image, or nothing is tested.
    assert any(t.padded_shape != (72, 88) for t in tiles)
    whole = upscaler.upscale(image, "a striped texture", tile=0)
    events = []
    tiled = upscaler.upscale(image, "a striped texture", tile=tile, progress=events.append)
    assert len(events) == len(tiles)
    assert whole.image.shape == tiled.image.shape == (72 * 4, 88 * 4)
    np.testing.assert_allclose(tiled.image, whole.image, atol=1e-4, rtol=0)
    assert whole.attention.keys() == tiled.attention.keys()
    assert whole.attention, "every method returns attention maps"
    for name, amap in whole.attention.items():
        assert amap.shape == (72 * 4, 88 * 4) and amap.dtype == np.float32
        np.testing.assert_allclose(tiled.attention[name], amap, atol=1e-4, rtol=0)


def test_self_ensemble_averages_eight_turns_and_mirrors_and_tiles_exactly(encoder):
    model = _model("pdn", encoder)
    plain, ensemble = Upscaler(model, encoder), Upscaler(model, encoder, self_ensemble=True)
    assert ensemble.description.self_ensemble and not plain.description.self_ensemble
    lr = torch.from_numpy(_smooth((3, 20, 28), seed=4))[None]
    prompt = encoder.encode("a striped texture")
    with torch.inference_mode():
        got = ensemble._predict(lr, prompt)
        outputs = []
        for turns in range(4):
            for mirror in (False, True):
                x = torch.rot90(lr, turns, (2, 3))
                out = model(x.flip(3) if mirror else x, prompt)
                outputs.append({k: torch.rot90(v.flip(3) if mirror else v, -turns, (2, 3)) for k, v in
                                [("image", out.image), *out.attention.items()]})  # fmt: skip
        single = model(lr, prompt)
    for key in outputs[0]:
        expected = torch.stack([o[key] for o in outputs]).mean(0)
        value = got.image if key == "image" else got.attention[key]
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)
    assert (got.image - single.image).abs().max() > 1e-3  # the eight runs do differ
    # Every run sees the same pixels, so tiles put together equal the whole image.
    image = _smooth((72, 88), seed=1)
    whole = ensemble.upscale(image, "a striped texture", tile=0)
    tiled = ensemble.upscale(image, "a striped texture", tile=32)
    np.testing.assert_allclose(tiled.image, whole.image, atol=1e-4, rtol=0)
    for name, amap in whole.attention.items():
        np.testing.assert_allclose(tiled.attention[name], amap, atol=1e-4, rtol=0)
    assert whole.provenance()["self_ensemble"] is True
    assert "self_ensemble" not in plain.upscale(image, "", tile=0).provenance()


@pytest.mark.parametrize("method", _methods())
def test_native_attention_grid_is_the_models_own_and_upsamples_to_the_output_maps(method, encoder):
    """attention_grid="native": PDN's and CLIP-SR's maps on the input grid (the output-grid maps are
    their bilinear upsampling), TGSR's on the output grid; tiling gives the same native maps."""
    model = _model(method, encoder)
    upscaler = Upscaler(model, encoder)
    image = _smooth((72, 88), seed=1)
    expected = {"pdn": 1, "clipsr": 1, "tgsr": 4}[method]  # where each model computes its maps
    output_grid = upscaler.upscale(image, "a striped texture", tile=0)
    native = upscaler.upscale(image, "a striped texture", tile=0, attention_grid="native")
    tiled = upscaler.upscale(image, "a striped texture", tile=32, attention_grid="native")
    assert output_grid.attention_scale == 4
    assert native.attention_scale == tiled.attention_scale == expected
    np.testing.assert_array_equal(native.image, output_grid.image)  # only the maps change
    assert native.attention.keys() == output_grid.attention.keys() == tiled.attention.keys()
    for name, amap in native.attention.items():
        assert amap.shape == (72 * expected, 88 * expected) and amap.dtype == np.float32
        np.testing.assert_allclose(tiled.attention[name], amap, atol=1e-4, rtol=0)
        up = F.interpolate(
            torch.from_numpy(amap)[None, None], size=(72 * 4, 88 * 4), mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(up[0, 0].numpy(), output_grid.attention[name], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attention_grid must be one of"):
        upscaler.upscale(image, "", attention_grid="input")


def test_tiled_consistency_equals_untiled(encoder):
    upscaler = Upscaler(_model("pdn", encoder), encoder, back_projection=BackProjection(iterations=3))
    image = _smooth((96, 96), seed=2)
    whole = upscaler.upscale(image, "nuclei", tile=0, consistency=True)
    events = []
    tiled = upscaler.upscale(image, "nuclei", tile=48, consistency=True, progress=events.append)
    assert tiled.tile == 48 and len(events) == 4
    np.testing.assert_allclose(tiled.image, whole.image, atol=1e-4, rtol=0)
    np.testing.assert_allclose(tiled.consistency_map, whole.consistency_map, atol=1e-4, rtol=0)
    assert tiled.consistency_error == pytest.approx(whole.consistency_error, rel=1e-5)


def test_automatic_tile_size_follows_memory_budget(encoder):
    model = _model("pdn", encoder)
    image = _smooth((120, 120), seed=3)
    tiled = Upscaler(model, encoder, tile_memory=30_000_000).upscale(image, "x")
    assert 0 < tiled.tile < 120
    whole = Upscaler(model, encoder, tile_memory=1 << 33).upscale(image, "x")
    assert whole.tile == 0  # one piece
    np.testing.assert_allclose(tiled.image, whole.image, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- dtypes and layouts
@pytest.mark.parametrize(
    "make, rgb, out_shape",
    [
        (lambda: (_smooth((40, 48)) * 255).astype(np.uint8), None, (80, 96)),
        (lambda: (_smooth((40, 48, 3)) * 255).astype(np.uint8), None, (80, 96, 3)),
        (lambda: (_smooth((2, 40, 48)) * 60000).astype(np.uint16), None, (2, 80, 96)),
        (lambda: (_smooth((3, 40, 48)) * 7.5 - 2.0).astype(np.float32), None, (3, 80, 96)),
        (lambda: (_smooth((40, 48)) * 1000 - 500).astype(np.int32), None, (80, 96)),
        (lambda: _smooth((40, 48)).astype(np.float16), None, (80, 96)),
        (lambda: _smooth((40, 48, 3)).astype(np.float64), True, (80, 96, 3)),
    ],
    ids=["uint8-grey", "uint8-rgb", "uint16-stack", "float32-zstack", "int32", "float16", "float64-rgb"],
)
def test_round_trip_dtype_shape_and_intensities(encoder, make, rgb, out_shape):
    image = make()
    upscaler = _bicubic_upscaler(encoder, scale=2)
    result = upscaler.upscale(image, "x", rgb=rgb, tile=16)
    assert result.image.dtype == image.dtype
    assert result.image.shape == out_shape
    out = result.image.astype(np.float64)
    # Clipped only to what the dtype holds (floats: the documented headroom), not to the input's range.
    low, high = output_limits(image.dtype, float(image.min()), float(image.max()))
    assert out.min() >= low and out.max() <= high
    # The model is plain bicubic, so averaging 2x2 output blocks must give the
    # input back in its own units: the normalisation was inverted exactly.
    is_rgb = out_shape[-1] == 3
    lead = image.shape[:-3] if is_rgb else image.shape[:-2]
    channels = (3,) if is_rgb else ()
    down = out.reshape(*lead, 40, 2, 48, 2, *channels).mean(axis=(len(lead) + 1, len(lead) + 3))
    span = float(image.max()) - float(image.min())
    assert np.abs(down - image.astype(np.float64)).mean() < 0.01 * span
    map_shape = out_shape[:-1] if is_rgb else out_shape
    assert result.attention["mean"].shape == map_shape
    assert result.attention["mean"].dtype == np.float32


def test_rgba_alpha_is_upscaled_bicubically(encoder):
    rgba = (_smooth((32, 40, 4), seed=4) * 255).astype(np.uint8)
    rgba[..., 3] = 0
    rgba[:, 20:, 3] = 255
    result = _bicubic_upscaler(encoder, scale=2).upscale(rgba, "x", tile=12)
    assert result.image.shape == (64, 80, 4) and result.image.dtype == np.uint8
    alpha = result.image[..., 3]
    assert (alpha[:, :36] == 0).all() and (alpha[:, 44:] == 255).all()
    assert 0 < alpha[:, 40].mean() < 255  # interpolated at the edge
    # Colour channels go through the model (here: bicubic), untouched by alpha.
    plain = _bicubic_upscaler(encoder, scale=2).upscale(np.ascontiguousarray(rgba[..., :3]), "x")
    np.testing.assert_array_equal(result.image[..., :3], plain.image)


def test_percentiles_are_exact_for_16_bit_and_shared_by_all_slices():
    rng = np.random.default_rng(5)
    stack = rng.integers(100, 4000, size=(3, 30, 20)).astype(np.uint16)
    colour, alpha = compute_mappings(stack, (3,), rgb=False, percentiles=(1.0, 99.8))
    assert alpha is None
    assert colour.low == pytest.approx(np.percentile(stack, 1.0))
    assert colour.high == pytest.approx(np.percentile(stack, 99.8))
    assert (colour.clip_min, colour.clip_max) == (0, 65535)  # the dtype's range, not the input's
    unit = colour.to_unit(stack)
    np.testing.assert_array_equal(colour.from_unit(unit), stack)


class LazyArray:
    """An array-like that records what is read from it (as dask or zarr would be read)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_lazy_arrays_are_read_tile_by_tile(pdn):
    stack = (_smooth((2, 64, 64), seed=15) * 4000).astype(np.uint16)
    lazy = LazyArray(stack)
    result = pdn.upscale(lazy, "x", tile=32)
    np.testing.assert_array_equal(result.image, pdn.upscale(stack, "x", tile=32).image)
    tile_reads = [
        key for key in lazy.reads if len(key) == 3 and isinstance(key[1], slice) and isinstance(key[2], slice)
    ]
    assert len(tile_reads) == 2 * 4  # slices x tiles, each a padded tile, never the whole slice
    assert all(key[2].stop - key[2].start < 64 for key in tile_reads)


# --------------------------------------------------------------------------- captions
def test_captions_change_the_output(encoder):
    model = _model("pdn", encoder)
    # Untrained fusion weights are small; make them matter, as training would.
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.fusion_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 2.0)
    upscaler = Upscaler(model, encoder)
    image = _smooth((32, 40), seed=8)
    results = upscaler.upscale_captions(image, ["red stripes", "green nuclei", "red stripes"], tile=0)
    a, b, again = (r.image for r in results)
    assert np.abs(a - b).mean() > 0.05 * a.std()
    np.testing.assert_array_equal(a, again)
    assert [r.caption for r in results] == ["red stripes", "green nuclei", "red stripes"]
    # A reference image prompt is another prompt again.
    ref = upscaler.upscale(image, "", reference=image[:, ::-1], tile=0).image
    assert np.abs(ref - a).mean() > 0.05 * a.std()


# --------------------------------------------------------------------------- progress and cancel
def test_progress_counts_tiles_over_all_slices(pdn):
    stack = _smooth((3, 48, 48), seed=9)
    events: list[UpscaleProgress] = []
    result = pdn.upscale(stack, "x", tile=24, progress=events.append)
    assert result.image.shape == (3, 192, 192)
    assert [e.done for e in events] == list(range(1, 13))
    assert {e.total for e in events} == {12} and {e.n_slices for e in events} == {3}
    assert [e.slice_index for e in events] == [0] * 4 + [1] * 4 + [2] * 4
    assert events[-1].fraction == 1.0 and "slice 3/3" in events[-1].message


def test_closing_the_generator_stops_between_tiles(pdn):
    image = _smooth((48, 48), seed=10)
    generator = pdn.iter_upscale(image, "x", tile=16)
    first = next(generator)
    assert (first.done, first.total) == (1, 9)
    next(generator)
    generator.close()
    with pytest.raises(StopIteration) as stop:
        next(generator)
    assert stop.value.value is None  # nothing partial comes back
    # Running to the end returns the result as StopIteration.value.
    generator = pdn.iter_upscale(image, "x", tile=16)
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as done:
            result = done.value
            break
    assert len(events) == 9 and result.image.shape == (192, 192)


def test_cancel_raises_and_returns_nothing(pdn):
    image = _smooth((48, 48), seed=11)
    stop = threading.Event()
    seen = []

    def progress(event):
        seen.append(event.done)
        if event.done == 2:
            stop.set()

    with pytest.raises(UpscaleCancelled):
        pdn.upscale(image, "x", tile=16, progress=progress, cancel=stop)
    assert seen == [1, 2]
    with pytest.raises(UpscaleCancelled):
        pdn.upscale(image, "x", tile=16, cancel=lambda: True, progress=seen.append)
    assert seen == [1, 2]  # cancelled before the first tile
    with pytest.raises(UpscaleCancelled):
        pdn.upscale_captions(image, ["a", "b"], tile=16, cancel=lambda: len(seen) >= 3, progress=seen.append)


# --------------------------------------------------------------------------- consistency
def test_consistency_makes_the_output_explain_the_input(pdn):
    image = _smooth((64, 72), seed=12)
    raw = pdn.upscale(image, "x", tile=0)
    fixed = pdn.upscale(image, "x", tile=0, consistency=True)
    assert raw.consistency_map is None and raw.consistency_error is None

    def lr_error(result):
        down = downsample(torch.from_numpy(result.image)[None, None], 4)[0, 0].numpy()
        return float(np.sqrt(np.mean((down - image) ** 2)))

    assert lr_error(fixed) < 0.05 * lr_error(raw)
    assert fixed.consistency_map.shape == (256, 288) and fixed.consistency_map.dtype == np.float32
    assert fixed.consistency_map.min() >= 0 and fixed.consistency_map.max() > 0
    # The error is the raw output's disagreement, in units of the normalisation range.
    span = np.percentile(image, 99.8) - np.percentile(image, 1.0)
    assert fixed.consistency_error == pytest.approx(lr_error(raw) / span, rel=0.05)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_value_errors(pdn, encoder, monkeypatch):
    cases = {
        "empty": (np.zeros((0, 10), np.uint8), {}),
        "at least 2x2": (np.zeros((1, 10), np.uint8), {}),
        "unsupported image dtype bool": (np.zeros((8, 8), bool), {}),
        "unsupported image dtype complex64": (np.zeros((8, 8), np.complex64), {}),
        "unsupported image dtype object": (np.zeros((8, 8), object), {}),
        "at least 2 dimensions": (np.zeros(10, np.uint8), {}),
        "rgb=True needs": (np.zeros((8, 8, 5), np.uint8), {"rgb": True}),
        "tile must be": (np.zeros((8, 8), np.uint8), {"tile": -3}),
        "no finite values": (np.full((8, 8), np.nan, np.float32), {}),
    }
    for expected, (image, kwargs) in cases.items():
        with pytest.raises(ValueError, match=expected):
            pdn.upscale(image, "x", **kwargs)
    with pytest.raises(ValueError, match="needs at least 6x6"):
        _bicubic_upscaler(encoder, min_size=6).upscale(np.zeros((5, 30), np.uint8), "x")
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 50_000_000)
    with pytest.raises(ValueError, match="in one piece needs about .* use tiling"):
        pdn.upscale(np.zeros((200, 200), np.uint8), "x", tile=0)
    with pytest.raises(ValueError, match="output .* needs .* GB"):
        pdn.upscale(np.zeros((2000, 2000), np.uint16), "x")


# --------------------------------------------------------------------------- loading
def test_default_without_bundled_models_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    assert list_models() == []
    with pytest.raises(ValueError, match="no bundled model for x4. No models are bundled .*random:"):
        load_model("default")
    with pytest.raises(ValueError, match="not a file and not a bundled model"):
        load_model("nonexistent-model")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.textsr.safetensors")
    with pytest.raises(ValueError, match="unknown method"):
        load_model("random:esrgan:4")
    with pytest.raises(ValueError, match="x4 model, but scale=2"):
        load_model("random:pdn:4:tiny", scale=2)


def test_checkpoint_round_trip_is_bit_identical(encoder, tmp_path, monkeypatch):
    model = _model("pdn", encoder, seed=3)
    with torch.no_grad():
        for p in model.fusion_parameters():
            p.add_(0.1)
    record = TrainingRecord(command="textsr train ...", data=["synthetic:64:0"], steps=10, validation={"psnr_y": 30.5})
    path = save_checkpoint(tmp_path / "nuclei-x4.textsr.safetensors", model, encoder, name="nuclei-x4", training=record)
    image = (_smooth((30, 34, 3), seed=13) * 255).astype(np.uint8)
    before = Upscaler(model, encoder).upscale(image, "nuclei", tile=0)
    loaded = load_model(path, device="cpu")
    after = loaded.upscale(image, "nuclei", tile=0)
    np.testing.assert_array_equal(after.image, before.image)
    for name in before.attention:
        np.testing.assert_array_equal(after.attention[name], before.attention[name])
    d = loaded.description
    assert (d.name, d.method, d.scale, d.trained, d.preset) == ("nuclei-x4", "pdn", 4, True, "tiny")
    assert d.training.validation == {"psnr_y": 30.5}
    json.dumps(d.to_dict())
    provenance = after.provenance()
    json.dumps(provenance)
    assert provenance["caption"] == "nuclei" and provenance["model"] == "nuclei-x4"

    # The same file as a bundled model: found by name and as the x4 default.
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    assert [(m.name, m.method, m.scale) for m in list_models()] == [("nuclei-x4", "pdn", 4)]
    np.testing.assert_array_equal(load_model("nuclei-x4").upscale(image, "nuclei", tile=0).image, before.image)
    assert load_model("default", scale=4).description.name == "nuclei-x4"
    with pytest.raises(ValueError, match=r"no bundled model for x2. Bundled models: nuclei-x4 \(pdn, x4\)"):
        load_model("default", scale=2)


def test_random_spec_describes_an_untrained_model():
    upscaler = load_model("random:pdn:2:tiny", device="cpu")
    d = upscaler.description
    assert (d.method, d.scale, d.preset, d.trained, d.encoder) == ("pdn", 2, "tiny", False, "textsr-tiny:none")
    assert "untrained" in d.description and d.parameters > 0 and d.tiling.receptive_field > 0
    assert upscaler.scale == 2
    # Same spec, same weights.
    image = (_smooth((16, 16), seed=14) * 255).astype(np.uint8)
    again = load_model("random:pdn:2:tiny", device="cpu")
    np.testing.assert_array_equal(upscaler.upscale(image).image, again.upscale(image).image)


def test_package_exports_engine_lazily():
    import napari_textsr

    assert napari_textsr.load_model is load_model
    assert napari_textsr.UpscaleCancelled is UpscaleCancelled
    assert callable(napari_textsr.list_models)


# --------------------------------------------------------------------------- blocks
def test_blocks_with_the_whole_images_mapping_put_together_equal_the_whole_upscale(pdn):
    # A dim left half and a bright right half: a block's own percentiles differ
    # from the whole image's, so only the whole image's mapping reproduces it.
    rng = np.random.default_rng(11)
    image = (300 + 2500 * _smooth((56, 72), seed=3)).astype(np.uint16)
    image[:, 36:] += 20000
    image += rng.integers(0, 50, size=image.shape, dtype=np.uint16)
    info = pdn.model.tiling_info()
    whole = pdn.upscale(image, "nuclei", tile=0, attention=False).image
    colour, alpha = compute_mappings(image, (), rgb=False)
    blocks = plan_tiles(56, 72, 24, info.receptive_field, info.alignment, info.min_size)
    assert len(blocks) == 9 and all(b.padded_shape != (56, 72) for b in blocks)
    assembled = np.zeros_like(whole)
    own_mapping_error = 0
    for b in blocks:
        raw = image[b.padded_slices()]
        out = pdn.upscale_block(raw, "nuclei", colour, tile=0)
        assert out.shape == (raw.shape[0] * 4, raw.shape[1] * 4) and out.dtype == np.uint16
        assembled[b.core_slices(4)] = out[b.core_in_padded(4)]
        alone = pdn.upscale(raw, "nuclei", tile=0, attention=False).image[b.core_in_padded(4)]
        own_mapping_error = max(own_mapping_error, int(np.abs(alone.astype(int) - whole[b.core_slices(4)]).max()))
    assert int(np.abs(assembled.astype(int) - whole).max()) <= 1  # uint16 rounding of float sums
    assert own_mapping_error > 100  # each block normalised by itself would not be the same image


def test_upscale_block_checks_its_mappings(pdn, encoder):
    grey = (_smooth((24, 24), seed=5) * 4000).astype(np.uint16)
    colour, _ = compute_mappings(grey, (), rgb=False)
    with pytest.raises(ValueError, match="mapping is for uint16, the block is float32"):
        pdn.upscale_block(grey.astype(np.float32), "x", colour)
    with pytest.raises(ValueError, match="alpha= is only for RGBA"):
        pdn.upscale_block(grey, "x", colour, alpha=colour)
    with pytest.raises(TypeError, match="IntensityMapping"):
        pdn.upscale_block(grey, "x", colour.to_dict())
    rgba = (_smooth((24, 24, 4), seed=6) * 255).astype(np.uint8)
    rgba_colour, rgba_alpha = compute_mappings(rgba, (), rgb=True)
    with pytest.raises(ValueError, match="RGBA block needs the whole image's alpha mapping"):
        pdn.upscale_block(rgba, "x", rgba_colour)
    bicubic = _bicubic_upscaler(encoder, scale=2)
    block = bicubic.upscale_block(rgba, "x", rgba_colour, alpha=rgba_alpha)
    np.testing.assert_array_equal(block, bicubic.upscale(rgba, "x", attention=False).image)
