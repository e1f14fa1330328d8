"""Measurement consistency with the resize that made the input (napari_textsr.consistency).

Back-projecting with antialiased bicubic alone, whatever made the input, was
the reported kind of failure: on an image made small without antialiasing it
takes the output 2-3 dB below the network's own (README, "Measurement
consistency"). These tests pin the kernels, the words that choose them, and
that the matched kernel is the one that pays.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from napari_textsr.benchmark import BenchReport, degrade_to_uint8, run_benchmark
from napari_textsr.cli import main
from napari_textsr.consistency import (
    CONSISTENCY_KERNELS,
    BackProjection,
    back_project,
    consistency_caveat,
    downsample,
    kernel_for_caption,
    resolve_kernel,
    unmodelled_degradations,
    upsample,
)
from napari_textsr.inference import load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.training.degradations import RESIZE_KERNELS, Degradation, named_degradation


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("kernel", list(RESIZE_KERNELS))
def test_back_projection_reproduces_the_input_with_every_kernel(kernel, scale):
    torch.manual_seed(0)
    hr = torch.rand(1, 3, 16 * scale, 16 * scale)
    lr = downsample(hr, scale, kernel)
    start = upsample(lr, scale)
    corrected, residual = back_project(lr, start, scale, BackProjection(kernel=kernel))
    assert float(residual.abs().max()) > 1e-3  # bicubic upsampling alone does not explain the input
    assert float((lr - downsample(corrected, scale, kernel)).abs().max()) < 2e-3


def test_downsample_is_the_training_degradations_resize():
    torch.manual_seed(1)
    hr = torch.rand(1, 3, 32, 32)
    binned = hr.numpy().reshape(1, 3, 8, 4, 8, 4).mean(axis=(3, 5))  # binning: the mean of each 4x4 block
    np.testing.assert_allclose(downsample(hr, 4, "area").numpy(), binned, atol=1e-6)
    for kernel in RESIZE_KERNELS:
        made = Degradation(scale=4, resize=kernel)(hr, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(downsample(hr, 4, kernel).clamp(0, 1), made, atol=1e-6, rtol=0)  # clipped to [0, 1]


def test_the_caption_words_choose_the_kernel():
    assert kernel_for_caption("") == "bicubic-aa"
    assert kernel_for_caption("a cat on a sofa") == "bicubic-aa"
    assert kernel_for_caption("nuclei, binned") == "area"
    assert kernel_for_caption("Pixelated street at night") == "area"
    assert kernel_for_caption("a roof with jagged edges") == "bicubic"
    assert kernel_for_caption("an ALIASED resize of a fence") == "bicubic"
    assert kernel_for_caption("software screenshot") == "bicubic-aa"  # whole words only
    assert kernel_for_caption("a cat", default="area") == "area"
    with pytest.raises(ValueError, match="names two ways"):
        kernel_for_caption("binned and aliased")
    assert resolve_kernel("auto", "coarse pixels of a leaf") == "area"
    assert resolve_kernel("bilinear", "binned") == "bilinear"  # an explicit kernel wins over words
    with pytest.raises(ValueError, match="unknown consistency kernel 'lanczos'"):
        resolve_kernel("lanczos")
    with pytest.raises(ValueError, match="unknown resize kernel"):
        BackProjection(kernel="lanczos")
    assert CONSISTENCY_KERNELS == ("auto", *RESIZE_KERNELS)
    assert unmodelled_degradations("a soft toy, grainy") == ["blur", "noise"]
    assert unmodelled_degradations("a cat, sharp and clean") == []
    assert consistency_caveat("a cat", "bicubic-aa") is None
    assert "blurred" in consistency_caveat("a cat, out of focus", "area") and "(area)" in consistency_caveat(
        "a cat, out of focus", "area"
    )


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    from PIL import Image

    from napari_textsr.samples import sample_path

    image = np.asarray(Image.open(sample_path("cat_lr.png")).convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(image[:96, :144])


def _psnr_y(upscaler, lr, hr, scale, caption, consistency) -> float:
    out = upscaler.upscale(lr, caption, consistency=consistency).image.astype(np.float32) / 255.0
    return quality_scores(out, hr, border=scale).psnr_y


def test_the_matched_kernel_pays_and_the_wrong_one_costs(cat):
    """Bundled pdn-x2 on a crop of the cat sample made small three ways (values measured on it in the comments)."""
    upscaler = load_model("pdn-x2", device="cpu")
    aliased = degrade_to_uint8(cat, named_degradation("bicubic", 2), "cat")
    none = _psnr_y(upscaler, aliased, cat, 2, "a cat", False)
    matched = _psnr_y(upscaler, aliased, cat, 2, "a cat", "bicubic")
    wrong = _psnr_y(upscaler, aliased, cat, 2, "a cat", "bicubic-aa")
    assert matched > none  # measured 34.28 vs 34.09 dB (this crop, 2026-12-08)
    assert matched - wrong > 1.5  # measured 2.71 dB: antialiased back-projection of an aliased input
    # The words choose it: "jagged" -> plain bicubic.
    assert _psnr_y(upscaler, aliased, cat, 2, "a cat, jagged", True) == pytest.approx(
        _psnr_y(upscaler, aliased, cat, 2, "a cat, jagged", "bicubic")
    )

    binned = degrade_to_uint8(cat, named_degradation("box", 2), "cat")
    area = _psnr_y(upscaler, binned, cat, 2, "a cat", "area")
    assert area > _psnr_y(upscaler, binned, cat, 2, "a cat", False) + 0.1  # measured +0.20 dB
    assert area > _psnr_y(upscaler, binned, cat, 2, "a cat", "bicubic-aa") + 0.3  # measured +0.47 dB

    sharp = degrade_to_uint8(cat, named_degradation("bicubic-aa", 2), "cat")
    assert (
        _psnr_y(upscaler, sharp, cat, 2, "a cat", True) > _psnr_y(upscaler, sharp, cat, 2, "a cat", False) + 0.3
    )  # measured +0.49 dB


def test_engine_records_the_kernel_and_tiles_exactly(tiny_encoder):
    from napari_textsr.inference import Upscaler
    from napari_textsr.models import create_model

    torch.manual_seed(0)
    model = create_model("pdn", 4, "tiny", prompt_dim=tiny_encoder.embed_dim)
    upscaler = Upscaler(model, tiny_encoder, back_projection=BackProjection(iterations=3))
    rng = np.random.default_rng(0)
    image = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 1, 192, 192), dtype=np.float32)), 2)
    image = image[0, 0].numpy()
    raw = upscaler.upscale(image, "cells", tile=0)
    assert raw.consistency_kernel is None and "consistency_kernel" not in raw.provenance()
    for kernel in ("area", "bicubic"):
        whole = upscaler.upscale(image, "cells", tile=0, consistency=kernel)
        tiled = upscaler.upscale(image, "cells", tile=48, consistency=kernel)
        assert whole.consistency_kernel == kernel and whole.provenance()["consistency_kernel"] == kernel
        np.testing.assert_allclose(tiled.image, whole.image, atol=1e-4, rtol=0)
        down = downsample(torch.from_numpy(whole.image)[None, None], 4, kernel)[0, 0].numpy()
        down_raw = downsample(torch.from_numpy(raw.image)[None, None], 4, kernel)[0, 0].numpy()
        assert np.sqrt(np.mean((down - image) ** 2)) < 0.5 * np.sqrt(np.mean((down_raw - image) ** 2))
    assert upscaler.upscale(image, "binned cells", tile=0, consistency=True).consistency_kernel == "area"
    assert upscaler.upscale(image, "cells", tile=0, consistency="auto").consistency_kernel == "bicubic-aa"
    area_default = Upscaler(model, tiny_encoder, back_projection=BackProjection(kernel="area"))
    assert area_default.upscale(image, "cells", tile=0, consistency=True).consistency_kernel == "area"
    with pytest.raises(ValueError, match="unknown consistency kernel"):
        upscaler.upscale(image, "cells", consistency="lanczos")
    with pytest.raises(TypeError, match="bool or a kernel name"):
        upscaler.upscale(image, "cells", consistency=3)
    with pytest.warns(UserWarning, match="the image is noisy and JPEG-compressed: measurement consistency"):
        upscaler.upscale(image, "grainy cells, JPEG-compressed", tile=0, consistency=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upscaler.upscale(image, "grainy cells, JPEG-compressed", tile=0)  # no back-projection, no warning
        upscaler.upscale(image, "sharp cells", tile=0, consistency=True)
    results = upscaler.upscale_captions(image, ["cells", "pixelated cells"], tile=0, consistency=True)
    assert [r.consistency_kernel for r in results] == ["bicubic-aa", "area"]


def test_cli_consistency_kernel(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    base = ["upscale", str(tmp_path / "in.png"), "--model", "random:pdn:2:tiny", "--quiet"]
    assert main([*base[:2], str(tmp_path / "a.png"), *base[2:], "--consistency-kernel", "area"]) == 0
    assert "(resize: area)" in capsys.readouterr().out
    assert main([*base[:2], str(tmp_path / "b.png"), *base[2:], "--consistency", "--caption", "a cat, jagged"]) == 0
    assert "(resize: bicubic)" in capsys.readouterr().out
    assert main([*base[:2], str(tmp_path / "c.png"), *base[2:]]) == 0
    assert "consistency error" not in capsys.readouterr().out
    code = main([*base[:2], str(tmp_path / "d.png"), *base[2:], "--consistency-kernel", "matched"])
    assert code != 0 and not (tmp_path / "d.png").exists()
    assert "unknown kernel 'matched'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:the caption says the image is")  # the wrong-words variant names blur
def test_bench_back_projects_with_the_degradations_own_resize(tmp_path, capsys):
    from napari_textsr.synthetic import synthetic_dataset

    scenes = synthetic_dataset(2, seed=4, size=48)
    upscaler = load_model("random:pdn:2:tiny")
    plain = run_benchmark(upscaler, scenes, dataset="synthetic", degradation="box")
    matched = run_benchmark(upscaler, scenes, dataset="synthetic", degradation="box", consistency="matched")
    area = run_benchmark(upscaler, scenes, dataset="synthetic", degradation="box", consistency="area")
    assert matched.consistency == "matched" and "back-projected (matched)" in matched.markdown()
    assert matched.mean("true_caption", "psnr_y") == pytest.approx(area.mean("true_caption", "psnr_y"))
    assert matched.mean("true_caption", "psnr_y") != pytest.approx(plain.mean("true_caption", "psnr_y"))
    assert matched.mean("bicubic", "psnr_y") == pytest.approx(plain.mean("bicubic", "psnr_y"))  # bicubic untouched
    again = BenchReport.from_dict(json.loads(json.dumps(matched.to_dict())))
    assert again.consistency == "matched" and "consistency" not in plain.to_dict()
    with pytest.raises(ValueError, match="unknown consistency kernel"):
        run_benchmark(upscaler, scenes, dataset="synthetic", consistency="lanczos")

    folder = tmp_path / "data"
    folder.mkdir()
    code = main(["bench", "--synthetic", "2", "--synthetic-size", "48", "--model", "random:pdn:2:tiny",
                 "--consistency-kernel", "nearest"])  # fmt: skip
    assert code != 0 and "unknown kernel 'nearest'" in capsys.readouterr().err


def test_cli_help_names_every_kernel(capsys):
    for command in ("upscale", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in CONSISTENCY_KERNELS), command
    assert "matched" in text  # bench's extra choice


def test_cli_prints_warnings_as_one_line(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(4)
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    argv = ["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--model", "random:pdn:2:tiny"]
    argv += ["--caption", "a grainy cat", "--consistency", "--quiet", "--threads", "1"]
    done = subprocess.run([sys.executable, "-m", "napari_textsr", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "textsr upscale: warning: the caption says the image is noisy: measurement consistency" in done.stderr
    assert "UserWarning" not in done.stderr and "inference.py" not in done.stderr
