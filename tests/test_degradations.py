"""The degradation family, named benchmark degradations and captions that describe them (issue 9)."""

import dataclasses

import numpy as np
import pytest
import torch

from napari_textsr.training.captions import (
    DEGRADATION_ONLY_TEMPLATES,
    HELD_OUT_TEMPLATE,
    TRAIN_VOCABULARY,
    CaptionPolicy,
    degradation_properties,
    describe_degradation,
    held_out_caption,
)
from napari_textsr.training.data import PatchSampler, captioned_images_from_arrays
from napari_textsr.training.degradations import (
    DEGRADATION_PRESETS,
    NAMED_DEGRADATIONS,
    RESIZE_KERNELS,
    Degradation,
    DegradationFamily,
    degradation_from_dict,
    gaussian_blur,
    named_degradation,
)


def _image(seed=0, size=64):
    rng = np.random.default_rng(seed)
    base = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    return torch.from_numpy(np.kron(base, np.ones((8, 8, 1), np.float32))).permute(2, 0, 1)[None].contiguous()


def test_family_draws_are_deterministic_and_cover_every_part():
    family = DegradationFamily.preset_family("realistic", 4)
    a = [family.draw(np.random.default_rng([3, i])) for i in range(300)]
    b = [family.draw(np.random.default_rng([3, i])) for i in range(300)]
    assert a == b
    assert {d.resize for d in a} == set(RESIZE_KERNELS)
    blurred = [d for d in a if d.blur_sigma > 0]
    assert 0.4 < len(blurred) / len(a) < 0.6  # p_blur 0.5
    assert any(d.blur_sigma_minor is not None for d in blurred) and all(0.2 <= d.blur_sigma <= 3.0 for d in blurred)
    assert 0.25 < sum(d.jpeg_quality is not None for d in a) / len(a) < 0.45  # p_jpeg 0.35
    assert all(30 <= d.jpeg_quality <= 95 for d in a if d.jpeg_quality is not None)
    assert 0.3 < sum(d.noisy for d in a) / len(a) < 0.5  # p_noise 0.4
    assert any(d.noise_poisson_peak is not None for d in a) and any(d.noise_grey for d in a)


def test_presets():
    bicubic = DegradationFamily.preset_family("bicubic", 8)
    assert all(bicubic.draw(np.random.default_rng(i)) == Degradation(8) for i in range(20))
    micro = DegradationFamily.preset_family("microscopy", 4)
    draws = [micro.draw(np.random.default_rng(i)) for i in range(200)]
    assert all(d.jpeg_quality is None for d in draws)
    assert {d.resize for d in draws} <= {"bicubic-aa", "area", "bilinear-aa"}
    assert set(DEGRADATION_PRESETS) == {"bicubic", "realistic", "microscopy"}
    with pytest.raises(ValueError, match="unknown degradation preset"):
        DegradationFamily.preset_family("vintage", 4)
    with pytest.raises(ValueError, match="p_jpeg"):
        DegradationFamily(4, p_jpeg=1.5)
    with pytest.raises(ValueError, match="unknown resize kernel"):
        DegradationFamily(4, resize_kernels=("lanczos",))


def test_round_trip_through_dicts():
    family = DegradationFamily.preset_family("microscopy", 16).replace(p_blur=0.3, blur_sigma_range=(0.5, 2.0))
    again = degradation_from_dict(family.to_dict())
    assert again == family and isinstance(again, DegradationFamily)
    fixed = Degradation(2, blur_sigma=1.5, blur_sigma_minor=0.5, blur_angle=0.3, resize="area", jpeg_quality=40)
    assert degradation_from_dict(fixed.to_dict()) == fixed
    # records written before the family existed
    assert degradation_from_dict({"kind": "bicubic-antialias", "scale": 4, "blur_sigma": 1.3}) == Degradation(4, 1.3)


def test_resize_kernels_and_area_is_binning():
    hr = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    for name in RESIZE_KERNELS:
        assert Degradation(4, resize=name)(hr).shape == (1, 3, 8, 12)
    binned = Degradation(4, resize="area")(hr)
    expected = hr.reshape(1, 3, 8, 4, 12, 4).mean(dim=(3, 5))
    assert torch.allclose(binned, expected, atol=1e-6)
    # without antialiasing the bicubic kernel samples the HR grid: stripes finer than the LR grid alias
    x = torch.arange(64).float()
    stripes = (0.5 + 0.5 * torch.cos(2 * torch.pi * x / 2.2)).expand(1, 3, 64, 64).contiguous()
    assert Degradation(4, resize="bicubic-aa")(stripes).std() < 0.02
    assert Degradation(4, resize="bicubic")(stripes).std() > 0.07


def test_anisotropic_blur():
    x = torch.zeros(1, 1, 41, 41)
    x[..., 20, 20] = 1
    iso2d = gaussian_blur(x, 2.0, 2.0 - 1e-9, 0.0)  # the 2D path, same radius
    assert torch.allclose(iso2d, gaussian_blur(x, 2.0), atol=1e-6)
    streak = gaussian_blur(x, 3.0, 0.5, 0.0)  # long along x
    assert abs(float(streak.sum()) - 1) < 1e-5
    row, column = streak[0, 0, 20], streak[0, 0, :, 20]
    assert float((row > 1e-3).sum()) > 2 * float((column > 1e-3).sum())


def test_noise_and_jpeg_are_seeded_and_act():
    hr = 0.3 + 0.4 * _image(1)  # away from 0 and 1, where clipping would hide the noise
    noisy = Degradation(4, noise_gaussian_sigma=0.05, noise_grey=True)
    a = noisy(hr, generator=torch.Generator().manual_seed(1))
    b = noisy(hr, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    residual = a - Degradation(4)(hr)
    assert torch.allclose(residual[:, 0], residual[:, 1], atol=1e-6)  # grey noise: same in every channel
    jpeg = Degradation(2, jpeg_quality=30)(hr)
    clean = Degradation(2)(hr)
    assert torch.equal(jpeg, Degradation(2, jpeg_quality=30)(hr))
    assert 0.005 < float((jpeg - clean).abs().mean()) < 0.1
    assert float((Degradation(2, jpeg_quality=95)(hr) - clean).abs().mean()) < float((jpeg - clean).abs().mean())


def test_named_benchmark_degradations():
    assert list(NAMED_DEGRADATIONS) == ["bicubic-aa", "box", "blur", "noise", "jpeg", "bicubic"]
    assert named_degradation("blur", 4) == Degradation(4, blur_sigma=1.3)
    assert named_degradation("noise", 8).noise_gaussian_sigma == pytest.approx(5 / 255)
    with pytest.raises(ValueError, match="choose from"):
        named_degradation("motion", 4)


def test_words_describe_the_drawn_degradation():
    rng = np.random.default_rng(0)
    assert degradation_properties(Degradation(4)) == ["clean"]
    assert degradation_properties(Degradation(4, blur_sigma=1.3)) == ["blur"]
    assert degradation_properties(Degradation(4, noise_gaussian_sigma=5 / 255, resize="area")) == ["noise", "binned"]
    assert degradation_properties(Degradation(4, jpeg_quality=60, resize="bicubic")) == ["jpeg", "aliased"]
    words = describe_degradation(Degradation(4, blur_sigma=2.0, noise_gaussian_sigma=0.03), rng)
    assert any(w in words for w in TRAIN_VOCABULARY["blur"]) and any(w in words for w in TRAIN_VOCABULARY["noise"])
    assert " and " in words


def test_caption_policy_rates_and_held_out_phrasing():
    policy = CaptionPolicy()
    family = DegradationFamily.preset_family("realistic", 4)
    content = "a red boat on a grey lake"
    counts = {"full": 0, "content": 0, "words": 0, "empty": 0}
    n = 4000
    for i in range(n):
        rng = np.random.default_rng([7, i])
        caption = policy.draw(content, family.draw(rng), rng)
        if caption == "":
            counts["empty"] += 1
        elif caption == content:
            counts["content"] += 1
        elif content in caption:
            counts["full"] += 1
            assert HELD_OUT_TEMPLATE.split("{degradation}")[0].format(content=content) not in caption
        else:
            counts["words"] += 1
    for key, rate in (("full", 0.45), ("content", 0.2), ("words", 0.15), ("empty", 0.2)):
        assert abs(counts[key] / n - rate) < 0.025, (key, counts)
    assert held_out_caption(content, "soft and out of focus") == f"{content}; the picture is soft and out of focus"
    assert "{degradation}" in DEGRADATION_ONLY_TEMPLATES[0]
    off = CaptionPolicy.content_only()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert off.draw(content, Degradation(4, blur_sigma=2), rng) == content
    assert rng.bit_generator.state == state  # draws nothing: old runs resume with the same batches
    with pytest.raises(ValueError, match="sum to 1"):
        CaptionPolicy(0.5, 0.5, 0.5, 0.0)


def test_patch_sampler_with_a_family_is_deterministic_and_captions_vary():
    arrays = [np.random.default_rng(i).random((96, 96, 3)).astype(np.float32) for i in range(3)]
    items = captioned_images_from_arrays(arrays, ["a cat", "a dog", "a bird"])
    family = DegradationFamily.preset_family("realistic", 4)
    sampler = PatchSampler(items, family, lr_patch=8, captions=CaptionPolicy())
    assert sampler.margin == 2 + 3 + 1  # ceil(3 * 3.0 / 4) for the largest blur
    a = sampler.batch(32, np.random.default_rng(11))
    b = sampler.batch(32, np.random.default_rng(11))
    assert torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr) and a.captions == b.captions
    assert a.lr.shape == (32, 3, 8, 8) and a.hr.shape == (32, 3, 32, 32)
    assert "" in a.captions and any(c not in ("", "a cat", "a dog", "a bird") for c in a.captions)


def test_cli_trains_with_a_family_records_it_and_resumes(tmp_path):
    from napari_textsr.checkpoints import read_metadata
    from napari_textsr.cli import main
    from napari_textsr.training.trainer import TrainConfig

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:6:0:64", "--method", "pdn", "--preset", "tiny", "--steps", "2",
            "--batch-size", "4", "--patch", "8", "--val-every", "2", "--out", str(out), "--threads", "1",
            "--no-progress", "--degradations", "microscopy", "--degradation-option", "p_blur=0.2,blur_sigma_range=0.5:2",
            "--caption-rates", "0.5,0.2,0.1,0.2"]  # fmt: skip
    assert main(args) == 0
    record = read_metadata(out / "model.textsr.safetensors").training
    assert record.degradation["kind"] == "family" and record.degradation["preset"] == "microscopy"
    assert record.degradation["p_blur"] == 0.2 and record.degradation["blur_sigma_range"] == [0.5, 2.0]
    assert record.extra["captions"] == {"p_content_and_degradation": 0.5, "p_content": 0.2, "p_degradation": 0.1,
                                        "p_empty": 0.2}  # fmt: skip
    config = TrainConfig.from_run(out)
    assert config.degradation == DegradationFamily.preset_family("microscopy", 4).replace(
        p_blur=0.2, blur_sigma_range=(0.5, 2.0), preset="microscopy"
    )
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--threads", "1", "--no-progress"]) == 0
    assert read_metadata(out / "model.textsr.safetensors").training.steps == 3
    # the equivalent command rebuilds the same settings
    from napari_textsr.training.trainer import equivalent_command

    command = equivalent_command(config)
    assert "--degradations microscopy" in command and "p_blur=0.2" in command and "blur_sigma_range=0.5:2.0" in command
    # ... and `textsr models` names the family with what was changed, not the preset alone.
    from napari_textsr.cli.models import describe_degradation_record

    described = describe_degradation_record(record.degradation)
    assert described == "microscopy family (drawn per sample) with p_blur=0.2,blur_sigma_range=0.5:2.0", described
    assert describe_degradation_record(DegradationFamily.preset_family("realistic", 2).to_dict()) == (
        "realistic family (drawn per sample)"
    )


def test_default_training_degradation_is_the_realistic_family_and_old_runs_keep_theirs(tmp_path):
    from pathlib import Path

    from napari_textsr.training.trainer import TrainConfig

    config = TrainConfig(method="pdn", scale=8, data=["synthetic:2"])
    assert config.degradation == DegradationFamily.preset_family("realistic", 8)
    assert config.captions == CaptionPolicy()
    # a run stored before the family existed: fixed bicubic pipeline, content captions only
    old = config.to_dict()
    old["degradation"] = {"kind": "bicubic-antialias", "scale": 8, "blur_sigma": 0.0,
                          "noise_poisson_peak": None, "noise_gaussian_sigma": 0.0}  # fmt: skip
    del old["captions"]
    restored = TrainConfig.from_dict(old)
    assert restored.degradation == Degradation(8) and restored.captions == CaptionPolicy.content_only()
    shipped = Path(__file__).parents[1] / "training_runs" / "pdn-x4-photo"
    if shipped.is_dir():
        run = TrainConfig.from_run(shipped)
        assert run.degradation == Degradation(4) and run.captions == CaptionPolicy.content_only()


def test_degradation_as_content_is_drawn_at_its_rate_and_worded_as_clean():
    noisy, clean = Degradation(4, noise_gaussian_sigma=5 / 255), Degradation(4)
    policy, off = CaptionPolicy(p_degradation_as_content=0.4), CaptionPolicy()
    content, n = "a red boat", 3000
    kept = worded = 0
    for i in range(n):
        rng, rng_off = np.random.default_rng([3, i]), np.random.default_rng([3, i])
        drawn = policy.draw_sample(content, noisy, rng)
        assert (
            drawn.caption == content
            or drawn.caption == ""
            or drawn.degradation_in_target == (not any(w in drawn.caption for w in TRAIN_VOCABULARY["noise"]))
        )
        # the choice takes no draws from the sample's generator: runs resume with the same batches
        assert off.draw(content, noisy, rng_off) is not None and rng.bit_generator.state == rng_off.bit_generator.state
        if drawn.caption not in ("", content):
            worded += 1
            if drawn.degradation_in_target:
                kept += 1
                assert any(w in drawn.caption for w in TRAIN_VOCABULARY["clean"]), drawn.caption
        assert not policy.draw_sample(content, clean, np.random.default_rng([3, i])).degradation_in_target
    assert abs(worded / n - 0.6) < 0.03 and abs(kept / worded - 0.4) < 0.04, (worded, kept)
    assert "p_degradation_as_content" not in off.to_dict()  # records made before it are unchanged
    assert CaptionPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        CaptionPolicy(p_degradation_as_content=1.5)


def test_content_target_keeps_blur_and_noise_and_resizes_back_to_the_lr():
    hr = _image(5, 64)
    assert torch.equal(Degradation(4).content_target(hr, Degradation(4)(hr)), hr)  # nothing to keep
    pipeline = Degradation(4, blur_sigma=1.5, noise_gaussian_sigma=0.03, resize="area")
    lr = pipeline(hr, generator=torch.Generator().manual_seed(0))
    target = pipeline.content_target(hr, lr)
    assert target.shape == hr.shape and 0 <= float(target.min()) and float(target.max()) <= 1
    resize = pipeline.resize_only()
    assert resize == Degradation(4, resize="area")
    # the target is a scene whose plain resize is (nearly) the degraded LR; the true HR's is far from it
    assert float((resize(target) - lr).abs().mean()) < 0.25 * float((resize(hr) - lr).abs().mean())
    assert float((target - hr).abs().mean()) > 0.01


def test_as_content_kinds_keep_only_those_kinds_and_word_the_rest():
    """``as_content_kinds=("blur",)``: a blurred, noisy sample called content keeps its blur and says "noisy"."""
    import torch.nn.functional as F

    from napari_textsr.training.degradations import CONTENT_KINDS, gaussian_blur

    both = Degradation(4, blur_sigma=2.0, noise_gaussian_sigma=8 / 255, jpeg_quality=50)
    assert both.without(["blur"]) == Degradation(4, noise_gaussian_sigma=8 / 255, jpeg_quality=50)
    assert both.without(CONTENT_KINDS) == both.resize_only()
    with pytest.raises(ValueError, match="together"):
        both.without(["noise"])
    with pytest.raises(ValueError, match="unknown degradation kind"):
        both.without(["haze"])
    hr = _image(7, 64)
    lr = both(hr, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(hr, 2.0)
    assert torch.allclose(both.content_target(hr, lr, ["blur"]), blurred.clamp(0, 1))
    residue = F.interpolate(lr - both.resize_only()(blurred), scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(both.content_target(hr, lr, ["noise", "jpeg"]), (hr + residue).clamp(0, 1))
    assert torch.equal(both.content_target(hr, lr), both.content_target(hr, lr, CONTENT_KINDS))

    policy = CaptionPolicy(p_degradation_as_content=1.0, as_content_kinds=("blur",))
    content, kept_blur = "a red boat", 0
    for i in range(400):
        drawn = policy.draw_sample(content, both, np.random.default_rng([5, i]))
        if drawn.caption in ("", content):
            assert drawn.kept == ()
            continue
        kept_blur += 1
        assert drawn.kept == ("blur",), drawn
        assert not any(w in drawn.caption for w in TRAIN_VOCABULARY["blur"]), drawn.caption
        assert any(w in drawn.caption for w in TRAIN_VOCABULARY["noise"]), drawn.caption
        # a noisy sample without blur is never called content: its noise stays in the words and leaves the target
        noisy = policy.draw_sample(content, both.without(["blur"]), np.random.default_rng([5, i]))
        assert noisy.kept == () and any(w in noisy.caption for w in TRAIN_VOCABULARY["noise"])
    assert kept_blur > 200
    assert CaptionPolicy.from_dict(policy.to_dict()) == policy and policy.to_dict()["as_content_kinds"] == ["blur"]
    assert "as_content_kinds" not in CaptionPolicy(p_degradation_as_content=0.5).to_dict()
    with pytest.raises(ValueError, match="together"):
        CaptionPolicy(as_content_kinds=("noise",))
    with pytest.raises(ValueError, match="at least one"):
        CaptionPolicy(as_content_kinds=())


def test_patch_sampler_keeps_the_degradation_in_the_target_only_where_the_caption_calls_it_clean():
    arrays = [np.random.default_rng(i).random((64, 64, 3)).astype(np.float32) for i in range(2)]
    items = captioned_images_from_arrays(arrays, ["a cat", "a dog"])
    noisy = Degradation(4, noise_gaussian_sigma=0.05)
    plain = PatchSampler(items, noisy, lr_patch=8, captions=CaptionPolicy()).batch(64, np.random.default_rng(2))
    kept = PatchSampler(items, noisy, lr_patch=8, captions=CaptionPolicy(p_degradation_as_content=1.0)).batch(
        64, np.random.default_rng(2)
    )
    assert torch.equal(plain.lr, kept.lr)
    changed = [not torch.equal(a, b) for a, b in zip(plain.hr, kept.hr)]
    worded = [c not in ("", "a cat", "a dog") for c in kept.captions]
    assert changed == worded and any(changed) and not all(changed)
    for caption, other in zip(kept.captions, plain.captions):
        if caption not in ("", "a cat", "a dog"):
            assert not any(w in caption for w in TRAIN_VOCABULARY["noise"]), caption
            assert any(w in other for w in TRAIN_VOCABULARY["noise"]), other


def test_degradation_as_content_from_the_cli_is_recorded_and_repeated(tmp_path):
    from napari_textsr.cli import main
    from napari_textsr.training.trainer import TrainConfig, equivalent_command

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:4:0:64", "--method", "pdn", "--preset", "tiny", "--steps", "1",
            "--batch-size", "2", "--patch", "8", "--val-every", "1", "--out", str(out), "--threads", "1",
            "--no-progress", "--degradation-as-content", "0.3"]  # fmt: skip
    assert main(args) == 0
    config = TrainConfig.from_run(out)
    assert config.captions == CaptionPolicy(p_degradation_as_content=0.3)
    command = equivalent_command(config)
    assert "--degradation-as-content 0.3" in command and "--caption-rates" not in command
    resume = ["train", "--out", str(out), "--resume", "--steps", "2", "--threads", "1", "--no-progress"]
    assert main(resume + ["--caption-rates", "0.45,0.2,0.15,0.2"]) == 0  # the run's forms: its as-content rate stays
    assert TrainConfig.from_run(out).captions == CaptionPolicy(p_degradation_as_content=0.3)
    assert main(resume + ["--steps", "3", "--degradation-as-content", "0.5"]) != 0  # another rate: not this run
    # Only the blur called content: recorded, repeated, and kept when a resume gives the caption rates.
    blur_only = tmp_path / "blur-only"
    args = args[: args.index("--out") + 1] + [str(blur_only)] + args[args.index("--out") + 2 :]
    assert main(args + ["--as-content-kinds", "blur"]) == 0
    wanted = CaptionPolicy(p_degradation_as_content=0.3, as_content_kinds=("blur",))
    assert TrainConfig.from_run(blur_only).captions == wanted
    assert "--degradation-as-content 0.3 --as-content-kinds blur" in equivalent_command(TrainConfig.from_run(blur_only))
    resume = ["train", "--out", str(blur_only), "--resume", "--steps", "2", "--threads", "1", "--no-progress"]
    assert main(resume + ["--caption-rates", "0.45,0.2,0.15,0.2"]) == 0
    assert TrainConfig.from_run(blur_only).captions == wanted
    # An empty caption that keeps some blur: recorded and repeated the same way.
    empty = tmp_path / "empty-keeps-blur"
    args = args[: args.index("--out") + 1] + [str(empty)] + args[args.index("--out") + 2 :]
    assert main(args + ["--empty-keeps-blur", "0.5"]) == 0
    assert TrainConfig.from_run(empty).captions == CaptionPolicy(p_degradation_as_content=0.3, p_empty_keeps_blur=0.5)
    assert "--empty-keeps-blur 0.5" in equivalent_command(TrainConfig.from_run(empty))
    resume = ["train", "--out", str(empty), "--resume", "--steps", "2", "--threads", "1", "--no-progress"]
    assert main(resume + ["--caption-rates", "0.45,0.2,0.15,0.2"]) == 0  # new form rates, the rest kept
    assert TrainConfig.from_run(empty).captions == CaptionPolicy(p_degradation_as_content=0.3, p_empty_keeps_blur=0.5)
    # Another image's content caption at a rate: recorded, repeated and kept the same way.
    other = tmp_path / "other-content"
    args = args[: args.index("--out") + 1] + [str(other)] + args[args.index("--out") + 2 :]
    assert main(args + ["--other-content", "0.25"]) == 0
    wanted = CaptionPolicy(p_degradation_as_content=0.3, p_other_content=0.25)
    assert TrainConfig.from_run(other).captions == wanted
    assert "--other-content 0.25" in equivalent_command(TrainConfig.from_run(other))
    with pytest.raises(ValueError, match="expected 4 caption form rates"):
        CaptionPolicy().with_form_rates([0.5, 0.5])


def test_empty_keeps_blur_is_drawn_at_its_rate_only_for_blurred_empty_samples():
    """``p_empty_keeps_blur``: an empty caption keeps the blur in the target at that rate; nothing else changes."""
    from napari_textsr.training.degradations import gaussian_blur

    blurred, sharp = Degradation(4, blur_sigma=0.6, noise_gaussian_sigma=5 / 255), Degradation(4)
    policy, off = CaptionPolicy(p_empty_keeps_blur=0.3), CaptionPolicy()
    content, n, empty, kept = "a red boat", 4000, 0, 0
    for i in range(n):
        rng, rng_off = np.random.default_rng([9, i]), np.random.default_rng([9, i])
        drawn, plain = policy.draw_sample(content, blurred, rng), off.draw_sample(content, blurred, rng_off)
        assert drawn.caption == plain.caption and rng.bit_generator.state == rng_off.bit_generator.state
        if drawn.caption:
            assert drawn.kept == plain.kept == ()  # worded and content-only samples are as before
            continue
        empty += 1
        kept += drawn.kept == ("blur",)
        assert drawn.kept in ((), ("blur",))
        assert policy.draw_sample(content, sharp, np.random.default_rng([9, i])).kept == ()  # no blur, none kept
    assert abs(empty / n - 0.2) < 0.02 and abs(kept / empty - 0.3) < 0.05, (empty, kept)
    assert "p_empty_keeps_blur" not in off.to_dict() and CaptionPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="in \\[0, 1\\], got p_empty_keeps_blur=-0.1"):
        CaptionPolicy(p_empty_keeps_blur=-0.1)

    # In a batch: an empty-caption sample's target is the blurred HR, not the noisy one; the LR is unchanged.
    arrays = [np.random.default_rng(i).random((64, 64, 3)).astype(np.float32) for i in range(2)]
    items = captioned_images_from_arrays(arrays, ["a cat", "a dog"])
    every = CaptionPolicy(p_empty_keeps_blur=1.0)
    before = PatchSampler(items, blurred, lr_patch=8, augment=False, captions=off).batch(48, np.random.default_rng(4))
    after = PatchSampler(items, blurred, lr_patch=8, augment=False, captions=every).batch(48, np.random.default_rng(4))
    assert torch.equal(before.lr, after.lr) and before.captions == after.captions and "" in after.captions
    inner = (..., slice(4, -4), slice(4, -4))  # away from the crop's edge, where the blur saw its neighbours
    for caption, hr_before, hr_after in zip(after.captions, before.hr, after.hr):
        if caption:
            assert torch.equal(hr_before, hr_after)
        else:
            expected = gaussian_blur(hr_before[None], 0.6)[0].clamp(0, 1)
            assert torch.allclose(hr_after[inner], expected[inner], atol=1e-5)
            assert float((hr_after - hr_before).abs().mean()) > 0.02


def test_other_content_is_drawn_at_its_rate_from_the_other_captions_only():
    """``p_other_content``: a content-bearing caption names another image at that rate; nothing else changes."""
    blurred = Degradation(4, blur_sigma=1.5)
    others = ["a cat", "a dog", "a red boat", ""]
    policy, off = CaptionPolicy(p_other_content=0.3), CaptionPolicy()
    n, with_content, swapped = 4000, 0, 0
    for i in range(n):
        rng, rng_off = np.random.default_rng([5, i]), np.random.default_rng([5, i])
        drawn = policy.draw_sample("a red boat", blurred, rng, others)
        plain = off.draw_sample("a red boat", blurred, rng_off, others)
        assert rng.bit_generator.state == rng_off.bit_generator.state and drawn.kept == plain.kept
        if "a red boat" in plain.caption:
            with_content += 1
            swapped += drawn.caption != plain.caption
            # The same form and words, another image's content (never its own, never empty).
            assert drawn.caption in (plain.caption, plain.caption.replace("a red boat", "a cat"),
                                     plain.caption.replace("a red boat", "a dog"))  # fmt: skip
        else:  # words alone and the empty caption are as before
            assert drawn.caption == plain.caption
    assert abs(with_content / n - 0.65) < 0.03 and abs(swapped / with_content - 0.3) < 0.03, (with_content, swapped)
    # With no other image's caption to take (its own second caption does not count), the sample keeps its own.
    own = ["a red boat", "a small red rowing boat"]
    lonely = [policy.draw("a red boat", blurred, np.random.default_rng([5, i]), own, own) for i in range(50)]
    assert lonely == [off.draw("a red boat", blurred, np.random.default_rng([5, i])) for i in range(50)]
    assert "p_other_content" not in off.to_dict() and CaptionPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="in \\[0, 1\\], got p_other_content=1.5"):
        CaptionPolicy(p_other_content=1.5)

    # In a batch: the pool is every training caption; the LR and HR are those of the run without it.
    arrays = [np.random.default_rng(i).random((64, 64, 3)).astype(np.float32) for i in range(3)]
    items = captioned_images_from_arrays(arrays, ["a cat", "a dog", "a red boat"])
    family = DegradationFamily.preset_family("realistic", 4)
    items[2] = dataclasses.replace(items[2], captions=("a red boat", "a small red rowing boat"))
    every = CaptionPolicy(p_other_content=1.0)
    before = PatchSampler(items, family, lr_patch=8, augment=False, captions=off).batch(48, np.random.default_rng(4))
    sampler = PatchSampler(items, family, lr_patch=8, augment=False, captions=every)
    after = sampler.batch(48, np.random.default_rng(4))
    assert sampler.content_captions == ["a cat", "a dog", "a red boat", "a small red rowing boat"]
    assert torch.equal(before.lr, after.lr) and torch.equal(before.hr, after.hr) and before.names == after.names
    swapped = 0
    boat = ("a red boat", "a small red rowing boat")
    for name, caption_before, caption in zip(after.names, before.captions, after.captions):
        if any(c in caption_before for c in sampler.content_captions):  # content-bearing: names another image now
            swapped += 1
            own = boat if name == items[2].name else [c for c in sampler.content_captions if c in caption_before]
            named = [c for c in sampler.content_captions if c in caption]
            assert named and not set(named) & set(own), (name, caption_before, caption)
        else:
            assert caption == caption_before
    assert swapped > 20


def test_the_word_tables_in_the_docs_list_the_training_vocabulary():
    """README and docs/training.md copy TRAIN_VOCABULARY into tables: each row must match it."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    for doc in (root / "README.md", root / "docs" / "training.md"):
        rows = [line for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
        for words in TRAIN_VOCABULARY.values():
            assert any(line.rstrip(" |").endswith(" | " + ", ".join(words)) for line in rows), (doc.name, words)


def test_a_jpeg_file_adds_the_training_jpeg_words_unless_the_caption_says_how_it_was_taken():
    from napari_textsr.training.captions import (
        FILE_WORDS_MAX_JPEG_QUALITY,
        TRAIN_VOCABULARY,
        caption_with_file_words,
        says_how_taken,
    )

    assert caption_with_file_words("a cat.", 60) == "a cat, JPEG-compressed"
    assert caption_with_file_words("", 40) == "JPEG-compressed"  # a degradation-only caption, as in training
    assert FILE_WORDS_MAX_JPEG_QUALITY == 60  # where the words pay with every bundled PDN (README)
    assert caption_with_file_words("a cat", 60) == "a cat, JPEG-compressed"
    assert caption_with_file_words("a cat", 61) == "a cat"
    assert caption_with_file_words("a cat", None) == "a cat"
    for words in TRAIN_VOCABULARY.values():  # the user's own words about the picture win
        for word in words:
            assert caption_with_file_words(f"a cat, {word.upper()}", 50) == f"a cat, {word.upper()}"
    assert says_how_taken("a jpeg of a cat") and says_how_taken("a soft toy")
    assert not says_how_taken("software on a screen") and not says_how_taken("a sharpened pencil")
    assert caption_with_file_words("software on a screen", 50) == "software on a screen, JPEG-compressed"
    assert caption_with_file_words("a tabby cat, ", 50) == "a tabby cat, JPEG-compressed"  # no double comma
    for typed in ("a soft-toy", "a jpg screenshot", "a low-quality photo", "blocky artifacts on a wall"):
        assert caption_with_file_words(typed, 50) == typed


def test_an_output_caption_loses_the_jpeg_words_its_input_was_given():
    from napari_textsr.training.captions import caption_with_file_words, caption_without_file_words

    for typed in ("a cat", ""):
        assert caption_without_file_words(caption_with_file_words(typed, 40)) == typed
    assert caption_without_file_words("a cat, blurry") == "a cat, blurry"
    assert caption_without_file_words("JPEG-compressed: a cat") == "JPEG-compressed: a cat"  # not what was joined


def test_one_caption_for_several_files_says_jpeg_only_when_every_file_is_one():
    from napari_textsr.cli import file_words_caption
    from napari_textsr.imageio import JpegEvidence

    frame90, frame60 = JpegEvidence(90, from_pixels=False), JpegEvidence(60, from_pixels=True)
    assert file_words_caption("a street", [frame90, frame60], True) == "a street, JPEG-compressed"  # the worst decides
    assert file_words_caption("a street", [frame60, None], True) == "a street"  # a TIFF among them: nothing to say
    assert file_words_caption("a street", [frame60], False) == "a street"  # --no-file-words
    assert file_words_caption("a street", [], True) == "a street"
