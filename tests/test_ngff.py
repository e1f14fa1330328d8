"""OME-Zarr: pixel-centre-preserving transforms, NGFF 0.5 round trip, NGFF 0.4 reading, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")

from napari_textsr.ngff import (  # noqa: E402
    Axis,
    create_ome_zarr,
    default_axes,
    read_ome_zarr,
    resample_transform,
    update_attrs,
    upscaled_transform,
    write_ome_zarr,
)

UM = "micrometer"


def test_upscaled_transform_keeps_pixel_zero_edge():
    # 0.5 um pixels from 10 um, x4: 0.125 um pixels; pixel 0 of both starts at 9.75 um.
    scale, translation = resample_transform([0.5], [10.0], [1 / 4])
    assert scale == (0.125,)
    assert translation == (9.8125,)
    assert translation[0] - scale[0] / 2 == 10.0 - 0.5 / 2 == 9.75
    # and HR pixels 0..3 have their centres inside LR pixel 0, averaging to its centre
    centres = translation[0] + scale[0] * np.arange(4)
    assert centres.mean() == pytest.approx(10.0)


def test_pyramid_level_centre_is_the_mean_of_its_pixels_centres():
    # level 2 averages 4 x 4 pixels whose centres are 10, 10.5, 11, 11.5 (mean 10.75)
    scale, translation = resample_transform([0.5], [10.0], [4])
    assert scale == (2.0,) and translation == (10.75,)


def test_upscaled_transform_changes_only_y_and_x():
    axes = default_axes(5, UM)
    assert [a.name for a in axes] == list("tczyx")
    assert [a.type for a in axes] == ["time", "channel", "space", "space", "space"]
    assert [a.unit for a in axes] == [None, None, UM, UM, UM]
    scale, translation = upscaled_transform(axes, [3.0, 1.0, 2.0, 0.4, 0.2], [5.0, 0.0, -1.0, 1.0, 2.0], 2)
    assert scale == (3.0, 1.0, 2.0, 0.2, 0.1)
    assert translation == pytest.approx((5.0, 0.0, -1.0, 0.9, 1.95))


def test_round_trip_with_pyramid_and_provenance(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65535, size=(3, 37, 50), dtype=np.uint16)
    axes = (Axis("z", "space", UM), Axis("y", "space", UM), Axis("x", "space", UM))
    written = write_ome_zarr(
        tmp_path / "a.zarr",
        data,
        axes=axes,
        scale=(2.0, 0.5, 0.25),
        translation=(1.0, 10.0, 20.0),
        chunks=(1, 16, 16),
        n_levels=3,
        attrs={"textsr": {"caption": "nuclei"}},
        name="stack",
    )
    assert written.version == "0.5"
    image = read_ome_zarr(tmp_path / "a.zarr")
    assert image.version == "0.5" and image.name == "stack"
    assert image.axes == axes and image.axis_names == "zyx"
    assert image.provenance() == {"caption": "nuclei"}
    np.testing.assert_array_equal(image.data[...], data)
    assert image.data.chunks == (1, 16, 16)
    assert image.data.metadata.zarr_format == 3
    assert list(image.data.metadata.dimension_names) == ["z", "y", "x"]
    assert [a.shape for a in image.arrays] == [(3, 37, 50), (3, 18, 25), (3, 9, 12)]
    # level 1 = rounded 2 x 2 means (odd last row trimmed), z untouched
    expected = np.rint(data[:, :36, :50].astype(np.float64).reshape(3, 18, 2, 25, 2).mean(axis=(2, 4)))
    np.testing.assert_array_equal(image.arrays[1][...], expected.astype(np.uint16))
    expected2 = np.rint(
        expected.astype(np.uint16)[:, :, :24].astype(np.float64).reshape(3, 9, 2, 12, 2).mean(axis=(2, 4))
    )
    np.testing.assert_array_equal(image.arrays[2][...], expected2.astype(np.uint16))
    assert image.levels[0].scale == (2.0, 0.5, 0.25) and image.levels[0].translation == (1.0, 10.0, 20.0)
    assert image.levels[1].scale == (2.0, 1.0, 0.5)
    assert image.levels[1].translation == (1.0, 10.25, 20.125)
    assert image.levels[2].scale == (2.0, 2.0, 1.0)
    assert image.levels[2].translation == (1.0, 10.75, 20.375)
    # the JSON on disk is NGFF 0.5: metadata under "ome", provenance beside it
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["attributes"]
    assert meta["ome"]["version"] == "0.5"
    assert meta["ome"]["multiscales"][0]["axes"][1] == {"name": "y", "type": "space", "unit": UM}
    assert meta["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [2.0, 1.0, 0.5]},
        {"type": "translation", "translation": [1.0, 10.25, 20.125]},
    ]
    assert meta["textsr"] == {"caption": "nuclei"}
    update_attrs(image, {"textsr": {"caption": "nuclei", "complete": True}})
    assert read_ome_zarr(tmp_path / "a.zarr").provenance()["complete"] is True


def test_every_written_chunk_is_stored_even_all_zero(tmp_path):
    image = create_ome_zarr(tmp_path / "z.zarr", (1, 32, 32), np.uint16, chunks=(1, 16, 16))
    assert image.data.nchunks_initialized == 0
    image.data[0, :16, 16:] = 0  # a block whose output happens to be all fill value
    assert image.data.nchunks_initialized == 1


def test_reads_ngff_04_and_composes_multiscale_transforms(tmp_path):
    path = tmp_path / "old.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    level = group.create_array("s0", shape=(4, 6), dtype=np.float32, chunks=(2, 3))
    level[...] = np.arange(24, dtype=np.float32).reshape(4, 6)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "y", "type": "space", "unit": "nanometer"},
                {"name": "x", "type": "space", "unit": "nanometer"},
            ],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.5, 0.25]},
                        {"type": "translation", "translation": [1.0, 2.0]},
                    ],
                }
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [10.0, 10.0]}],
        }
    ]
    group.attrs["omero"] = {"channels": []}
    image = read_ome_zarr(path)
    assert image.version == "0.4"
    assert image.axes == (Axis("y", "space", "nanometer"), Axis("x", "space", "nanometer"))
    # physical = 10 * (s * i + t)
    assert image.scale == (5.0, 2.5) and image.translation == (10.0, 20.0)
    assert image.attrs == {"omero": {"channels": []}}
    assert float(image.data[3, 5]) == 23.0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_ome_zarr(tmp_path / "missing.zarr")
    old = zarr.open_group(str(tmp_path / "v03.zarr"), mode="w", zarr_format=2)
    old.attrs["multiscales"] = [{"version": "0.3", "axes": ["y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(ValueError, match="0.3"):
        read_ome_zarr(tmp_path / "v03.zarr")
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(ValueError, match="multiscales"):
        read_ome_zarr(tmp_path / "plain.zarr")
    create_ome_zarr(tmp_path / "b.zarr", (8, 8), np.uint8)
    with pytest.raises(FileExistsError):
        create_ome_zarr(tmp_path / "b.zarr", (8, 8), np.uint8)
    with pytest.raises(ValueError, match="3 dimensions"):
        create_ome_zarr(tmp_path / "c.zarr", (2, 8, 8), np.uint8, axes=default_axes(2))
    with pytest.raises(ValueError, match="positive"):
        create_ome_zarr(tmp_path / "d.zarr", (8, 8), np.uint8, scale=(1.0, 0.0))
    with pytest.raises(ValueError, match="space axes"):
        create_ome_zarr(tmp_path / "e.zarr", (3, 8), np.uint8, axes=(Axis("c", "channel"), Axis("x", "space")))
