"""Distributed inference on a local dask cluster of 2 worker processes equals one process.

One cluster serves the whole module (starting worker processes that import
torch takes seconds on this machine); each test checks values against
``Upscaler.upscale`` run here, in one process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr", minversion="3")
distributed = pytest.importorskip("distributed")

from napari_textsr.distributed import (  # noqa: E402
    LOAD_COUNTS,
    MARKERS,
    BlocksFailed,
    plan_blocks,
    upscale_distributed,
)
from napari_textsr.inference import load_model  # noqa: E402
from napari_textsr.ngff import Axis, read_ome_zarr, write_ome_zarr  # noqa: E402

UM = "micrometer"
AXES = (Axis("z", "space", UM), Axis("y", "space", UM), Axis("x", "space", UM))
CAPTION = "DAPI-stained nuclei, two in mitosis"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """4 x 300 x 260 uint16 OME-Zarr, chunks (1, 128, 128), with physical metadata."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:300, 0:260]
    planes = [1000 + 800 * np.sin(yy / (7 + z)) * np.cos(xx / 11) + rng.normal(0, 60, (300, 260)) for z in range(4)]
    data = np.clip(np.stack(planes), 0, 65535).astype(np.uint16)
    path = tmp_path_factory.mktemp("in") / "in.zarr"
    write_ome_zarr(path, data, axes=AXES, scale=(2.0, 0.5, 0.25), translation=(1.0, 10.0, 20.0), chunks=(1, 128, 128))
    return path, data


def _reference(spec: str, data: np.ndarray) -> np.ndarray:
    return load_model(spec, device="cpu").upscale(data, CAPTION, attention=False).image


def _assert_same(out: np.ndarray, reference: np.ndarray) -> None:
    # Exact tiling: the float outputs agree up to summation order (~1e-6 of the
    # intensity range, well within 1e-4); after rounding to uint16 a value
    # that close to .5 may land one grey level the other way, in a few pixels.
    # A seam, a wrong halo or a per-block normalisation would move many pixels by far more.
    assert out.shape == reference.shape and out.dtype == reference.dtype
    diff = np.abs(out.astype(np.int64) - reference.astype(np.int64))
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 0.005 * diff.size


def test_plan_blocks_covers_each_pixel_once():
    plan = plan_blocks((2, 300, 260), 128, receptive_field=10, alignment=4)
    assert plan.halo == 12 and plan.block_shape == (100, 88) and plan.grid_shape == (2, 3, 3)
    cover = np.zeros((2, 300, 260), np.int32)
    for b in plan.blocks:
        cover[(b.lead[0], *b.tile.core_slices())] += 1
        assert b.tile.py0 % 4 == 0 and b.tile.px0 % 4 == 0
        assert b.tile.py0 == max(b.tile.y0 - 12, 0) and b.tile.py1 == min(b.tile.y1 + 12, 300)
    assert (cover == 1).all()
    assert plan.output_chunks(1, 4) == (1, 400, 352)


@pytest.mark.parametrize("factor", [2, 4])
def test_local_cluster_equals_one_process(client, volume, tmp_path, factor):
    path, data = volume
    spec = f"random:pdn:{factor}:tiny"
    events = []
    result = upscale_distributed(
        path,
        tmp_path / "out.zarr",
        CAPTION,
        model=spec,
        scheduler=client,
        block=160,
        progress=lambda done, total: events.append((done, total)),
    )
    assert result.blocks == 4 * 2 * 2 == result.computed and result.skipped == 0
    assert events[0] == (0, 16) and events[-1] == (16, 16) and len(events) == 17
    out = read_ome_zarr(tmp_path / "out.zarr")
    _assert_same(out.data[...], _reference(spec, data))
    # physical metadata: units kept, y/x pixels 1/factor, pixel-0 edges aligned
    assert out.axes == AXES and out.version == "0.5"
    assert out.scale == (2.0, 0.5 / factor, 0.25 / factor)
    assert out.translation == pytest.approx((1.0, 10.0 + (0.5 / factor - 0.5) / 2, 20.0 + (0.25 / factor - 0.25) / 2))
    assert out.data.chunks == (1, 150 * factor, 130 * factor)
    # pyramid: level 1 is the 2 x 2 mean of level 0
    level0 = out.data[...].astype(np.float64)
    h, w = level0.shape[1] // 2 * 2, level0.shape[2] // 2 * 2
    mean = level0[:, :h, :w].reshape(4, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(out.arrays[1][...], np.rint(mean).astype(np.uint16))
    provenance = out.provenance()
    assert provenance["caption"] == CAPTION and provenance["scale"] == factor
    assert provenance["model"] == f"random:pdn:{factor}:tiny" and provenance["complete"] is True
    assert provenance["intensity"]["mode"] == "percentile" and provenance["job"]["block"] == [150, 130]
    assert provenance["input_scale"] == [2.0, 0.5, 0.25]
    # each worker process loaded this model once, for all its blocks
    loads = client.run(lambda: {s.spec: n for s, n in LOAD_COUNTS.items()})
    assert len(loads) == 2 and all(counts.get(spec) == 1 for counts in loads.values())
    assert set(result.peak_rss) and all(v > 50e6 for v in result.peak_rss.values())


class _Stop(Exception):
    pass


def test_killed_run_resumes_to_the_same_output(client, volume, tmp_path):
    path, data = volume
    spec = "random:pdn:2:tiny"
    out_path = tmp_path / "out.zarr"

    def stop_after_three(done: int, total: int) -> None:
        if done >= 3:
            raise _Stop

    with pytest.raises(_Stop):
        upscale_distributed(path, out_path, CAPTION, model=spec, scheduler=client, block=160, progress=stop_after_three)
    import zarr

    written = int(zarr.open_group(str(out_path), mode="r")[MARKERS][...].sum())
    assert 3 <= written < 16
    assert read_ome_zarr(out_path).provenance()["complete"] is False
    # another job on this output is refused, not mixed in
    with pytest.raises(ValueError, match="caption"):
        upscale_distributed(path, out_path, "another caption", model=spec, scheduler=client, block=160)
    result = upscale_distributed(path, out_path, CAPTION, model=spec, scheduler=client, block=160)
    assert result.skipped >= written and result.skipped + result.computed == 16 and result.computed > 0
    out = read_ome_zarr(out_path)
    assert out.provenance()["complete"] is True
    _assert_same(out.data[...], _reference(spec, data))


def test_failed_block_is_reported_then_retried(client, tmp_path):
    import dask.array as da

    rng = np.random.default_rng(3)
    data = (rng.random((2, 90, 80)) * 4000).astype(np.uint16)
    marker = tmp_path / "failed-once"
    source = da.from_array(data, chunks=(1, 45, 40)).map_blocks(_flaky, marker=str(marker), dtype=data.dtype)
    spec = "random:pdn:2:tiny"
    out_path = tmp_path / "out.zarr"
    with pytest.raises(BlocksFailed) as failed:
        upscale_distributed(source, out_path, CAPTION, model=spec, scheduler=client, block=40, retries=0)
    # the blocks whose padded region reads chunk (1, 1, 1) (rows 45-90, columns 40-80 of plane 1)
    info = load_model(spec, device="cpu").model.tiling_info()
    plan = plan_blocks(data.shape, 40, info.receptive_field, info.alignment, info.min_size)
    touching = {b.grid for b in plan.blocks if b.lead == (1,) and b.tile.py1 > 45 and b.tile.px1 > 40}
    # (dask fuses the chunk read into each block's task: the first block to read it fails)
    assert len(failed.value.failures) == 1 and set(failed.value.failures) <= touching
    assert "flaky storage" in str(failed.value)
    # everything else was written; the rerun computes only the failed block
    result = upscale_distributed(source, out_path, CAPTION, model=spec, scheduler=client, block=40, retries=0)
    assert (result.computed, result.skipped) == (1, len(plan.blocks) - 1)
    _assert_same(read_ome_zarr(out_path).data[...], _reference(spec, data))
    # with retries, a block failing once does not fail the job
    marker.unlink()
    result = upscale_distributed(
        source, tmp_path / "retried.zarr", CAPTION, model=spec, scheduler=client, block=40, retries=1
    )
    assert marker.exists() and result.computed == len(plan.blocks)
    _assert_same(read_ome_zarr(tmp_path / "retried.zarr").data[...], _reference(spec, data))


def _flaky(block: np.ndarray, marker: str, block_info=None) -> np.ndarray:
    """Fails the first time chunk (1, 1, 1) is read on a worker (storage hiccup)."""
    try:
        distributed.get_worker()
    except ValueError:  # on the client (intensity statistics): never fails
        return block
    if block_info[0]["chunk-location"] == (1, 1, 1) and not Path(marker).exists():
        Path(marker).touch()
        raise OSError("flaky storage")
    return block


def test_cli_on_a_list_of_files(client, tmp_path, capsys):
    import tifffile

    from napari_textsr.cli import main

    rng = np.random.default_rng(5)
    planes = (rng.random((2, 70, 60)) * 50000).astype(np.uint16)
    files = []
    for i, plane in enumerate(planes):
        files.append(tmp_path / f"plane{i}.tif")
        tifffile.imwrite(files[-1], plane)
    out_path = tmp_path / "out.zarr"
    spec = "random:pdn:2:tiny"
    argv = [
        "distributed",
        *map(str, files),
        str(out_path),
        "--caption",
        CAPTION,
        "--model",
        spec,
        "--scheduler",
        client.scheduler.address,
        "--block",
        "32",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    out = read_ome_zarr(out_path)
    assert out.axis_names == "iyx" and out.axes[0] == Axis("i", "index") and out.shape == (2, 140, 120)
    _assert_same(out.data[...], _reference(spec, planes))
    assert out.provenance()["input"].startswith("2 files")
    # the same command again finds every block written
    assert main(argv) == 0
    assert "0 block(s) upscaled, 12 already there" in capsys.readouterr().out
    # a bad scheduler spec is the user's to fix: one line, exit 1
    bad = ["distributed", str(files[0]), str(tmp_path / "other.zarr"), "--model", spec, "--scheduler", "local:x"]
    assert main(bad) == 1
    assert "local:N needs a number of workers N >= 1, got 'local:x'" in capsys.readouterr().err
    assert not (tmp_path / "other.zarr").exists()


def test_cli_on_jpeg_frames_says_jpeg_in_the_caption(client, tmp_path, capsys):
    from PIL import Image

    from napari_textsr.cli import main

    rng = np.random.default_rng(6)
    files = []
    for i, quality in enumerate((70, 50)):  # video frames of one shape
        files.append(tmp_path / f"frame{i}.jpg")
        Image.fromarray(rng.integers(0, 256, size=(40, 36), dtype=np.uint8)).save(files[-1], quality=quality)
    common = ["--model", "random:pdn:2:tiny", "--scheduler", client.scheduler.address, "--quiet"]
    assert main(["distributed", *map(str, files), str(tmp_path / "auto.zarr"), "--caption", "a street", *common]) == 0
    assert "caption 'a street, JPEG-compressed': the inputs are JPEG files" in capsys.readouterr().out
    assert read_ome_zarr(tmp_path / "auto.zarr").provenance()["caption"] == "a street, JPEG-compressed"
    typed = ["distributed", *map(str, files), str(tmp_path / "typed.zarr"), "--caption", "a street", "--no-file-words"]
    assert main([*typed, *common]) == 0
    assert read_ome_zarr(tmp_path / "typed.zarr").provenance()["caption"] == "a street"
    # the default's model for heavy JPEG inputs, as `textsr upscale` takes it (the bundled pdn-x2-jpeg)
    default = ["--model", "default", "--scale", "2", *common[2:]]
    assert main(["distributed", *map(str, files), str(tmp_path / "default.zarr"), *default]) == 0
    assert "model pdn-x2-jpeg: the default for inputs JPEG-compressed at quality <= 60" in capsys.readouterr().out
    assert read_ome_zarr(tmp_path / "default.zarr").provenance()["model"] == "pdn-x2-jpeg"
    # The Python API picks the same way from the quality it is given.
    api = upscale_distributed(files, tmp_path / "api.zarr", model="default", scale=2, scheduler=client, jpeg_quality=50)
    assert api.output.provenance()["model"] == "pdn-x2-jpeg"
    png = tmp_path / "frame.png"  # one input that is no JPEG file: the general default serves them all
    Image.fromarray(rng.integers(0, 256, size=(40, 36), dtype=np.uint8)).save(png)
    assert main(["distributed", str(files[1]), str(png), str(tmp_path / "mixed.zarr"), *default]) == 0
    assert read_ome_zarr(tmp_path / "mixed.zarr").provenance()["model"] == "pdn-x2"


def test_back_projection_on_the_cluster_equals_one_process(client, tmp_path, capsys):
    import tifffile

    from napari_textsr.cli import main

    rng = np.random.default_rng(9)
    planes = (rng.random((1, 90, 84)) * 50000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "binned.tif", planes[0])
    spec = "random:pdn:2:tiny"
    argv = ["distributed", str(tmp_path / "binned.tif"), str(tmp_path / "out.zarr"), "--caption", "nuclei, binned"]
    argv += ["--model", spec, "--scheduler", client.scheduler.address, "--block", "32", "--consistency", "--quiet"]
    assert main(argv) == 0
    assert "back-projected with area downsampling" in capsys.readouterr().out
    out = read_ome_zarr(tmp_path / "out.zarr")
    reference = load_model(spec, device="cpu").upscale(planes, "nuclei, binned", attention=False, consistency="area")
    _assert_same(out.data[...], reference.image)
    plain = load_model(spec, device="cpu").upscale(planes, "nuclei, binned", attention=False).image
    assert np.abs(out.data[...].astype(np.int64) - plain.astype(np.int64)).max() > 10  # the correction did something
    provenance = out.provenance()
    assert provenance["consistency_kernel"] == "area" and provenance["job"]["consistency_kernel"] == "area"
    # the halo grows by the correction's reach, so blocks still tile exactly
    from napari_textsr.consistency import BackProjection

    info = load_model(spec, device="cpu").model.tiling_info()
    assert provenance["job"]["halo"] >= info.receptive_field + BackProjection().extra_padding()
    code = main([*argv[:2], str(tmp_path / "other.zarr"), *argv[3:], "--consistency-kernel", "lanczos"])
    assert code != 0 and "unknown kernel 'lanczos'" in capsys.readouterr().err


def test_cli_on_binned_ome_tiffs_says_binned(client, tmp_path, capsys):
    from test_binning import write_ome

    from napari_textsr.cli import main

    files = [tmp_path / f"plane{i}.ome.tif" for i in range(2)]
    for path in files:
        write_ome(path, ["2x2"], size=(40, 36))
    argv = ["distributed", *map(str, files), str(tmp_path / "out.zarr"), "--caption", "nuclei"]
    argv += ["--model", "random:pdn:2:tiny", "--scheduler", client.scheduler.address, "--block", "32", "--quiet"]
    assert main(argv) == 0
    assert "caption 'nuclei, binned': their files record camera binning 2x2" in capsys.readouterr().out
    assert read_ome_zarr(tmp_path / "out.zarr").provenance()["caption"] == "nuclei, binned"
