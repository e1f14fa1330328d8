"""OME-Zarr in and out of ``textsr upscale`` (through napari_textsr.ngff) and the napari TIFF writer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_textsr.cli import main
from napari_textsr.imageio import read_image_file

pytest.importorskip("zarr")
pytest.importorskip("dask")

MODEL = "random:pdn:2:tiny"


def test_ome_zarr_in_and_out_keeps_units_scale_and_pixel_centres(tmp_path):
    from napari_textsr import ngff
    from napari_textsr.inference import load_model

    rng = np.random.default_rng(7)
    stack = rng.integers(0, 4000, size=(2, 24, 20), dtype=np.uint16)
    ngff.write_ome_zarr(
        tmp_path / "in.zarr",
        stack,
        axes=ngff.default_axes(3, "micrometer"),
        scale=(0.5, 0.2, 0.2),
        translation=(1.0, 10.0, 20.0),
    )
    assert (
        main(
            [
                "upscale",
                str(tmp_path / "in.zarr"),
                str(tmp_path / "out.zarr"),
                "--caption",
                "nuclei",
                "--model",
                MODEL,
                "--tile",
                "8",
                "--zarr-levels",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    out = ngff.read_ome_zarr(tmp_path / "out.zarr")
    assert out.shape == (2, 48, 40) and out.dtype == np.uint16
    assert [a.unit for a in out.axes] == ["micrometer"] * 3
    assert out.scale == pytest.approx((0.5, 0.1, 0.1))
    # Pixel 0's outer edge stays put: 10 - 0.2/2 = 9.95 = t_out - 0.1/2.
    assert out.translation == pytest.approx((1.0, 9.95, 19.95))
    assert len(out.levels) == 2 and out.arrays[1].shape == (2, 24, 20)
    assert out.provenance()["caption"] == "nuclei" and out.provenance()["scale"] == 2
    expected = load_model(MODEL, device="cpu").upscale(stack, "nuclei", tile=8, attention=False).image
    np.testing.assert_array_equal(np.asarray(out.data), expected)
    # And through the one reader: physical sizes and the provenance.
    back = read_image_file(tmp_path / "out.zarr")
    assert back.axes == "ZYX" and back.spacing == pytest.approx({"Z": 0.5, "Y": 0.1, "X": 0.1})
    assert back.units["X"] == "µm" and back.provenance["caption"] == "nuclei"


def test_rgb_png_to_ome_zarr_is_channel_first_and_reads_back_as_rgb(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(8).integers(0, 255, size=(16, 18, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.zarr"), "--model", MODEL, "--quiet"]) == 0
    png = tmp_path / "out.png"
    assert main(["upscale", str(tmp_path / "in.png"), str(png), "--model", MODEL, "--quiet"]) == 0
    back = read_image_file(tmp_path / "out.zarr")
    assert back.rgb and back.data.shape == (32, 36, 3)
    np.testing.assert_array_equal(back.data, read_image_file(png).data)


def test_napari_writer_saves_layer_scale_units_and_provenance(tmp_path):
    from napari_textsr.napari.writer import write_tiff

    data = np.arange(2 * 8 * 6, dtype=np.uint16).reshape(2, 8, 6)
    meta = {
        "rgb": False,
        "scale": [0.5, 0.05, 0.05],
        "units": ["micrometer", "micrometer", "micrometer"],
        "metadata": {"caption": "nuclei", "model": "pdn-x4", "scale": np.int64(4)},
    }
    written = write_tiff(str(tmp_path / "layer.tif"), data, meta)
    image = read_image_file(written[0])
    np.testing.assert_array_equal(image.data, data)
    assert image.spacing == pytest.approx({"Z": 0.5, "Y": 0.05, "X": 0.05}) and image.units["Y"] == "µm"
    assert image.provenance == {"caption": "nuclei", "model": "pdn-x4", "scale": 4}


def test_napari_manifest_declares_the_writer():
    from pathlib import Path

    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "napari.yaml").read_text())
    writers = manifest["contributions"]["writers"]
    assert writers[0]["command"] == "napari-textsr.write_tiff" and ".tif" in writers[0]["filename_extensions"]
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    assert commands["napari-textsr.write_tiff"] == "napari_textsr.napari.writer:write_tiff"
