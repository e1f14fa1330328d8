import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_textsr.benchmark import VARIANTS, bicubic_upscale, run_benchmark
from napari_textsr.cli import main
from napari_textsr.inference import load_model
from napari_textsr.metrics import quality_scores
from napari_textsr.synthetic import synthetic_dataset


@pytest.fixture(scope="module")
def scenes():
    return synthetic_dataset(3, seed=4, size=48)


def test_report_scores_every_variant_and_bicubic_matches_a_direct_computation(scenes):
    upscaler = load_model("random:pdn:2:tiny")
    report = run_benchmark(upscaler, scenes, dataset="synthetic")
    assert len(report.images) == 3 and report.scale == 2
    first = report.images[0]
    assert set(first.variants) == set(VARIANTS)
    assert first.other_caption != first.caption
    # recompute the bicubic row independently: same degradation, same quantisation
    from napari_textsr.training.degradations import Degradation

    hr = scenes[0].image[:48, :48]
    lr = Degradation(scale=2)(torch.from_numpy(hr).permute(2, 0, 1)[None])[0].permute(1, 2, 0).clamp(0, 1).numpy()
    lr8 = np.round(lr * 255).astype(np.uint8)
    expected = quality_scores(bicubic_upscale(lr8, 2), hr, border=2)
    assert first.variants["bicubic"].scores.psnr_y == pytest.approx(expected.psnr_y, abs=1e-9)
    assert 15 < expected.psnr_y < 60
    assert all(-1 <= v.text_image_similarity <= 1 for v in first.variants.values())
    assert first.seconds > 0 and first.megapixels_per_second > 0
    assert "| true caption |" in report.markdown()
    # Synthetic scenes are also summarised per kind (3 scenes: shapes, textures, glyphs).
    groups = report.psnr_y_by_group()
    assert list(groups) == ["shapes", "textures", "glyphs"] and all(n == 1 for n, _ in groups.values())
    assert groups["shapes"][1]["bicubic"] == pytest.approx(first.variants["bicubic"].scores.psnr_y)
    assert "| textures | 1 |" in report.markdown()


def test_caption_variants_differ_when_fusion_is_active(scenes):
    upscaler = load_model("random:pdn:2:tiny")
    with torch.no_grad():
        for p in upscaler.model.fusion_parameters():
            p.add_(torch.randn_like(p))
    report = run_benchmark(upscaler, scenes[:2], dataset="synthetic")
    v = report.images[0].variants
    assert v["true_caption"].scores.psnr_rgb != v["other_caption"].scores.psnr_rgb


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "--model", "random:pdn:2:tiny", "--synthetic", "2", "--synthetic-size", "48", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())[0]
    assert report["scale"] == 2 and len(report["images"]) == 2
    assert set(report["summary"]) == set(VARIANTS) | {"timing"}
    assert "PSNR Y" in capsys.readouterr().out


def test_cli_pools_several_datasets(tmp_path, capsys):
    import csv

    from PIL import Image

    for k, scene in enumerate(synthetic_dataset(4, seed=5, size=48)):
        folder = tmp_path / f"set{k // 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((scene.image * 255).astype(np.uint8)).save(folder / f"{k}.png")
        with open(folder / "captions.csv", "a", newline="") as fh:
            if k % 2 == 0:
                fh.write("file,caption\n")
            csv.writer(fh).writerow([f"{k}.png", scene.captions[0]])
    code = main(
        ["bench", "--model", "random:pdn:2:tiny", "--data", str(tmp_path / "set0"), "--data", str(tmp_path / "set1")]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "all 4 images, bicubic-aa, PSNR Y (dB): bicubic" in out
    assert "| bicubic-aa | 4 |" in out  # the pooled per-degradation table


def test_cli_needs_data():
    assert main(["bench", "--model", "random:pdn:2:tiny"]) == 1


def test_bench_degradations_right_and_wrong_words_and_worst_image(scenes):
    from napari_textsr.benchmark import degradation_table, degradation_words, degrade_to_uint8
    from napari_textsr.training.degradations import named_degradation

    assert degradation_words(named_degradation("blur", 4)) == ("soft and out of focus", "sharp and clean")
    assert degradation_words(named_degradation("noise", 4)) == ("grainy and noisy", "sharp and clean")
    assert degradation_words(named_degradation("bicubic-aa", 4)) == ("sharp and clean", "soft and out of focus")
    hr = scenes[0].image[:48, :48]
    noisy_a = degrade_to_uint8(hr, named_degradation("noise", 2), "x")
    assert np.array_equal(noisy_a, degrade_to_uint8(hr, named_degradation("noise", 2), "x"))  # seeded by name
    assert not np.array_equal(noisy_a, degrade_to_uint8(hr, named_degradation("noise", 2), "y"))

    upscaler = load_model("random:pdn:2:tiny")
    reports = [run_benchmark(upscaler, scenes, dataset="synthetic", degradation=d) for d in ("jpeg", "box")]
    first = reports[0].images[0]
    assert first.right_words.endswith("; the picture is blocky and JPEG-compressed")
    assert first.wrong_words.endswith("; the picture is sharp and clean")
    worst, where = reports[0].worst_gain()
    gains = [
        i.variants[v].scores.psnr_y - i.variants["bicubic"].scores.psnr_y
        for i in reports[0].images
        for v in ("true_caption", "empty_caption", "other_caption")
    ]
    assert worst == pytest.approx(min(gains)) and " / " in where
    table = degradation_table(reports)
    assert table.count("\n") == 3 and "| jpeg | 3 |" in table and "| box | 3 |" in table
    with pytest.raises(ValueError, match="choose from"):
        run_benchmark(upscaler, scenes, dataset="synthetic", degradation="smudge")


def _photographs():
    from PIL import Image

    from napari_textsr.captioned import CaptionedImage
    from napari_textsr.samples import sample_path

    cat = np.asarray(Image.open(sample_path("cat_lr.png")).convert("RGB"), dtype=np.float32) / 255.0
    return [
        CaptionedImage(image=cat, captions=["a cat"], name="cat.png"),
        CaptionedImage(image=np.ascontiguousarray(cat[:, ::-1]), captions=["a mirrored cat"], name="tac.png"),
    ]


def test_images_whose_lr_pixels_show_heavy_jpeg_go_to_the_jpeg_model():
    from napari_textsr.benchmark import BenchReport

    general, jpeg = load_model("random:pdn:2:tiny"), load_model("random:pdn:2:small")
    items = _photographs()
    routed = run_benchmark(general, items, dataset="cats", degradation="jpeg", jpeg_upscaler=jpeg)
    assert [i.model for i in routed.images] == ["random:pdn:2:small"] * 2
    assert routed.model["name"] == "random:pdn:2:tiny"
    assert "2 of 2 images (pixels showing JPEG quality <= 60) upscaled by random:pdn:2:small" in routed.markdown()
    alone = run_benchmark(general, items, dataset="cats", degradation="jpeg")
    assert routed.images[0].variants["true_caption"].scores != alone.images[0].variants["true_caption"].scores
    sharp = run_benchmark(general, items, dataset="cats", degradation="bicubic-aa", jpeg_upscaler=jpeg)
    assert [i.model for i in sharp.images] == ["random:pdn:2:tiny"] * 2 and "upscaled by" not in sharp.markdown()
    old = routed.to_dict()
    for image in old["images"]:  # reports from before the routing name no model per image
        del image["model"]
    assert BenchReport.from_dict(old).images[0].model == ""
    with pytest.raises(ValueError, match="the JPEG model is x4"):
        run_benchmark(general, items, dataset="cats", jpeg_upscaler=load_model("random:pdn:4:tiny"))


def test_cli_bench_of_the_default_routes_heavy_jpeg_as_upscale_does(tmp_path, capsys, jpeg_model_weights):
    from PIL import Image

    folder = tmp_path / "cats"
    folder.mkdir()
    for item in _photographs():
        Image.fromarray(np.round(item.image * 255).astype(np.uint8)).save(folder / item.name)
    (folder / "captions.csv").write_text("file,caption\ncat.png,a cat\ntac.png,a mirrored cat\n")
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "default", "--scale", "2", "--data", str(folder), "--degradation", "jpeg"]
    assert main([*args, "--json", str(out)]) == 0
    assert "LR images whose pixels show JPEG quality <= 60 are upscaled by pdn-x2-jpeg" in capsys.readouterr().out
    assert [i["model"] for i in json.loads(out.read_text())[0]["images"]] == ["pdn-x2-jpeg"] * 2
    assert main(["bench", "--table", str(out)]) == 0  # the saved report's table says so too
    table = capsys.readouterr().out
    assert (
        "model: pdn-x2;" in table
        and "2 of 2 images (pixels showing JPEG quality <= 60) upscaled by pdn-x2-jpeg" in table
    )
    assert main([*args[:2], str(jpeg_model_weights / "pdn-x2.textsr.safetensors"), *args[5:], "--json", str(out)]) == 0
    assert "are upscaled by" not in capsys.readouterr().out  # a model named by path is benched as it is
    assert [i["model"] for i in json.loads(out.read_text())[0]["images"]] == ["pdn-x2"] * 2


def test_table_from_a_saved_report_round_trips(scenes, tmp_path, capsys):
    """`textsr bench --table REPORT.json` prints the same pooled table the run printed."""
    from napari_textsr.benchmark import BenchReport, degradation_table

    upscaler = load_model("random:pdn:2:tiny")
    reports = [run_benchmark(upscaler, scenes, dataset="synthetic", degradation=d) for d in ("noise", "bicubic")]
    path = tmp_path / "report.json"
    path.write_text(json.dumps([r.to_dict() for r in reports]))
    again = [BenchReport.from_dict(r) for r in json.loads(path.read_text())]
    assert again[0].images[0].lr_shape == reports[0].images[0].lr_shape
    assert again[1].worst_gain() == reports[1].worst_gain()
    assert main(["bench", "--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert degradation_table(reports) in out and "| noise | 3 |" in out
    assert main(["bench"]) == 1  # neither --model nor --table
    old = [r.to_dict() for r in reports]
    for image in old[0]["images"]:  # a report from before the right/wrong-words variants
        del image["right_words"], image["variants"]["right_words"]
    path.write_text(json.dumps(old))
    assert main(["bench", "--table", str(path)]) == 1
    assert "not a bench report of this version" in capsys.readouterr().err


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    "report", sorted(p.name for p in RESULTS.glob("bench-pdn-x*-real*.json")), ids=lambda name: name[:-5]
)
def test_readme_held_out_tables_are_the_committed_reports(report):
    """Every held-out PDN table in README.md is what `textsr bench --table` prints from the report it names."""
    from napari_textsr.benchmark import BenchReport, degradation_table

    readme = README.read_text(encoding="utf-8")
    assert f"docs/results/{report}" in readme
    table = degradation_table([BenchReport.from_dict(r) for r in json.loads((RESULTS / report).read_text())])
    assert table in readme


def test_every_report_readme_names_exists():
    import re

    named = set(re.findall(r"docs/results/[\w./-]+\.json", README.read_text(encoding="utf-8")))
    assert named and not [n for n in named if not (README.parent / n).exists()]
