"""The measuring helpers of the benchmark scripts (benchmarks/ is not a package: loaded by path)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_large_output_peak_is_each_childs_own():
    bench = _load("bench_large_output")
    # This test's own process (pytest, numpy, torch) holds more than the small
    # child ever does; a child's ru_maxrss would start from it at the fork.
    ballast = b"p" * (200 * 2**20)
    _seconds, big = bench.run_measured(["-c", "import sys; b = b'x' * (int(sys.argv[1]) * 2**20)", "300"])
    _seconds, small = bench.run_measured(["-c", "pass"])
    assert 300 * 2**20 <= big < 400 * 2**20
    assert small < 60 * 2**20  # a bare interpreter: about 10 MiB
    # -m runs the module as __main__ with its arguments.
    _seconds, peak = bench.run_measured(["-m", "platform", "--terse"])
    assert peak < 60 * 2**20
    with pytest.raises(subprocess.CalledProcessError):
        bench.run_measured(["-c", "raise SystemExit(3)"])
    with pytest.raises(ValueError, match="-m MODULE or -c CODE"):
        bench.run_measured(["script.py"])
    del ballast


def test_degradation_word_cosines_cover_the_six_pairs():
    bench = _load("bench_degradation_words")
    cosines = bench.pair_cosines("textsr-tiny:none", ["red circles on black", "green filaments"])
    assert len(cosines) == 6 and ("noise", "clean") in cosines
    assert all(-1.0 <= c < 0.9999 for c in cosines.values())  # the words move the embedding, a little at least


def test_gui_stack_sampler_reads_a_thread_from_faulthandler_without_holding_frames():
    """The --why sampler reads stacks from faulthandler's text: holding frame objects kept
    napari's painters alive into the sampler thread (crashes in the GUI benchmark)."""
    import faulthandler
    import tempfile
    import threading

    bench = _load("bench_gui_responsiveness")

    def innermost_function_here() -> str:
        with tempfile.TemporaryFile() as dump:
            faulthandler.dump_traceback(dump.fileno(), all_threads=True)
            dump.seek(0)
            return dump.read().decode()

    text = innermost_function_here()
    stack = bench.thread_stack(text, threading.main_thread().ident)
    assert stack[-1][2] == "innermost_function_here" and stack[-1][0] == __file__
    assert stack[-2][2] == "test_gui_stack_sampler_reads_a_thread_from_faulthandler_without_holding_frames"
    assert bench.thread_stack(text, 12345) == []  # a thread that is not there


def test_caption_sweep_scores_each_template_against_bicubic_and_the_first_output():
    from napari_textsr.inference import load_model
    from napari_textsr.synthetic import synthetic_dataset

    bench = _load("bench_caption_sweep")
    upscaler = load_model("random:pdn:2:tiny")
    scenes = synthetic_dataset(2, seed=4, size=48)
    scores = bench.sweep(upscaler, scenes, "noise", ["{c}", "{c}", "", "{c}, noisy"])
    assert [s.template for s in scores] == ["{c}", "{c}", "", "{c}, noisy"]
    assert scores[0].moved == 0.0 and scores[1].moved == 0.0  # the same caption: the same output
    assert scores[1].gain_db == scores[0].gain_db
    assert scores[2].moved > 0.0 and scores[3].moved > 0.0  # another caption moves a text-conditioned model
    assert all(-20.0 < s.worst_db <= s.gain_db < 20.0 for s in scores)
    # A pipeline object instead of a name: JPEG quality 60 is the named "jpeg" way.
    from napari_textsr.training.degradations import Degradation

    same = bench.sweep(upscaler, scenes, Degradation(scale=2, jpeg_quality=60), ["{c}", ""])
    assert same == bench.sweep(upscaler, scenes, "jpeg", ["{c}", ""])
    assert same != bench.sweep(upscaler, scenes, Degradation(scale=2, jpeg_quality=30), ["{c}", ""])
    with pytest.raises(ValueError, match="at least one caption template"):
        bench.sweep(upscaler, scenes, "noise", [])


def test_caption_sweep_with_file_words_says_jpeg_where_the_lr_pixels_show_it():
    from napari_textsr.inference import load_model
    from napari_textsr.synthetic import synthetic_dataset

    bench = _load("bench_caption_sweep")
    upscaler = load_model("random:pdn:2:tiny")
    scenes = synthetic_dataset(2, seed=4, size=192)  # LR 96x96: enough 8x8 blocks to tell
    auto, said = bench.sweep(upscaler, scenes, "jpeg", ["", "JPEG-compressed"], file_words=True)
    assert auto.words_added == 2 and said.words_added == 0  # the caption that says it is kept
    assert auto.gain_db == said.gain_db and auto.worst_db == said.worst_db
    plain = bench.sweep(upscaler, scenes, "jpeg", [""])[0]
    assert plain.words_added == 0 and plain.gain_db != auto.gain_db
    (clean,) = bench.sweep(upscaler, scenes, "noise", [""], file_words=True)  # never a JPEG: nothing said
    assert clean == bench.sweep(upscaler, scenes, "noise", [""])[0]
    # The model trained for JPEG inputs takes the LRs that show it, as textsr upscale routes the default.
    other = load_model("random:pdn:2:small")
    routed = bench.sweep(upscaler, scenes, "jpeg", [""], jpeg_upscaler=other)[0]
    assert routed == bench.sweep(other, scenes, "jpeg", [""])[0] and routed.words_added == 0
    assert bench.sweep(upscaler, scenes, "noise", [""], jpeg_upscaler=other)[0] == clean


def test_caption_sweep_selects_held_out_images_by_name_and_names_the_missing_ones():
    from napari_textsr.synthetic import synthetic_dataset

    bench = _load("bench_caption_sweep")
    scenes = synthetic_dataset(3, seed=4, size=48)
    names = [scene.name for scene in scenes]
    assert [item.name for item in bench.select_images(scenes, [names[2], names[0]])] == [names[0], names[2]]
    with pytest.raises(ValueError, match="not among the held-out images: nowhere.png"):
        bench.select_images(scenes, [names[1], "nowhere.png"])


def test_jpeg_from_pixels_bench_counts_detections_per_way():
    from napari_textsr.synthetic import synthetic_dataset
    from napari_textsr.training.degradations import Degradation

    bench = _load("bench_jpeg_from_pixels")
    scenes = [s for s in synthetic_dataset(6, seed=4, size=192) if "textures" in s.name]  # unclipped detail
    assert len(scenes) == 2
    compressed = bench.detections(scenes, Degradation(scale=2, jpeg_quality=50))
    assert compressed == {50: 2}
    assert bench.detections(scenes, Degradation(scale=2)) == {None: 2}
    assert bench.detections(scenes, Degradation(scale=2, jpeg_quality=50), offset=(3, 5)) == {50: 2}  # a crop
    line = bench.format_line("x2 jpeg-q50", compressed)
    assert line == "x2 jpeg-q50: JPEG seen in 2 of 2; estimated qualities 50: 2"
    assert bench.format_line("x2 box", bench.detections(scenes, Degradation(scale=2, resize="area"))).endswith(
        "JPEG seen in 0 of 2; estimated qualities none"
    )


def test_high_frequency_share_reads_aliasing_and_smoothness():
    bench = _load("bench_aliasing_evidence")
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    white = rng.integers(0, 256, size=(128, 128, 3)).astype(np.uint8)
    assert abs(bench.high_frequency_share(white)) < 0.1  # a flat spectrum: equal power in both bands
    hr = torch.from_numpy(rng.random((1, 3, 256, 256), dtype=np.float32))
    hr = F.avg_pool2d(hr, 3, stride=1, padding=1)  # some detail above the LR's Nyquist frequency

    def lr(antialias: bool) -> np.ndarray:
        small = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=antialias)[0]
        return (small.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    aliased, smooth = bench.high_frequency_share(lr(False)), bench.high_frequency_share(lr(True))
    assert aliased > smooth + 0.3, (aliased, smooth)


def test_two_x2_steps_route_the_first_by_the_pixels_and_make_x4():
    import io

    from PIL import Image

    from napari_textsr.inference import load_model

    bench = _load("bench_cascade")
    rng = np.random.default_rng(0)
    smooth = np.clip(rng.normal(128, 40, (6, 6, 3)), 0, 255).astype(np.uint8)
    lr = np.asarray(Image.fromarray(smooth).resize((48, 48), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(lr).save(buffer, format="JPEG", quality=40)
    compressed = np.asarray(Image.open(buffer).convert("RGB"))
    assert bench.first_step_model(lr) == "pdn-x2"
    assert bench.first_step_model(compressed) == "pdn-x2-jpeg"
    x2 = load_model("pdn-x2", scale=2)
    out = bench.two_steps(x2, x2, lr[:12, :10], "a grey blur")
    assert out.shape == (48, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, x2.upscale(x2.upscale(lr[:12, :10], "a grey blur").image, "a grey blur").image)
    with pytest.raises(ValueError, match="two x2 models"):
        bench.two_steps(x2, load_model("default", scale=4), lr, "")


def test_profile_train_step_times_and_counts_a_recipe_fine_tune(tmp_path):
    bench = _load("profile_train_step")
    out = tmp_path / "prof.json"
    assert bench.main(["--init", "pdn-x2", "--data", "synthetic:6:0:64", "--batch-size", "2", "--patch", "8",
                       "--threads", "1", "--warmup", "1", "--timed", "2", "--profiled", "1", "--rows", "3",
                       "--json", str(out)]) == 0  # fmt: skip
    import json

    result = json.loads(out.read_text())
    assert (result["init"], result["batch_size"], result["lr_patch"]) == ("pdn-x2", 2, 8)
    assert result["ms_per_step"] > 0 and result["images_per_second"] == pytest.approx(
        2000 / result["ms_per_step"], 0.01
    )
    # A 16-block PDN's forward, backward, Adam and weight average: thousands of operations per step.
    assert result["aten_ops_per_step"] > 1000
    assert len(result["self_cpu"]) == 3 and "self_cuda" not in result
    assert result["batch_draw_ms"] > 0
    assert result["images_per_second_per_batch_worker"] == pytest.approx(2000 / result["batch_draw_ms"], 0.01)
