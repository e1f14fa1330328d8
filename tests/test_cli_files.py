"""``textsr upscale`` with real files: issue 10 rows 7, 8, 11, 12, batch folders and streamed output."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_textsr import inference
from napari_textsr.cli import main
from napari_textsr.imageio import read_image_file, read_image_series

MODEL = "random:pdn:2:tiny"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model (i.e. starts the work)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded: the check came too late")

    monkeypatch.setattr(inference, "load_model", refuse)


def test_row7_cli_divides_the_pixel_size_and_keeps_unit_and_z_spacing(tmp_path, rng):
    stack = rng.integers(0, 4000, size=(2, 12, 14), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "in.tif",
        stack,
        imagej=True,
        resolution=(5.0, 5.0),
        metadata={"axes": "ZYX", "unit": "micron", "spacing": 0.5},
    )
    assert (
        main(
            [
                "upscale",
                str(tmp_path / "in.tif"),
                str(tmp_path / "out.tif"),
                "--caption",
                "nuclei",
                "--model",
                "random:pdn:4:tiny",
                "--quiet",
            ]
        )
        == 0
    )
    out = read_image_file(tmp_path / "out.tif")
    assert out.data.shape == (2, 48, 56) and out.data.dtype == np.uint16
    assert out.spacing == pytest.approx({"X": 0.05, "Y": 0.05, "Z": 0.5})
    assert out.units == {"X": "µm", "Y": "µm", "Z": "µm"}
    assert out.provenance["caption"] == "nuclei" and out.provenance["scale"] == 4
    assert out.provenance["model"] == "random:pdn:4:tiny"


def test_row8_every_series_is_upscaled_into_one_tif(tmp_path):
    small = np.full((10, 10), 50, np.uint8)
    large = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(small).save(tmp_path / "mp.tif", save_all=True, append_images=[Image.fromarray(large)])
    assert main(["upscale", str(tmp_path / "mp.tif"), str(tmp_path / "out.tif"), "--model", MODEL, "--quiet"]) == 0
    series = read_image_series(tmp_path / "out.tif")
    assert [s.data.shape for s in series] == [(20, 20), (24, 32)]
    expected = inference.load_model(MODEL, device="cpu").upscale(large, "").image
    np.testing.assert_array_equal(series[1].data, expected)
    assert all(s.provenance["scale"] == 2 for s in series)
    # A format holding one image refuses before any work.
    assert main(["upscale", str(tmp_path / "mp.tif"), str(tmp_path / "out.png"), "--model", MODEL, "--quiet"]) == 1


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("out.xyz", lambda: np.zeros((16, 16), np.uint8), "cannot write '.xyz'"),
        ("out.jpg", lambda: np.zeros((16, 16), np.uint16), "JPEG holds 8-bit grey or RGB images, not uint16 grey"),
    ],
)
def test_row11_unwritable_output_is_refused_before_any_work(tmp_path, capsys, no_model, name, make, message):
    tifffile.imwrite(tmp_path / "in.tif", make())
    assert main(["upscale", str(tmp_path / "in.tif"), str(tmp_path / name), "--model", MODEL]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / name).exists()


def test_row12_hard_link_output_is_refused_and_the_input_kept(tmp_path, capsys, no_model, rng):
    image = rng.integers(0, 255, size=(16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    (tmp_path / "link.tif").hardlink_to(tmp_path / "in.tif")
    assert main(["upscale", str(tmp_path / "in.tif"), str(tmp_path / "link.tif"), "--model", MODEL]) == 1
    assert "same file" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "in.tif"), image)


def test_batch_folder_skips_non_images_and_reports_one_failure(tmp_path, capsys, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)).save(folder / "a.png")
    tifffile.imwrite(folder / "b.tif", rng.integers(0, 60000, size=(10, 14), dtype=np.uint16))
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an image")
    code = main(["upscale", str(folder), "--out-dir", str(tmp_path / "out"), "--model", MODEL, "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.tif"]
    assert read_image_file(tmp_path / "out" / "b.tif").data.shape == (20, 28)
    assert "skipped" in captured.err and "notes.txt" in captured.err
    assert "failed" in captured.err and "broken.png" in captured.err
    assert "2 written" in captured.out and "1 skipped, 1 failed" in captured.out
    # A glob pattern, with the output format chosen.
    code = main(
        [
            "upscale",
            str(folder / "*.png"),
            "--out-dir",
            str(tmp_path / "g"),
            "--format",
            "tif",
            "--model",
            MODEL,
            "--quiet",
        ]
    )
    assert code == 1 and sorted(p.name for p in (tmp_path / "g").iterdir()) == ["a.tif"]


def test_streamed_output_equals_the_in_memory_one(tmp_path, rng):
    image = rng.integers(0, 255, size=(40, 36, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    common = ["--model", MODEL, "--tile", "16", "--quiet", "--caption", "a cat"]
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "mem.tif"), *common]) == 0
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "tiled.tif"), "--stream", *common]) == 0
    with tifffile.TiffFile(tmp_path / "tiled.tif") as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled
    streamed, in_memory = read_image_file(tmp_path / "tiled.tif"), read_image_file(tmp_path / "mem.tif")
    np.testing.assert_array_equal(streamed.data, in_memory.data)
    assert streamed.provenance["caption"] == "a cat" and streamed.provenance["scale"] == 2


def _jpeg(path, rng, quality):
    Image.fromarray(rng.integers(0, 256, size=(12, 14, 3), dtype=np.uint8)).save(path, quality=quality)


def test_a_jpeg_input_of_low_quality_gets_the_jpeg_words_in_its_caption(tmp_path, rng, capsys):
    _jpeg(tmp_path / "in.jpg", rng, 60)
    args = ["upscale", str(tmp_path / "in.jpg"), "--model", MODEL, "--caption", "a cat"]
    assert main([args[0], args[1], str(tmp_path / "auto.png"), *args[2:]]) == 0
    printed = capsys.readouterr().out
    assert "caption 'a cat, JPEG-compressed': the input is a JPEG of quality 60" in printed
    assert read_image_file(tmp_path / "auto.png").provenance["caption"] == "a cat, JPEG-compressed"
    # The same pixels as saying it by hand; --no-file-words keeps the caption as typed, and another output.
    said = ["upscale", args[1], str(tmp_path / "said.png"), "--model", MODEL, "--caption", "a cat, JPEG-compressed"]
    assert main([*said, "--quiet"]) == 0
    assert main([*args[:1], args[1], str(tmp_path / "typed.png"), *args[2:], "--no-file-words", "--quiet"]) == 0
    auto, typed = read_image_file(tmp_path / "auto.png"), read_image_file(tmp_path / "typed.png")
    np.testing.assert_array_equal(auto.data, read_image_file(tmp_path / "said.png").data)
    assert typed.provenance["caption"] == "a cat" and not np.array_equal(auto.data, typed.data)


def test_a_png_of_a_decoded_low_quality_jpeg_gets_the_jpeg_words_from_its_pixels(tmp_path, capsys):
    from napari_textsr.samples import sample_path

    photograph = Image.open(sample_path("cat_lr.png")).convert("RGB")  # never compressed
    photograph.save(tmp_path / "frame.jpg", quality=45)
    Image.open(tmp_path / "frame.jpg").save(tmp_path / "frame.png")  # a video frame or screenshot kept as PNG
    photograph.save(tmp_path / "clean.png")
    out = tmp_path / "out.png"
    assert main(["upscale", str(tmp_path / "frame.png"), str(out), "--model", MODEL, "--caption", "a cat"]) == 0
    printed = capsys.readouterr().out
    assert (
        "caption 'a cat, JPEG-compressed': the input's 8x8 blocks show JPEG compression of quality about 45" in printed
    )
    provenance = read_image_file(out).provenance
    assert provenance["caption"] == "a cat, JPEG-compressed"
    assert provenance["input_jpeg_quality"] == 45 and provenance["input_jpeg_quality_from"] == "pixels"
    assert main(["upscale", str(tmp_path / "clean.png"), str(tmp_path / "clean_x2.png"), "--model", MODEL]) == 0
    assert "JPEG" not in capsys.readouterr().out
    provenance = read_image_file(tmp_path / "clean_x2.png").provenance
    assert provenance["caption"] == "" and "input_jpeg_quality" not in provenance
    # A caption that already says how the picture was taken is kept, and the line says why.
    said = ["upscale", str(tmp_path / "frame.png"), str(tmp_path / "said.png"), "--model", MODEL, "--caption"]
    assert main([*said, "a blurry cat"]) == 0
    assert "quality about 45; the caption already says how the image was taken" in capsys.readouterr().out
    assert read_image_file(tmp_path / "said.png").provenance["caption"] == "a blurry cat"


def test_the_default_model_of_a_heavy_jpeg_input_is_the_one_trained_for_jpeg_inputs(
    tmp_path, capsys, jpeg_model_weights
):
    from napari_textsr.samples import sample_path

    photograph = Image.open(sample_path("cat_lr.png")).convert("RGB")
    photograph.save(tmp_path / "frame.jpg", quality=45)
    Image.open(tmp_path / "frame.jpg").save(tmp_path / "frame.png")  # the pixels say it, not the file
    photograph.save(tmp_path / "clean.png")
    photograph.save(tmp_path / "light.jpg", quality=90)
    models = {}
    for name in ("frame.png", "clean.png", "light.jpg", "frame.jpg"):
        out = tmp_path / f"out-{name}.png"
        assert main(["upscale", str(tmp_path / name), str(out), "--scale", "2", "--quiet"]) == 0
        models[name] = read_image_file(out).provenance["model"]
    assert models == {
        "frame.png": "pdn-x2-jpeg",
        "clean.png": "pdn-x2",
        "light.jpg": "pdn-x2",
        "frame.jpg": "pdn-x2-jpeg",
    }
    # Named, the default is used as named; the caption as typed keeps the model choice.
    named = ["upscale", str(tmp_path / "frame.png"), str(tmp_path / "named.png"), "--model", "pdn-x2", "--quiet"]
    assert main(named) == 0 and read_image_file(tmp_path / "named.png").provenance["model"] == "pdn-x2-jpeg"
    path = str(jpeg_model_weights / "pdn-x2.textsr.safetensors")
    assert main([*named[:3], "--model", path, "--quiet"]) == 0
    assert read_image_file(tmp_path / "named.png").provenance["model"] == "pdn-x2"
    typed = ["upscale", str(tmp_path / "frame.png"), str(tmp_path / "typed.png"), "--scale", "2", "--no-file-words"]
    assert main([*typed, "--quiet"]) == 0
    provenance = read_image_file(tmp_path / "typed.png").provenance
    assert provenance["model"] == "pdn-x2-jpeg" and provenance["caption"] == ""
    assert provenance["input_jpeg_quality"] == 45
    # A folder: each file gets its own model.
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("frame.png", "clean.png"):
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    assert main(["upscale", str(folder), "--out-dir", str(tmp_path / "b"), "--scale", "2", "--quiet"]) == 0
    assert read_image_file(tmp_path / "b" / "frame.png").provenance["model"] == "pdn-x2-jpeg"
    assert read_image_file(tmp_path / "b" / "clean.png").provenance["model"] == "pdn-x2"
    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "[default at x2]" in listing
    assert "[default at x2 for inputs JPEG-compressed at quality <= 60]" in listing


@pytest.mark.parametrize(("name", "quality", "caption"), [("in.jpg", 75, "a cat"), ("in.png", None, "a cat")])
def test_high_quality_jpeg_and_other_files_keep_the_caption(tmp_path, rng, capsys, name, quality, caption):
    if quality:
        _jpeg(tmp_path / name, rng, quality)
    else:
        Image.fromarray(rng.integers(0, 256, size=(12, 14, 3), dtype=np.uint8)).save(tmp_path / name)
    assert (
        main(["upscale", str(tmp_path / name), str(tmp_path / "out.png"), "--model", MODEL, "--caption", caption]) == 0
    )
    assert "the input is a JPEG" not in capsys.readouterr().out
    assert read_image_file(tmp_path / "out.png").provenance["caption"] == caption
