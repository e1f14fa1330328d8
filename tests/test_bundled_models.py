"""The models that ship in the package: present, described, loadable, better than bicubic."""

import itertools
import json

import numpy as np
import pytest
import torch

from napari_textsr.benchmark import bicubic_upscale
from napari_textsr.cli import main
from napari_textsr.inference import WEIGHTS_DIR, list_models, load_model
from napari_textsr.loading import default_for_input
from napari_textsr.metrics import quality_scores
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY
from napari_textsr.training.degradations import RESIZE_KERNELS, Degradation

SHIPPED = {
    "pdn-x2": ("pdn", 2),
    "pdn-x4": ("pdn", 4),
    "pdn-x8": ("pdn", 8),
    "pdn-x16": ("pdn", 16),
    "tgsr-x8": ("tgsr", 8),
    "clipsr-x4": ("clipsr", 4),
    "pdn-x2-jpeg": ("pdn", 2),
    "pdn-x8-jpeg": ("pdn", 8),
    "pdn-x16-jpeg": ("pdn", 16),
}
# Trained for JPEG inputs alone (JPEG in every sample): the default for inputs that show quality <= 60.
# (x4's gained nothing on the held-out photographs and is not bundled; docs/training.md.)
FOR_JPEG_INPUTS = {2: "pdn-x2-jpeg", 8: "pdn-x8-jpeg", 16: "pdn-x16-jpeg"}
# The PDNs read the encoder trained with --word-loss; TGSR and CLIP-SR the first one.
ENCODERS = {f"pdn-x{s}": "textsr-clip-s:bundled:textsr-clip-s-words2" for s in (2, 4, 8, 16)}
ENCODERS.update({name: ENCODERS["pdn-x2"] for name in FOR_JPEG_INPUTS.values()})
# Trained on the realistic degradation family (the others: antialiased bicubic only).
REALISTIC = ("pdn-x2", "pdn-x4", "pdn-x8", "pdn-x16")


def test_shipped_models_are_listed_with_their_training_record():
    models = {m.name: m for m in list_models()}
    assert set(SHIPPED) <= set(models)
    for name, (method, scale) in SHIPPED.items():
        m = models[name]
        assert (m.method, m.scale) == (method, scale)
        assert m.encoder == ENCODERS.get(name, "textsr-clip-s:bundled:textsr-clip-s")
        assert m.training is not None and m.training.command.startswith("textsr train")
        assert any("bsd200" in d for d in m.training.data) and m.training.steps > 0
        assert "psnr_y" in m.training.validation
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert total < 60e6  # "under about 60 MB": two 16-MB encoders and nine models, 57.4 MB


def test_default_picks_the_best_measured_method_per_scale():
    for scale in (2, 4, 8, 16):
        upscaler = load_model("default", scale=scale)
        assert upscaler.scale == scale and upscaler.description.name == f"pdn-x{scale}"


def test_heavy_jpeg_inputs_route_to_the_models_trained_for_them():
    models = {m.name: m for m in list_models()}
    for scale, name in FOR_JPEG_INPUTS.items():
        assert models[name].for_jpeg_inputs and not models[f"pdn-x{scale}"].for_jpeg_inputs
        family = models[name].training.degradation
        assert family["p_jpeg"] == 1.0 and tuple(family["jpeg_quality_range"]) == (25, 70)
        assert f"--init pdn-x{scale} " in models[name].training.command  # fine-tuned from the general default
        assert default_for_input("default", scale, FILE_WORDS_MAX_JPEG_QUALITY) == name
        assert default_for_input(f"pdn-x{scale}", scale, 30) == name
        assert default_for_input("default", scale, FILE_WORDS_MAX_JPEG_QUALITY + 1) == "default"
        assert default_for_input("default", scale, None) == "default"
    assert default_for_input("default", 4, 30) == "default"  # no model for JPEG inputs at x4: the general default


def test_load_model_routes_by_the_jpeg_quality_it_is_given():
    """The Python API's ``load_model(..., jpeg_quality=q)`` picks as the CLI and the dock do."""
    quality = FILE_WORDS_MAX_JPEG_QUALITY
    for scale in (2, 4, 8, 16):
        routed = FOR_JPEG_INPUTS.get(scale, f"pdn-x{scale}")
        assert load_model("default", scale=scale, jpeg_quality=quality).description.name == routed
        assert load_model("default", scale=scale, jpeg_quality=quality + 1).description.name == f"pdn-x{scale}"
        assert load_model("default", scale=scale).description.name == f"pdn-x{scale}"
    assert load_model("pdn-x2", jpeg_quality=30).description.name == "pdn-x2-jpeg"  # the default by its name
    assert load_model("tgsr-x8", jpeg_quality=30).description.name == "tgsr-x8"  # another model: as named


# Least lead (dB) of the model for JPEG inputs over the general default on the JPEG photograph below,
# with the caption as typed (`--no-file-words`) and with the JPEG words `textsr upscale` adds.
# (Not x16: this photograph's LR at x16 is 6x9 pixels, where pdn-x16-jpeg is 0.03-0.05 dB behind the
# general default; on the 34 held-out photographs it leads by 0.02-0.03, README "Models for JPEG inputs".)
JPEG_MODEL_LEAD = {2: {"as typed": 0.15, "with words": 0.05}, 8: {"as typed": 0.02, "with words": -0.01}}


@pytest.mark.parametrize("scale", sorted(JPEG_MODEL_LEAD))
def test_the_model_for_jpeg_inputs_beats_the_general_default_on_a_jpeg_photograph(scale):
    """The sample photograph (never trained on) made small the bench's JPEG way (antialiased bicubic,
    then JPEG quality 60), upscaled by the general default and by the model ``default`` picks for
    an input of quality 60, the empty and the true caption, as typed and with the JPEG words.

    Measured here (7 Dec 2026), gain over bicubic, empty / true caption as typed, then with the
    words: x2 general default +0.38 / +0.16 and +0.47 / +0.48 dB, ``pdn-x2-jpeg`` +0.59 / +0.56 and
    +0.59 / +0.56; x8 general -0.01 / -0.15 and +0.03 / +0.03, ``pdn-x8-jpeg`` +0.03 / -0.03 and
    +0.03 / +0.04 (at x8 the words already give the general default most of what the model for JPEG
    inputs adds). README, "Models for JPEG inputs", has the 34 held-out photographs.
    """
    from napari_textsr.benchmark import degrade_to_uint8
    from napari_textsr.samples import load_sample
    from napari_textsr.training.captions import caption_with_file_words
    from napari_textsr.training.degradations import named_degradation

    sample = load_sample("photograph")
    hr = sample.image[: 100 // scale * scale, : 150 // scale * scale].astype(np.float32) / 255
    lr = degrade_to_uint8(hr, named_degradation("jpeg", scale), "cat")
    bicubic = quality_scores(bicubic_upscale(lr, scale), hr, scale).psnr_y
    jpeg_model = default_for_input("default", scale, 60)
    assert jpeg_model == FOR_JPEG_INPUTS[scale]
    gains = {}
    for spec in ("default", jpeg_model):
        upscaler = load_model(spec, scale=scale)
        for caption in ("", sample.caption):
            for words, text in (("as typed", caption), ("with words", caption_with_file_words(caption, 60))):
                sr = upscaler.upscale(lr, text).image.astype(np.float32) / 255
                gains[spec, caption, words] = quality_scores(sr, hr, scale).psnr_y - bicubic
    for (spec, caption, words), gain in gains.items():
        if spec == jpeg_model:
            lead = gain - gains["default", caption, words]
            assert lead > JPEG_MODEL_LEAD[scale][words], (caption, words, gains)


def test_the_defaults_record_their_degradation_family_and_stages():
    models = {m.name: m for m in list_models()}
    for name in REALISTIC:
        record = models[name].training
        # The realistic family, or the same kinds drawn at other rates and strengths (--degradation-option).
        family = record.degradation
        assert family["kind"] == "family" and family["preset"] in ("realistic", "custom")
        assert "--degradations realistic" in record.command
        # every resize kernel of the family (a kernel named twice is drawn twice as often)
        assert set(family["resize_kernels"]) == set(RESIZE_KERNELS)
        assert min(family["p_blur"], family["p_noise"], family["p_jpeg"]) > 0
        assert record.extra["captions"]["p_empty"] > 0  # caption dropout: the empty caption is unconditional
        assert len(record.stages()) > 1 and record.stages()[1]["steps"] > 0  # fine-tuned or transferred
        assert record.extra["ema_decay"] == 0.999  # their latest stage kept a moving average of the weights
    for name in ("tgsr-x8", "clipsr-x4"):  # benchmark-convention models
        assert models[name].training.degradation.get("blur_sigma", 0) == 0
        assert models[name].training.degradation["kind"] == "bicubic-antialias"


def test_textsr_models_shows_each_stage_with_its_changed_family_and_weight_average(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out

    def block(name: str) -> str:  # a model's header line and the indented lines under it, up to the next model
        header, *rest = text[text.index(name + " ") :].splitlines()
        return "\n".join([header, *itertools.takewhile(lambda line: line.startswith(" "), rest)])

    x4 = block("pdn-x4")
    assert "[default at x4]" in x4.splitlines()[0]
    assert "realistic family (drawn per sample) with p_blur=0.3," in x4
    assert "weights: moving average, ema_decay 0.999" in x4
    # its caption settings: blur called content by the words, some kept by the empty caption, other captions
    assert (
        "captions: p_degradation_as_content=0.9, as_content_kinds=blur, p_empty_keeps_blur=0.7, p_other_content=0.3"
        in x4
    )
    assert "fine-tuned from a model trained 3600 steps" in x4
    # x8's latest stage: 3000 steps of its last recipe (some blur kept by the empty caption), fresh schedule
    x8 = block("pdn-x8")
    assert "[default at x8]" in x8.splitlines()[0] and " 3000 steps " in x8.splitlines()[0]
    assert "captions: p_degradation_as_content=0.5, p_empty_keeps_blur=0.7" in x8
    assert "fine-tuned from a model trained 1500 steps" in x8
    # x16's latest stages sometimes gave another image's content caption (a wrong caption costs little),
    # kept some blur for the empty caption and drew the empty caption in 30 % of samples, not 20 %;
    # the latest: 5000 steps of that recipe at twice the learning rate, from the 1500-step stage before it
    x16 = block("pdn-x16")
    assert "[default at x16]" in x16.splitlines()[0] and " 5000 steps " in x16.splitlines()[0]
    assert "fine-tuned from a model trained 1500 steps" in x16
    latest = next(line.strip() for line in x16.splitlines() if line.strip().startswith("captions:"))
    assert latest == (
        "captions: p_content_and_degradation=0.4, p_content=0.15, p_empty=0.3, "
        "p_degradation_as_content=0.5, p_empty_keeps_blur=0.7, p_other_content=0.3"
    )
    # and area (box averaging, binning) three times in the eight resize kernels
    assert "resize_kernels=bicubic-aa:bicubic:bicubic:bilinear-aa:bilinear:area:area:area," in x16


def test_default_x4_on_a_photograph_however_it_was_made():
    """The sample photograph (never trained on) made small the six ways of issue 9, empty and true caption.

    The first bundled PDN x4, trained on antialiased bicubic only, lost 2.5-2.8 dB against
    bicubic on this image made small by plain (aliased) bicubic; the realistic-family model
    stays within issue 9's 0.3 dB tolerance there and gains on average over the six ways.
    Measured here (3 Dec 2026): +1.20 / +1.22 dB (empty / true caption) on antialiased bicubic, +1.47 /
    +1.47 on blur, +0.33 / +0.25 on plain bicubic, +0.15 / +0.17 on JPEG quality 60; 0.83 on average.
    """
    from napari_textsr.benchmark import degrade_to_uint8
    from napari_textsr.samples import load_sample
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS, named_degradation

    sample = load_sample("photograph")
    hr = sample.image[:100, :148].astype(np.float32) / 255
    upscaler = load_model("default", scale=4)
    gains = {}
    for name in NAMED_DEGRADATIONS:
        lr = degrade_to_uint8(hr, named_degradation(name, 4), "cat")
        bicubic = quality_scores(bicubic_upscale(lr, 4), hr, 4).psnr_y
        for caption in ("", sample.caption):
            sr = upscaler.upscale(lr, caption).image.astype(np.float32) / 255
            gains[name, caption] = quality_scores(sr, hr, 4).psnr_y - bicubic
    assert gains["bicubic", ""] > -0.3 and gains["bicubic", sample.caption] > -0.3, gains
    assert gains["blur", ""] > 0.5 and gains["blur", sample.caption] > 0.5, gains
    assert np.mean(list(gains.values())) > 0.15, gains


def _words_on_the_photograph(scale: int):
    """The default at ``scale`` on the sample photograph (never trained on): a function
    (degradation name, held-out words key) -> PSNR-Y of the output for the true caption with
    those words in the held-out phrasing, the low-resolution input made that way."""
    from napari_textsr.benchmark import degrade_to_uint8
    from napari_textsr.samples import load_sample
    from napari_textsr.training.captions import HELD_OUT_PHRASES, held_out_caption
    from napari_textsr.training.degradations import named_degradation

    sample = load_sample("photograph")
    hr = sample.image[:100, :148].astype(np.float32) / 255
    upscaler = load_model("default", scale=scale)

    def psnr_y(degradation: str, words: str) -> float:
        lr = degrade_to_uint8(hr, named_degradation(degradation, scale), "cat")
        sr = upscaler.upscale(lr, held_out_caption(sample.caption, HELD_OUT_PHRASES[words])).image
        return quality_scores(sr.astype(np.float32) / 255, hr, scale).psnr_y

    return psnr_y


def test_degradation_words_pay_at_x2_on_a_photograph():
    """Issue 9's "text pays": the x2 default (on ``textsr-clip-s-words2``) on the sample photograph
    (never trained on), the true caption with degradation words in a phrasing training never used.

    Measured here: blurred (sigma 1.3 HR px), "soft and out of focus" 30.95 dB against 30.33 with
    "sharp and clean" (+0.62); made small sharply (antialiased bicubic), "sharp and clean" 34.89
    against 34.65 with "soft and out of focus" (+0.24). Asked: issue 9's 0.5 dB on blur. The x2
    before its ``--empty-keeps-blur 0.65`` stage (until 2 Dec 2026, 10:28 UTC) gave +0.56 and
    +0.23; the one before its ``--empty-keeps-blur 0.5`` stage (until 08:00 UTC) +0.82 and +0.31 (the
    blur words took more blur out: 31.14 dB); the one before it (until late on 1 Dec 2026, trained
    with "sharp" meaning "keep the softness" in half the worded samples, not nine in ten) +1.59
    and +0.95, the 8-block x2 +0.85 and +0.32. README, "Held-out photographs", has the 34 held-out
    photographs (+1.72 dB on blur, +1.08 on antialiased bicubic).
    """
    psnr_y = _words_on_the_photograph(2)
    assert psnr_y("blur", "blur") > psnr_y("blur", "clean") + 0.5
    assert psnr_y("bicubic-aa", "clean") > psnr_y("bicubic-aa", "blur") + 0.2


def test_degradation_words_pay_at_x4_on_a_photograph():
    """The x4 default (24 blocks, ``textsr-clip-s-words2``, ``--as-content-kinds blur``): the words move it.

    Measured here (sample photograph, held-out phrasing): antialiased bicubic, "sharp and clean"
    28.76 dB against 28.50 with "soft and out of focus" (+0.26); blurred, "soft and out of focus"
    28.63 against 28.31 with "sharp and clean" (+0.32); JPEG quality 60, "blocky and
    JPEG-compressed" 26.199 against 26.156 with "sharp and clean". The x4 before its 5500-step
    stage (until 3 Dec 2026, 07:45 UTC) gave +0.28, +0.31 and 26.187 / 26.133; the one before its
    ``--other-content`` stage (until 2 Dec 2026, 11:26 UTC) gave +0.30, +0.27 and 26.177 / 26.110;
    the one before its
    ``--empty-keeps-blur`` stage (until 2 Dec 2026, 08:00 UTC) +0.30, +0.27 and 26.156 / 26.091;
    the one before its blur-only
    stage (until 2 Dec 2026, 05:40 UTC) gave +0.22, +0.39 and 26.089 / 26.076; the one before its
    as-content 0.9 stage +0.34, +0.24 and 26.10 / 26.03; the one before its
    photographs'-noise stage (until late on 1 Dec 2026) +0.34 and +0.19 (28.42 / 28.23), the 16-block
    x4 +0.22 on antialiased bicubic and +0.33 on blur (28.38 / 28.05: the deeper ones take more of
    the blur out without the words), and the 8-block x4 26.04 / 25.86 on JPEG. README, "Held-out
    photographs", has the 34 held-out photographs.
    """
    psnr_y = _words_on_the_photograph(4)
    assert psnr_y("bicubic-aa", "clean") > psnr_y("bicubic-aa", "blur") + 0.15
    assert psnr_y("blur", "blur") > psnr_y("blur", "clean") + 0.25
    assert psnr_y("jpeg", "jpeg") > psnr_y("jpeg", "clean") > 25.95  # the 8-block x4: 25.86 with "clean"


def test_self_ensemble_adds_psnr_to_the_x8_default_on_a_photograph():
    """EDSR+'s geometric self-ensemble on the sample photograph (never trained on) at x8.

    Measured here: +0.07 dB over one pass with the 24-block x8 (one pass 23.99 dB, 24.06 with
    the ensemble; +0.09 before its 3000-step stage of 3 Dec 2026 and before its
    ``--empty-keeps-blur`` stage of 2 Dec 2026, +0.10 before its second plain-bicubic stage,
    +0.09 before its first, +0.10 before its photographs'-noise stage, +0.08
    with the 16-block one, +0.06 with 8 blocks;
    README, "Self-ensemble", has the held-out photographs);
    asked: more than 0.01 dB.
    """
    from napari_textsr.benchmark import degrade_to_uint8
    from napari_textsr.samples import load_sample
    from napari_textsr.training.degradations import named_degradation

    sample = load_sample("photograph")
    hr = sample.image[:96, :144].astype(np.float32) / 255
    lr = degrade_to_uint8(hr, named_degradation("bicubic-aa", 8), "cat")
    upscaler = load_model("default", scale=8)
    scores = {}
    for ensemble in (False, True):
        sr = upscaler.with_self_ensemble(ensemble).upscale(lr, sample.caption).image
        scores[ensemble] = quality_scores(sr.astype(np.float32) / 255, hr, 8).psnr_y
    assert scores[True] > scores[False] + 0.01, scores


@pytest.mark.parametrize("name", ["pdn-x4", "pdn-x8"])
def test_shipped_pdn_beats_bicubic_on_unseen_synthetic_scenes(name):
    """Scenes from a seed training never used, degraded the way training degrades."""
    upscaler = load_model(name)
    scale = upscaler.scale
    gains = []
    for item in synthetic_dataset(4, seed=4242, size=128):
        hr = item.image
        lr = Degradation(scale=scale)(torch.from_numpy(hr).permute(2, 0, 1)[None])[0]
        lr8 = np.round(lr.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        sr = upscaler.upscale(lr8, item.captions[0]).image.astype(np.float32) / 255
        gains.append(
            quality_scores(sr, hr, scale).psnr_y - quality_scores(bicubic_upscale(lr8, scale), hr, scale).psnr_y
        )
    # The realistic-family PDNs were trained on photographs only: on average they still gain on
    # these scenes, but x4 falls 0.6 dB below bicubic on one fine-stripe texture scene (read as
    # aliasing or noise), where the earlier bicubic-only models gained on every scene.
    assert np.mean(gains) > 0.1, gains


@pytest.mark.parametrize("name", ["tgsr-x8", "clipsr-x4"])
def test_other_shipped_models_load_and_run(name):
    upscaler = load_model(name)
    result = upscaler.upscale(np.full((20, 24, 3), 120, np.uint8), "a grey wall")
    assert result.image.shape == (20 * upscaler.scale, 24 * upscaler.scale, 3)
    assert abs(float(result.image.mean()) - 120) < 3  # a flat input stays flat
    assert result.attention


def test_headless_demo_writes_the_upscaled_sample_and_its_maps(tmp_path, capsys):
    import tifffile

    assert main(["demo", "--headless", str(tmp_path)]) == 0
    out = tifffile.imread(tmp_path / "nuclei_lr_x4.tif")
    source = tifffile.imread(tmp_path / "nuclei_lr_input.tif")
    assert out.dtype == np.uint16 and out.shape == (source.shape[0] * 4, source.shape[1] * 4)
    maps = sorted(tmp_path.glob("nuclei_lr_attention_*.png"))
    assert len(maps) == 24  # one per DCM of the default PDN (24 blocks since 1 Dec 2026)
    provenance = json.loads((tmp_path / "nuclei_lr_provenance.json").read_text())
    assert provenance["model"] == "pdn-x4" and provenance["caption"]
    assert "pdn-x4" in capsys.readouterr().out
