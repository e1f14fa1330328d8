"""Region captions and the text-effect map: exact interiors, seamless borders, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_textsr.inference import Upscaler
from napari_textsr.models import available_methods, create_model
from napari_textsr.regions import (
    RegionCaptions,
    blend_regions,
    effect_statistics,
    feather_weights,
    plan_regions,
)

SCALE = 4
CAPTIONS = {1: "red stripes", 2: "green nuclei"}
GLOBAL = "a brick wall"


def _upscaler(encoder, method: str = "pdn", text_fusion: bool = True) -> Upscaler:
    torch.manual_seed(0)
    model = create_model(method, SCALE, "tiny", prompt_dim=encoder.embed_dim, text_fusion=text_fusion)
    # Untrained fusion weights are small, so captions would barely matter;
    # make them matter, deterministically, as training would.
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.fusion_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 2.0)
    return Upscaler(model, encoder)


@pytest.fixture(scope="module")
def pdn(tiny_encoder) -> Upscaler:
    return _upscaler(tiny_encoder)


def _image(shape=(40, 48), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _labels(shape=(40, 48)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    labels[4:18, 5:20] = 1
    labels[22:38, 25:45] = 2
    return labels


def _interior(labels: np.ndarray, label: int, feather: float, scale: int = SCALE) -> np.ndarray:
    """Output pixels of ``label`` farther than the feather band from every border."""
    weight = feather_weights(labels == label, scale, feather)
    return weight == 1.0


def _exterior(labels: np.ndarray, feather: float, scale: int = SCALE) -> np.ndarray:
    return feather_weights(labels > 0, scale, feather) == 0.0


# --------------------------------------------------------------------------- engine
@pytest.mark.parametrize("method", available_methods())
def test_each_region_holds_its_captions_pixels_and_the_rest_the_global_ones(tiny_encoder, method):
    upscaler = _upscaler(tiny_encoder, method)
    image, labels = _image(), _labels()
    regions = RegionCaptions(labels, CAPTIONS)
    alone = {c: upscaler.upscale(image, c, tile=0, attention=False).image for c in (GLOBAL, *CAPTIONS.values())}
    # The captions really change this model's output (else the test could not fail).
    assert np.abs(alone[CAPTIONS[1]] - alone[CAPTIONS[2]]).mean() > 0.01
    assert np.abs(alone[CAPTIONS[1]] - alone[GLOBAL]).mean() > 0.01

    result = upscaler.upscale(image, GLOBAL, regions=regions, tile=0)
    exact = upscaler.model.tiling_info().exact
    atol = 1e-5 if exact else 0.05
    for label, caption in CAPTIONS.items():
        inside = _interior(labels, label, regions.feather)
        assert inside.sum() > 100
        np.testing.assert_allclose(result.image[inside], alone[caption][inside], atol=atol)
    outside = _exterior(labels, regions.feather)
    np.testing.assert_allclose(result.image[outside], alone[GLOBAL][outside], atol=atol)
    crops = [r["crop"] for r in result.regions["regions"]]
    if method == "pdn":  # box + 2 px feather reach + 10 px receptive field, clipped: not the whole image
        assert crops == [[0, 30, 0, 32], [10, 40, 13, 48]]


def _smooth_image(shape=(40, 48), seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(_image(shape, seed).astype(np.float64), 2.0)
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.float32)


def _seam_violations(result, region, background, band, feather) -> int:
    """Neighbour steps in the band larger than the outputs' own steps plus one ramp pixel's share of their gap."""
    violations = 0
    gap = np.abs(region - background)
    for axis in (0, 1):
        step = np.abs(np.diff(result, axis=axis))
        own = np.maximum(np.abs(np.diff(region, axis=axis)), np.abs(np.diff(background, axis=axis)))
        pairs = (slice(None, -1), slice(1, None))
        first = tuple(pairs[0] if a == axis else slice(None) for a in (0, 1))
        second = tuple(pairs[1] if a == axis else slice(None) for a in (0, 1))
        ramp = np.maximum(gap[first], gap[second])
        in_band = band[first] | band[second]
        allowed = own + ramp * (1.5 / feather) + 1e-6
        violations += int(np.sum(step[in_band] > allowed[in_band]))
    return violations


def test_seam_band_is_a_convex_mix_without_jumps(pdn):
    image, labels = _smooth_image(), _labels()
    regions = RegionCaptions(labels, {1: CAPTIONS[1]}, feather=8)
    region = pdn.upscale(image, CAPTIONS[1], tile=0, attention=False).image
    background = pdn.upscale(image, GLOBAL, tile=0, attention=False).image
    result = pdn.upscale(image, GLOBAL, regions=regions, tile=0, attention=False).image

    weight = feather_weights(labels == 1, SCALE, regions.feather)
    band = (weight > 0) & (weight < 1)
    assert band.sum() > 200
    low, high = np.minimum(region, background), np.maximum(region, background)
    assert np.all(result[band] >= low[band] - 1e-6) and np.all(result[band] <= high[band] + 1e-6)
    np.testing.assert_allclose(result[band], (weight * region + (1 - weight) * background)[band], atol=1e-6)
    assert _seam_violations(result, region, background, band, regions.feather) == 0
    # The same check catches the seam of a hard edge.
    hard_regions = RegionCaptions(labels, {1: CAPTIONS[1]}, feather=0)
    hard = pdn.upscale(image, GLOBAL, regions=hard_regions, tile=0, attention=False).image
    assert _seam_violations(hard, region, background, band, regions.feather) > 10


def test_regions_tiled_equal_regions_untiled_for_stacks_and_integers(pdn):
    stack = (np.stack([_image(seed=1), _image(seed=2)]) * 60000).astype(np.uint16)
    regions = RegionCaptions(_labels(), CAPTIONS)
    whole = pdn.upscale(stack, GLOBAL, regions=regions, tile=0)
    tiled = pdn.upscale(stack, GLOBAL, regions=regions, tile=24)
    assert whole.image.dtype == np.uint16 and whole.image.shape == (2, 160, 192)
    assert np.abs(whole.image.astype(int) - tiled.image.astype(int)).max() <= 1
    # Each slice: interiors equal the region caption alone, integer for integer.
    alone = pdn.upscale(stack, CAPTIONS[2], tile=0, attention=False).image
    inside = _interior(_labels(), 2, regions.feather)
    for z in range(2):
        assert np.abs(whole.image[z][inside].astype(int) - alone[z][inside].astype(int)).max() <= 1


def test_rgb_regions_and_consistency(pdn):
    rgb = (np.stack([_image(seed=s) for s in (3, 4, 5)], axis=-1) * 255).astype(np.uint8)
    regions = RegionCaptions(_labels(), CAPTIONS)
    result = pdn.upscale(rgb, GLOBAL, regions=regions, tile=0, consistency=True)
    alone = pdn.upscale(rgb, CAPTIONS[1], tile=0, consistency=True, attention=False)
    inside = _interior(_labels(), 1, regions.feather)
    assert result.image.shape == (160, 192, 3)
    assert np.abs(result.image[inside].astype(int) - alone.image[inside].astype(int)).max() <= 1
    np.testing.assert_allclose(result.consistency_map[inside], alone.consistency_map[inside], atol=1e-5)
    records = result.regions["regions"]
    assert [r["label"] for r in records] == [1, 2]
    assert records[0]["consistency_error"] == pytest.approx(alone.consistency_error, rel=1e-3)


def test_one_attention_set_per_region_and_provenance(pdn):
    labels = _labels()
    result = pdn.upscale(_image(), GLOBAL, regions=RegionCaptions(labels, CAPTIONS), tile=0)
    plain = [n for n in result.attention if not n.startswith("region ")]
    assert plain
    for label in CAPTIONS:
        names = [n for n in result.attention if n.startswith(f"region {label}: ")]
        assert [n.split(": ", 1)[1] for n in names] == plain
        amap = result.attention[names[0]]
        assert amap.shape == (160, 192)
        y0, y1, x0, x1 = (v * SCALE for v in plan_regions(RegionCaptions(labels, CAPTIONS), SCALE, 10)[label - 1].core)
        outside = np.ones(amap.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert np.all(amap[outside] == 0) and amap[~outside].max() > 0
    record = result.provenance()["regions"]
    assert record["feather"] == 8.0 and len(record["labels_sha256"]) == 64
    assert [(r["label"], r["caption"], r["pixels"], r["bbox"]) for r in record["regions"]] == [
        (1, CAPTIONS[1], 14 * 15, [4, 18, 5, 20]),
        (2, CAPTIONS[2], 16 * 20, [22, 38, 25, 45]),
    ]


def test_progress_counts_every_run(pdn):
    events = []
    pdn.upscale(
        _image(), GLOBAL, regions=RegionCaptions(_labels(), CAPTIONS), text_effect=True, tile=16, progress=events.append
    )
    totals = {e.total for e in events}
    assert len(totals) == 1 and [e.done for e in events] == list(range(1, events[0].total + 1))
    # 3x3 tiles of 16 for the image, 2x2 and 2x3 for the region crops (30x32, 30x35), 3x3 without caption.
    assert events[0].total == 9 + 4 + 6 + 9
    assert any(e.message.startswith("region 2: ") for e in events)
    assert events[-1].message.startswith("without caption: ")


def test_polygons_and_masks_make_label_images():
    square = np.array([[2, 2], [2, 7], [7, 7], [7, 2]], float)  # pixel centres 2..7
    regions = RegionCaptions.from_polygons((10, 12), [square, square + [0, 4]], ["a", "b"])
    assert regions.captions == {1: "a", 2: "b"}
    expected = np.zeros((10, 12), np.int32)
    expected[2:8, 2:8] = 1
    expected[2:8, 6:12] = 2  # the later polygon wins where they overlap
    np.testing.assert_array_equal(regions.labels, expected)
    masks = RegionCaptions.from_masks([expected == 1, expected == 2], ["a", "b"])
    np.testing.assert_array_equal(masks.labels, expected)


def test_bad_regions_raise(pdn):
    with pytest.raises(ValueError, match="2-D"):
        RegionCaptions(np.zeros((2, 4, 4), int), {1: "a"})
    with pytest.raises(ValueError, match="integers"):
        RegionCaptions(np.zeros((4, 4), float), {1: "a"})
    with pytest.raises(ValueError, match="positive"):
        RegionCaptions(np.zeros((4, 4), int), {0: "a"})
    with pytest.raises(ValueError, match="feather"):
        RegionCaptions(np.zeros((4, 4), int), {1: "a"}, feather=-1)
    with pytest.raises(ValueError, match="input grid"):
        pdn.upscale(_image(), "", regions=RegionCaptions(np.ones((10, 10), int), {1: "a"}))
    with pytest.raises(TypeError, match="RegionCaptions"):
        pdn.upscale(_image(), "", regions=np.ones((40, 48), int))
    with pytest.warns(UserWarning, match="no pixels"):
        result = pdn.upscale(_image(), GLOBAL, regions=RegionCaptions(_labels(), {1: "a", 9: "b"}), tile=0)
    assert [r["label"] for r in result.regions["regions"]] == [1]


def test_feather_weights_ramp_and_blend_exactness():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 2:6] = True
    w = feather_weights(mask, 4, 4.0)
    assert w.shape == (24, 32)
    # Along row 12 (inside), columns 8..: the mask starts at output column 8.
    np.testing.assert_allclose(w[12, 4:14], [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1])
    np.testing.assert_array_equal(feather_weights(mask, 2, 0.0), np.kron(mask, np.ones((2, 2))))
    base = np.full((4, 4), 7.0, np.float32)
    values = np.arange(16, dtype=np.float32).reshape(4, 4) / 3
    out = blend_regions(base, [((slice(None), slice(None)), values, np.ones((4, 4), np.float32))], np.float32)
    np.testing.assert_array_equal(out, values)
    half = blend_regions(
        base.astype(np.uint8),
        [((slice(0, 2), slice(0, 4)), np.full((2, 4), 10, np.uint8), np.full((2, 4), 0.5, np.float32))],
        np.uint8,
    )
    np.testing.assert_array_equal(half, [[8] * 4, [8] * 4, [7] * 4, [7] * 4])  # 8.5 rounds to even


# --------------------------------------------------------------------------- text effect
def test_text_effect_is_zero_without_text_fusion(tiny_encoder):
    baseline = _upscaler(tiny_encoder, "pdn", text_fusion=False)
    result = baseline.upscale(_image(), "green nuclei", text_effect=True, tile=0)
    assert result.text_effect.shape == result.image.shape
    assert np.all(result.text_effect == 0)
    assert result.provenance()["text_effect"] == {"mean_abs": 0.0, "p99_abs": 0.0, "max_abs": 0.0}


def test_text_effect_is_the_signed_difference_where_captions_differ(pdn):
    image, labels = _image(), _labels()
    uncaptioned = pdn.upscale(image, "", tile=0, attention=False).image
    captioned = pdn.upscale(image, "green nuclei", tile=0, attention=False).image
    result = pdn.upscale(image, "green nuclei", text_effect=True, tile=0)
    np.testing.assert_allclose(result.text_effect, captioned - uncaptioned, atol=1e-6)
    stats = result.text_effect_stats
    assert stats["mean_abs"] == pytest.approx(float(np.abs(captioned - uncaptioned).mean()), rel=1e-4)
    assert 0 < stats["mean_abs"] < stats["p99_abs"] <= stats["max_abs"]
    # Only region 1 captioned, no global caption: the effect lives in region 1's window.
    local = pdn.upscale(image, "", regions=RegionCaptions(labels, {1: "red stripes"}), text_effect=True, tile=0)
    outside = _exterior(labels == 1, 8.0)
    assert np.all(local.text_effect[outside] == 0)
    assert np.abs(local.text_effect[_interior(labels, 1, 8.0)]).mean() > 0.01
    # Nothing captioned: nothing to compare, exactly zero, no extra run.
    assert np.all(pdn.upscale(image, "", text_effect=True, tile=0).text_effect == 0)


def test_effect_statistics_values():
    stats = effect_statistics(np.array([-3.0, 1.0, 0.0, 2.0]))
    assert stats["mean_abs"] == 1.5 and stats["max_abs"] == 3.0
    assert stats["p99_abs"] == pytest.approx(np.percentile([3, 1, 0, 2], 99))
