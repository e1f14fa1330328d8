"""Training data: captioned folders, napari arrays, splits, patch sampling, degradations, synthetic scenes."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from napari_textsr.synthetic import (
    PATTERNS,
    SHAPES,
    SYNTHETIC_KINDS,
    glyph_scene,
    shapes_scene,
    synthetic_dataset,
    synthetic_scene,
    texture_scene,
)
from napari_textsr.training.data import (
    CaptionedImage,
    DataError,
    PatchSampler,
    captioned_images_from_arrays,
    load_captioned_folder,
    load_data_source,
    split_train_val,
    validation_pair,
)
from napari_textsr.training.degradations import Degradation


def _write_folder(path, rows, images):
    path.mkdir(parents=True, exist_ok=True)
    for name, array in images.items():
        if name.endswith(".tif"):
            import tifffile

            tifffile.imwrite(path / name, array)
        else:
            Image.fromarray(array).save(path / name)
    lines = ["file,caption"] + [f'{f},"{c}"' for f, c in rows]
    (path / "captions.csv").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------- folders
def test_folder_with_several_captions_per_file(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey16 = (rng.integers(0, 4096, (16, 12))).astype(np.uint16)
    _write_folder(
        tmp_path / "set",
        [("b.png", "a red thing"), ("a.tif", "grey cells"), ("b.png", "a detailed, long caption with a comma")],
        {"b.png": rgb, "a.tif": grey16},
    )
    items = load_captioned_folder(tmp_path / "set")
    assert [i.name for i in items] == ["b.png", "a.tif"]  # order of first appearance in the CSV
    assert items[0].captions == ["a red thing", "a detailed, long caption with a comma"]
    assert items[1].captions == ["grey cells"]
    np.testing.assert_allclose(items[0].image, rgb / 255.0, atol=1e-6)
    assert items[1].image.shape == (16, 12, 3) and items[1].image.dtype == np.float32
    assert np.array_equal(items[1].image[..., 0], items[1].image[..., 2])  # grey replicated
    assert items[1].image.min() == 0.0 and items[1].image.max() == 1.0  # uint16: percentile-normalised


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_captioned_folder(tmp_path / "nothing")
    (tmp_path / "nocsv").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "nocsv" / "x.png")
    with pytest.raises(DataError, match=r"no captions.csv \(1 images found there\)"):
        load_captioned_folder(tmp_path / "nocsv")
    _write_folder(
        tmp_path / "missing", [("here.png", "ok"), ("gone.png", "lost")], {"here.png": np.zeros((8, 8), np.uint8)}
    )
    with pytest.raises(DataError, match="not in .*gone.png"):
        load_captioned_folder(tmp_path / "missing")
    _write_folder(tmp_path / "broken", [("bad.png", "junk")], {})
    (tmp_path / "broken" / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="cannot be read.*bad.png"):
        load_captioned_folder(tmp_path / "broken")
    (tmp_path / "header").mkdir()
    (tmp_path / "header" / "captions.csv").write_text("name,text\nx.png,hello\n")
    with pytest.raises(DataError, match="header 'file,caption'"):
        load_captioned_folder(tmp_path / "header")


def test_shared_training_folder_loads():
    items = load_captioned_folder("/work/shared/data/train/t91")
    assert len(items) == 91
    assert all(len(i.captions) == 2 and all(i.captions) for i in items)


# ------------------------------------------------------------------ arrays
def test_arrays_from_napari_layers_of_any_dtype():
    grey16 = np.linspace(0, 60000, 40 * 50).reshape(40, 50).astype(np.uint16)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    floats = np.random.default_rng(0).normal(5, 3, (9, 9)).astype(np.float64)
    items = captioned_images_from_arrays(
        [grey16, rgba, floats], ["grey", ["red", "a red square"], "noise"], names=["g", "r", "f"]
    )
    assert [i.name for i in items] == ["g", "r", "f"]
    for item in items:
        assert item.image.dtype == np.float32 and item.image.shape[2] == 3
        assert 0.0 <= item.image.min() and item.image.max() <= 1.0
    assert items[0].image.shape == (40, 50, 3)
    assert items[0].image[0, 0, 0] == 0.0 and items[0].image[-1, -1, 0] == 1.0
    np.testing.assert_allclose(items[1].image[..., 0], 200 / 255, atol=1e-7)  # uint8: /255, alpha dropped
    assert items[1].captions == ["red", "a red square"]
    assert items[2].image.max() == 1.0 and items[2].image.min() == 0.0


def test_stack_is_split_into_named_slices():
    stack = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    items = captioned_images_from_arrays(stack, "cells", names=["z"], rgb=False)
    assert [i.name for i in items] == ["z[0]", "z[1]"]
    assert items[0].image.max() < items[1].image.min()  # one normalisation over the whole stack


def test_array_errors():
    with pytest.raises(DataError, match="dtype bool"):
        captioned_images_from_arrays([np.zeros((8, 8), bool)], "x")
    with pytest.raises(DataError, match="2 images but 1 captions"):
        captioned_images_from_arrays([np.zeros((8, 8))] * 2, ["x"])


# ------------------------------------------------------------------- split
def _named(names):
    return [CaptionedImage(np.zeros((4, 4, 3), np.float32), ["c"], n) for n in names]


def test_split_is_deterministic_by_name():
    items = _named([f"img{i}.png" for i in range(400)])
    train, val = split_train_val(items, 0.1, seed=0)
    train2, val2 = split_train_val(list(reversed(items)), 0.1, seed=0)
    assert {i.name for i in val} == {i.name for i in val2}
    assert 20 <= len(val) <= 60 and len(train) + len(val) == 400
    # Adding data never moves an existing item across the split.
    _, val_more = split_train_val(items + _named([f"new{i}" for i in range(50)]), 0.1, seed=0)
    assert {i.name for i in val} == {i.name for i in val_more if i.name.startswith("img")}
    _, val_other = split_train_val(items, 0.1, seed=1)
    assert {i.name for i in val} != {i.name for i in val_other}


def test_split_never_leaves_train_empty():
    train, val = split_train_val(_named(["only"]), 0.5)
    assert len(train) == 1 and not val
    train, val = split_train_val(_named(["a", "b"]), 0.01)
    assert len(train) == 1 and len(val) == 1


# --------------------------------------------------------------- sampling
def _find(patch: np.ndarray, image: np.ndarray, step: int) -> tuple[int, int] | None:
    h, w = patch.shape[:2]
    for y in range(0, image.shape[0] - h + 1, step):
        for x in range(0, image.shape[1] - w + 1, step):
            if np.array_equal(image[y : y + h, x : x + w], patch):
                return y, x
    return None


def test_patch_sampler_shapes_and_determinism():
    items = synthetic_dataset(4, seed=0, size=64)
    sampler = PatchSampler(items, Degradation(scale=4, noise_poisson_peak=200.0), lr_patch=8)
    a = sampler.batch(5, np.random.default_rng(7))
    b = sampler.batch(5, np.random.default_rng(7))
    c = sampler.batch(5, np.random.default_rng(8))
    assert a.lr.shape == (5, 3, 8, 8) and a.hr.shape == (5, 3, 32, 32)
    assert a.lr.dtype == torch.float32 and a.hr.dtype == torch.float32
    assert torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr) and a.captions == b.captions
    assert not torch.equal(a.hr, c.hr)
    assert all(cap in dict((i.name, i.captions) for i in items)[n] for cap, n in zip(a.captions, a.names))


def test_patch_lr_equals_whole_image_degradation():
    """The margin makes a patch's LR what the whole image's LR is there (no border effects)."""
    image = np.random.default_rng(0).random((96, 96, 3)).astype(np.float32)
    item = CaptionedImage(image, ["noise"], "n", augment=False)
    degradation = Degradation(scale=4, blur_sigma=1.3)
    full_lr = degradation(torch.from_numpy(image.transpose(2, 0, 1))[None])[0].numpy().transpose(1, 2, 0)
    batch = PatchSampler([item], degradation, lr_patch=6).batch(6, np.random.default_rng(3))
    for lr, hr in zip(batch.lr, batch.hr):
        y, x = _find(hr.numpy().transpose(1, 2, 0), image, step=4)
        np.testing.assert_allclose(
            lr.numpy().transpose(1, 2, 0), full_lr[y // 4 : y // 4 + 6, x // 4 : x // 4 + 6], atol=1e-5
        )


def test_augmentation_respects_items_that_forbid_it():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3)).astype(np.float32)
    fixed = PatchSampler([CaptionedImage(image, ["a", "b"], "x", augment=False)], Degradation(2), lr_patch=8)
    free = PatchSampler([CaptionedImage(image, ["a", "b"], "x", augment=True)], Degradation(2), lr_patch=8)
    fixed_batch = fixed.batch(16, np.random.default_rng(1))
    free_batch = free.batch(40, np.random.default_rng(1))
    found = [_find(hr.numpy().transpose(1, 2, 0), image, 2) is not None for hr in fixed_batch.hr]
    assert all(found)  # never flipped or rotated
    found = [_find(hr.numpy().transpose(1, 2, 0), image, 2) is not None for hr in free_batch.hr]
    assert 0 < sum(found) < 20  # identity about 1 in 8, other transforms otherwise
    assert set(fixed_batch.captions) == {"a", "b"}  # one of the item's captions per sample


def test_sampler_size_errors():
    small = CaptionedImage(np.zeros((20, 20, 3), np.float32), ["s"], "small")
    big = CaptionedImage(np.zeros((64, 64, 3), np.float32), ["b"], "big")
    with pytest.raises(DataError, match="at least 64x64"):
        PatchSampler([small], Degradation(8), lr_patch=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = PatchSampler([small, big], Degradation(8), lr_patch=8)
    assert sampler.skipped == ["small"] and caught


def test_validation_pair_is_repeatable():
    item = synthetic_scene("shapes", np.random.default_rng(0), size=70)
    degradation = Degradation(scale=8, noise_gaussian_sigma=0.05)
    lr, hr = validation_pair(item, degradation)
    lr2, _ = validation_pair(item, degradation)
    assert hr.shape == (1, 3, 64, 64) and lr.shape == (1, 3, 8, 8)
    assert torch.equal(lr, lr2)


# ----------------------------------------------------------- degradations
def test_degradation_shapes_and_constant_image():
    hr = torch.full((2, 3, 64, 48), 0.37)
    for degradation in (Degradation(8), Degradation(4, blur_sigma=1.3), Degradation(2)):
        lr = degradation(hr)
        assert lr.shape == (2, 3, 64 // degradation.scale, 48 // degradation.scale)
        assert torch.allclose(lr, torch.full_like(lr, 0.37), atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple"):
        Degradation(8)(torch.zeros(1, 3, 60, 64))


def test_bicubic_is_antialiased():
    """A pixel-level checkerboard has no content below the LR Nyquist: antialiased bicubic gives flat grey."""
    y, x = np.mgrid[0:64, 0:64]
    hr = torch.from_numpy(((x + y) % 2).astype(np.float32))[None, None].expand(1, 3, 64, 64)
    lr = Degradation(2)(hr)[..., 4:-4, 4:-4]
    assert torch.allclose(lr, torch.full_like(lr, 0.5), atol=1e-5)


def test_blur_and_noise_change_statistics():
    hr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    plain, blurred = Degradation(2)(hr), Degradation(2, blur_sigma=2.0)(hr)
    assert blurred.std() < 0.6 * plain.std()
    assert abs(float(blurred.mean() - plain.mean())) < 0.01
    flat = torch.full((1, 3, 256, 256), 0.5)
    poisson = Degradation(2, noise_poisson_peak=100.0)(flat, generator=torch.Generator().manual_seed(0))
    assert abs(float(poisson.mean()) - 0.5) < 0.01
    assert abs(float(poisson.std()) - np.sqrt(0.5 * 100) / 100) < 0.005  # shot noise: sqrt(peak * x) / peak
    gauss = Degradation(2, noise_gaussian_sigma=0.05)(flat, generator=torch.Generator().manual_seed(0))
    assert abs(float(gauss.std()) - 0.05) < 0.003
    again = Degradation(2, noise_gaussian_sigma=0.05)(flat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gauss, again)


def test_degradation_dict_round_trip():
    degradation = Degradation(4, blur_sigma=1.3, noise_poisson_peak=50.0, noise_gaussian_sigma=0.01)
    values = degradation.to_dict()
    assert Degradation.from_dict(values) == degradation
    assert Degradation.from_dict({"scale": 8}) == Degradation(8)
    with pytest.raises(ValueError, match="unknown degradation setting"):
        Degradation.from_dict({"scale": 8, "jpeg": 50})


# -------------------------------------------------------------- synthetic
def test_synthetic_scenes_are_deterministic_and_valid():
    for kind in SYNTHETIC_KINDS:
        a = synthetic_scene(kind, np.random.default_rng(5), size=96)
        b = synthetic_scene(kind, np.random.default_rng(5), size=96)
        c = synthetic_scene(kind, np.random.default_rng(6), size=96)
        assert np.array_equal(a.image, b.image) and a.captions == b.captions
        assert not np.array_equal(a.image, c.image)
        assert a.image.shape == (96, 96, 3) and a.image.dtype == np.float32
        assert 0.0 <= a.image.min() and a.image.max() <= 1.0 and a.image.std() > 0.02
        assert len(a.captions) == 2 and all(len(cap.split()) >= 2 for cap in a.captions)


def test_synthetic_dataset_cycles_kinds_and_is_a_prefix():
    items = synthetic_dataset(8, seed=3, size=64)
    assert [i.name.split("-")[3] for i in items] == list(SYNTHETIC_KINDS) * 2
    assert len({i.name for i in items}) == 8
    first = synthetic_dataset(3, seed=3, size=64)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(first, items))
    means = [float(i.image.mean()) for i in items[:4]]
    assert len({round(m, 4) for m in means}) == 4  # kinds differ
    assert [i.name for i in load_data_source("synthetic:8:3:64")] == [i.name for i in items]
    with pytest.raises(DataError, match="synthetic:N"):
        load_data_source("synthetic:x")
    with pytest.raises(ValueError, match="unknown synthetic"):
        synthetic_dataset(2, 0, kinds=["clouds"])


def _lr(image: np.ndarray, scale: int = 8) -> np.ndarray:
    return Degradation(scale)(torch.from_numpy(image.transpose(2, 0, 1))[None])[0].numpy()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_shapes_are_indistinguishable_at_x8_but_not_at_full_resolution():
    """The design the text-guidance acceptance test relies on: the caption's
    shape word is what x8 destroys, while the HR images differ a lot."""
    for seed in (0, 1):
        scenes = {s: shapes_scene(np.random.default_rng(seed), 256, shape=s) for s in SHAPES}
        assert all(s + ("es" if s == "cross" else "s") in scenes[s].captions[0] for s in SHAPES)
        for a, b in itertools.combinations(SHAPES, 2):
            hr_diff = _rms(scenes[a].image - scenes[b].image)
            lr_diff = _rms(_lr(scenes[a].image) - _lr(scenes[b].image))
            assert hr_diff > 0.03
            assert lr_diff < 0.35 * hr_diff, (a, b, lr_diff, hr_diff)
        # Same layout and mass: position and size survive, only the identity is lost.
        circle, square = _lr(scenes["circle"].image), _lr(scenes["square"].image)
        assert _rms(circle - square) < 0.2 * _rms(scenes["circle"].image - scenes["square"].image)


def test_stripe_direction_is_invisible_at_x8():
    for seed in (0, 1):
        scenes = {p: texture_scene(np.random.default_rng(seed), 256, pattern=p) for p in PATTERNS}
        for a, b in itertools.combinations(PATTERNS, 2):
            hr_diff = _rms(scenes[a].image - scenes[b].image)
            assert hr_diff > 0.1
            assert _rms(_lr(scenes[a].image) - _lr(scenes[b].image)) < 0.1 * hr_diff
        assert not scenes["vertical"].augment  # a rotation would turn vertical into horizontal


def test_texture_phase_follows_the_image_grid():
    from napari_textsr.synthetic import _pattern

    # Any crop on the x8 grid sees the same phase, so LR + caption fix the HR panel.
    for pattern in PATTERNS:
        whole = _pattern(pattern, 64, 64)
        assert np.array_equal(_pattern(pattern, 16, 24, 8, 16), whole[8:24, 16:40])
        assert np.array_equal(_pattern(pattern, 16, 24, 3, 5), whole[3:19, 5:29])
        assert np.array_equal(whole[8:24, 16:40], whole[:16, :24])
    scene = texture_scene(np.random.default_rng(3), 256, pattern="vertical")
    image = scene.image
    # Columns 0-3 of every period take the first colour, 4-7 the second, wherever the panel is.
    panel = np.abs(image[:, 0::8] - image[:, 4::8]).sum(axis=-1) > 0.05
    assert panel.mean() > 0.1
    assert np.allclose(image[:, 1::8][panel], image[:, 0::8][panel])


def test_caption_alternatives_swap_only_the_destroyed_identity():
    from napari_textsr.synthetic import caption_alternatives

    family, captions, index = caption_alternatives("red circles on black")
    assert family == "shape" and index == 0
    assert captions == [
        "red circles on black",
        "red squares on black",
        "red triangles on black",
        "red crosses on black",
    ]
    family, captions, index = caption_alternatives("rising diagonal stripes in cyan and black")
    assert family == "pattern" and captions[index] == "rising diagonal stripes in cyan and black"
    assert "vertical stripes in cyan and black" in captions and len(set(captions)) == len(PATTERNS)
    for kind in ("shapes", "textures", "microscopy"):
        item = synthetic_scene(kind, np.random.default_rng(2), 96)
        found = caption_alternatives(item.captions[0])
        assert found is not None and found[1][found[2]] == item.captions[0]
    assert caption_alternatives('the text "AB"') is None


def test_glyph_strings_share_a_layout():
    a = glyph_scene(np.random.default_rng(0), 128, text="AB")
    b = glyph_scene(np.random.default_rng(0), 128, text="XY")
    assert a.captions[0] == 'the text "AB"' and "A and B" in a.captions[1]
    ink = lambda img: np.abs(img - img[0, 0]).sum(axis=2) > 0  # noqa: E731
    rows_a, rows_b = ink(a.image).any(axis=1), ink(b.image).any(axis=1)
    assert np.array_equal(rows_a, rows_b)  # monospaced font: same rows of text
    assert _rms(a.image - b.image) > 0.2
