"""The one reader and writer (napari_textsr.imageio): issue 10's rows 1-8 and other encodings of the same kinds.

Every file here is made by a real encoder (Pillow, tifffile, imagecodecs), and
each test asserts the values read back, not only shapes.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_textsr.imageio import (
    ImageFile,
    TiffTileBands,
    check_not_same_file,
    check_output,
    metadata_only,
    read_image_file,
    read_image_series,
    write_image_file,
    write_tiled_tiff,
)
from napari_textsr.samples import sample_path


@pytest.fixture
def rng():
    return np.random.default_rng(10)


# --------------------------------------------------------------------------- row 1: 48-bit PNG
def test_row1_rgb_png_with_16_bits_per_channel_reads_and_writes_uint16(tmp_path, rng):
    import imagecodecs

    rgb16 = rng.integers(0, 65536, size=(12, 10, 3), dtype=np.uint16)
    rgb16[0, 0] = (258, 513, 65535)  # high bytes 1, 2, 255: an 8-bit reader would keep only those
    (tmp_path / "in.png").write_bytes(imagecodecs.png_encode(rgb16))
    image = read_image_file(tmp_path / "in.png")
    assert image.data.dtype == np.uint16 and image.rgb
    np.testing.assert_array_equal(image.data, rgb16)
    out = write_image_file(tmp_path / "out.png", image, metadata={"caption": "cells", "scale": 2})
    back = read_image_file(out)
    np.testing.assert_array_equal(back.data, rgb16)
    assert back.provenance == {"caption": "cells", "scale": 2}  # the tEXt chunk inserted by hand is valid


def test_rgba_png_with_16_bits_per_channel(tmp_path, rng):
    import imagecodecs

    rgba16 = rng.integers(0, 65536, size=(8, 9, 4), dtype=np.uint16)
    (tmp_path / "in.png").write_bytes(imagecodecs.png_encode(rgba16))
    image = read_image_file(tmp_path / "in.png")
    np.testing.assert_array_equal(image.data, rgba16)
    assert image.alpha
    np.testing.assert_array_equal(read_image_file(write_image_file(tmp_path / "o.png", image)).data, rgba16)


def test_16_bit_grey_png_round_trip(tmp_path, rng):
    grey16 = rng.integers(0, 65536, size=(11, 13), dtype=np.uint16)
    write_image_file(tmp_path / "g.png", grey16)
    with Image.open(tmp_path / "g.png") as check:
        assert check.mode.startswith("I;16")  # a real 16-bit PNG, readable by others
    image = read_image_file(tmp_path / "g.png")
    assert image.data.dtype == np.uint16 and not image.rgb
    np.testing.assert_array_equal(image.data, grey16)


# --------------------------------------------------------------------------- row 2: trailing length-1 axis
def test_row2_tiff_with_sample_axis_of_length_one_is_grey(tmp_path, rng):
    grey = rng.integers(0, 255, size=(16, 20, 1), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "yxs.tif", grey, photometric="minisblack", metadata={"axes": "YXS"})
    tifffile.imwrite(tmp_path / "yxq.tif", grey)  # tifffile's default for such an array
    for name, axes in (("yxs.tif", "YXS"), ("yxq.tif", "YXQ")):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.series[0].shape == (16, 20, 1) and tif.series[0].axes == axes  # the layout of row 2
        image = read_image_file(tmp_path / name)
        assert image.data.shape == (16, 20) and not image.rgb and image.axes == "YX", name
        np.testing.assert_array_equal(image.data, grey[..., 0])


def test_row2_engine_names_a_trailing_length_one_axis(tiny_encoder):
    from napari_textsr.inference import load_model

    upscaler = load_model("random:pdn:2:tiny", encoder=tiny_encoder, device="cpu")
    with pytest.raises(ValueError, match=r"last axis of shape \(16, 20, 1\) has length 1.*image\[\.\.\., 0\]"):
        upscaler.upscale(np.zeros((16, 20, 1), np.uint8))


# --------------------------------------------------------------------------- row 3: tRNS colour key
def test_row3_grey_png_colour_key_becomes_alpha(tmp_path):
    grey = np.full((6, 7), 200, np.uint8)
    grey[2:4, 3:5] = 17  # the keyed value
    Image.fromarray(grey).save(tmp_path / "key.png", transparency=17)
    image = read_image_file(tmp_path / "key.png")
    assert image.rgb and image.alpha and image.data.shape == (6, 7, 4)
    alpha = image.data[..., 3]
    assert (alpha[2:4, 3:5] == 0).all() and (alpha[grey != 17] == 255).all()
    np.testing.assert_array_equal(image.data[..., 0], grey)


def test_rgb_png_colour_key_and_palette_with_transparency(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 80
    rgb[1, 1] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(10, 20, 30))
    image = read_image_file(tmp_path / "key.png")
    assert image.data[1, 1, 3] == 0 and (image.data[..., 3].sum() == 255 * 19)

    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "pal.png", transparency=1)
    image = read_image_file(tmp_path / "pal.png")
    np.testing.assert_array_equal(image.data[0, 0], (255, 0, 0, 255))
    np.testing.assert_array_equal(image.data[0, 1, 3], 0)  # index 1 is transparent
    np.testing.assert_array_equal(image.data[1, 0], (0, 0, 255, 255))


def test_grey_plus_alpha_png_and_tiff_become_rgba(tmp_path, rng):
    la = rng.integers(0, 255, size=(5, 6, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    for name in ("la.png", "la.tif"):
        image = read_image_file(tmp_path / name)
        assert image.data.shape == (5, 6, 4) and image.alpha, name
        for c in range(3):
            np.testing.assert_array_equal(image.data[..., c], la[..., 0])
        np.testing.assert_array_equal(image.data[..., 3], la[..., 1])


# --------------------------------------------------------------------------- row 4: EXIF orientation
def test_row4_jpeg_exif_orientation_6_is_applied(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, 16:] = 240  # bright right half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "o6.jpg", exif=exif, quality=95)
    image = read_image_file(tmp_path / "o6.jpg")
    assert image.orientation == 6
    assert image.data.shape == (32, 16, 3)  # shown upright: the long side is vertical
    # Rotating 90 degrees clockwise puts the stored right half at the bottom.
    assert image.data[:14].mean() < 20 and image.data[18:].mean() > 220
    write_image_file(tmp_path / "out.jpg", image)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.getexif().get(0x0112, 1) == 1 and out.size == (16, 32)  # written upright, no re-rotation


# --------------------------------------------------------------------------- row 6: bilevel
def test_row6_one_bit_tiff_reads_as_uint8_like_the_png(tmp_path):
    bits = np.zeros((8, 12), bool)
    bits[2:5, 3:9] = True
    Image.fromarray(bits).save(tmp_path / "b.tif")
    Image.fromarray(bits).save(tmp_path / "b.png")
    tif, png = read_image_file(tmp_path / "b.tif"), read_image_file(tmp_path / "b.png")
    assert tif.data.dtype == np.uint8 and set(np.unique(tif.data)) == {0, 255}
    np.testing.assert_array_equal(tif.data, png.data)
    np.testing.assert_array_equal(tif.data, bits * 255)


def test_min_is_white_bilevel_tiff_is_inverted_as_viewers_show_it(tmp_path):
    bits = np.zeros((8, 8), bool)
    bits[:, :3] = True
    tifffile.imwrite(tmp_path / "w.tif", bits, photometric="miniswhite")
    image = read_image_file(tmp_path / "w.tif")
    with Image.open(tmp_path / "w.tif") as shown:
        np.testing.assert_array_equal(image.data, np.asarray(shown.convert("L")))
    assert (image.data[:, :3] == 0).all()  # set bits are black in MinIsWhite


# --------------------------------------------------------------------------- row 7: physical pixel size
def test_row7_imagej_pixel_size_unit_and_z_spacing_survive_upscaling(tmp_path, rng):
    stack = rng.integers(0, 4000, size=(3, 10, 12), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        stack,
        imagej=True,
        resolution=(5.0, 5.0),
        metadata={"axes": "ZYX", "unit": "micron", "spacing": 0.5},
    )
    image = read_image_file(tmp_path / "ij.tif")
    assert image.spacing == pytest.approx({"X": 0.2, "Y": 0.2, "Z": 0.5})
    assert image.units == {"X": "µm", "Y": "µm", "Z": "µm"}
    bigger = np.repeat(np.repeat(stack, 4, axis=1), 4, axis=2)
    out = write_image_file(
        tmp_path / "o.tif", image.upscaled(bigger, 4, {"caption": "nuclei", "model": "m", "scale": 4})
    )
    with tifffile.TiffFile(out) as tif:  # what ImageJ / Fiji will read
        assert tif.is_imagej
        assert tif.pages[0].resolution == pytest.approx((20.0, 20.0))  # 1 / 0.05 um
        assert tif.imagej_metadata["unit"] == "micron" and tif.imagej_metadata["spacing"] == 0.5
    back = read_image_file(out)
    assert back.spacing == pytest.approx({"X": 0.05, "Y": 0.05, "Z": 0.5})
    assert back.units["X"] == "µm" and back.provenance["caption"] == "nuclei"
    assert back.layer_scale() == pytest.approx((0.5, 0.05, 0.05))
    np.testing.assert_array_equal(back.data, bigger)


def test_row7_ome_tiff_pixel_size_and_channel_names_survive(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 3, 8, 8), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "in.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.2,
            "PhysicalSizeY": 0.2,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 0.5,
            "PhysicalSizeZUnit": "µm",
            "Channel": {"Name": ["DAPI", "GFP"]},
        },
    )
    image = read_image_file(tmp_path / "in.ome.tif")
    assert image.format == "ome" and image.axes == "CZYX" and image.channel_names == ("DAPI", "GFP")
    out = write_image_file(tmp_path / "o.ome.tif", image.upscaled(data, 4, {"scale": 4}))
    back = read_image_file(out)
    assert back.format == "ome" and back.channel_names == ("DAPI", "GFP")
    assert back.spacing == pytest.approx({"X": 0.05, "Y": 0.05, "Z": 0.5}) and back.units["Z"] == "µm"
    assert back.provenance == {"scale": 4}


def test_png_and_jpeg_keep_dpi_icc_and_provenance(tmp_path, rng):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png", dpi=(300, 300), icc_profile=icc)
    image = read_image_file(tmp_path / "in.png")
    assert image.icc_profile == icc and image.units["X"] == "inch"
    assert image.spacing["X"] == pytest.approx(1 / 300, rel=1e-3)
    up = image.upscaled(np.repeat(np.repeat(rgb, 2, 0), 2, 1), 2, {"caption": "a cat"})
    for name in ("o.png", "o.jpg", "o.tif"):
        back = read_image_file(write_image_file(tmp_path / name, up))
        assert back.icc_profile == icc, name
        assert back.spacing["X"] == pytest.approx(1 / 600, rel=1e-3), name
        assert back.provenance == {"caption": "a cat"}, name


# --------------------------------------------------------------------------- row 8: pages of different sizes
def test_row8_pages_of_different_sizes_are_separate_series(tmp_path):
    pages = [np.full((8, 8), 10 * i, np.uint8) for i in range(3)] + [np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)]
    first, *rest = (Image.fromarray(p) for p in pages)
    first.save(tmp_path / "mp.tif", save_all=True, append_images=rest)
    series = read_image_series(tmp_path / "mp.tif")
    assert [s.data.shape for s in series] == [(3, 8, 8), (12, 16)]
    np.testing.assert_array_equal(series[1].data, pages[3])
    with pytest.raises(ValueError, match="2 series of different shapes"):
        read_image_file(tmp_path / "mp.tif")


# --------------------------------------------------------------------------- other encodings
def test_big_endian_and_planar_tiff(tmp_path, rng):
    grey = rng.integers(0, 65535, size=(9, 11), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", grey, byteorder=">")
    image = read_image_file(tmp_path / "be.tif")
    assert image.data.dtype.isnative and image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, grey)

    planar = rng.integers(0, 255, size=(3, 9, 11), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    image = read_image_file(tmp_path / "planar.tif")
    assert image.rgb and image.data.shape == (9, 11, 3)
    np.testing.assert_array_equal(image.data, np.moveaxis(planar, 0, -1))


def test_palette_and_cmyk(tmp_path):
    indices = np.array([[0, 1], [2, 0]], np.uint8)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = (65535, 0, 0)
    colormap[:, 2] = (0, 257 * 128, 0)
    tifffile.imwrite(tmp_path / "pal.tif", indices, photometric="palette", colormap=colormap)
    image = read_image_file(tmp_path / "pal.tif")
    assert image.rgb and image.data.dtype == np.uint8  # 16-bit colour map of 8-bit entries
    np.testing.assert_array_equal(image.data[0, 1], (255, 0, 0))
    np.testing.assert_array_equal(image.data[1, 0], (0, 128, 0))

    cmyk = np.zeros((4, 4, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=100)
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    for name in ("c.jpg", "c.tif"):
        image = read_image_file(tmp_path / name)
        assert image.rgb and image.data.shape == (4, 4, 3), name
        np.testing.assert_allclose(image.data[0, 0], (0, 255, 255), atol=3, err_msg=name)


def test_imagej_hyperstack_keeps_axes_and_labels(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 3, 2, 6, 7), dtype=np.uint8)  # TZCYX
    labels = [f"plane{i}" for i in range(12)]
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "TZCYX", "Labels": labels})
    image = read_image_file(tmp_path / "h.tif")
    assert image.axes == "TZCYX" and image.data.shape == data.shape and image.channel_names == tuple(labels)
    back = read_image_file(write_image_file(tmp_path / "o.tif", image))
    assert back.axes == "TZCYX" and back.channel_names == tuple(labels)
    np.testing.assert_array_equal(back.data, data)


def test_float_and_int64_tiff_keep_values_and_axes(tmp_path, rng):
    values = rng.normal(size=(2, 5, 6)).astype(np.float64)
    back = read_image_file(write_image_file(tmp_path / "f.tif", values))
    assert back.data.dtype == np.float64 and back.axes == "ZYX"
    np.testing.assert_array_equal(back.data, values)


# --------------------------------------------------------------------------- rows 11, 12, 15 (file side)
@pytest.mark.parametrize(
    "name, dtype, rgb, channels, stack, match",
    [
        ("o.xyz", np.uint8, False, 1, False, "cannot write '.xyz'"),
        ("o.jpg", np.uint16, False, 1, False, "JPEG holds 8-bit grey or RGB images, not uint16 grey"),
        ("o.jpg", np.uint8, True, 4, False, "not uint8 RGBA"),
        ("o.png", np.float32, False, 1, False, "PNG holds 8- and 16-bit images, not float32 grey"),
        ("o.png", np.uint8, False, 1, True, "stack"),
    ],
)
def test_row11_output_that_a_format_cannot_hold_is_refused(name, dtype, rgb, channels, stack, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        check_output(tmp_path / name, dtype, rgb, channels=channels, stack=stack)
    check_output(tmp_path / "o.tif", dtype, rgb, channels=channels, stack=stack)  # TIFF holds all


def test_row12_hard_link_to_the_input_is_refused(tmp_path):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.zeros((4, 4), np.uint8))
    link = tmp_path / "link.tif"
    link.hardlink_to(source)
    with pytest.raises(ValueError, match="same file"):
        check_not_same_file(source, link)
    with pytest.raises(ValueError, match="same file"):
        check_not_same_file(source, tmp_path / "." / "in.tif")
    check_not_same_file(source, tmp_path / "other.tif")


def test_row15_pixel_limit_is_checked_from_the_header(tmp_path):
    # A few kB of zlib that decodes to 3000 x 3000.
    tifffile.imwrite(tmp_path / "bomb.tif", np.zeros((3000, 3000), np.uint8), compression="zlib", tile=(512, 512))
    assert (tmp_path / "bomb.tif").stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"9,000,000 pixels, over the limit of 1,000,000"):
        read_image_file(tmp_path / "bomb.tif", max_pixels=1_000_000)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"4,096 pixels, over the limit of 100 "):  # small limits: exact counts
        read_image_file(tmp_path / "small.png", max_pixels=100)
    Image.fromarray(np.zeros((2000, 1000), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="over the limit"):
        read_image_file(tmp_path / "big.png", max_pixels=1_000_000)
    assert read_image_file(tmp_path / "big.png", max_pixels=None).data.shape == (2000, 1000)


# --------------------------------------------------------------------------- streamed output
def test_tile_bands_stream_a_tiled_bigtiff_equal_to_the_array(tmp_path, rng):
    full = rng.integers(0, 255, size=(2, 300, 520, 3), dtype=np.uint8)
    sink = TiffTileBands(full.shape, full.dtype, rgb=True, tile=128)

    def tiles():
        # Written as the engine writes: slice by slice, tile rows top to bottom.
        for z in range(2):
            for y0 in range(0, 300, 70):
                for x0 in range(0, 520, 200):
                    sink[(z, slice(y0, min(y0 + 70, 300)), slice(x0, min(x0 + 200, 520)))] = full[
                        z, y0 : y0 + 70, x0 : x0 + 200
                    ]
                    yield from sink.pop_ready()
        yield from sink.pop_ready()

    meta = metadata_only(
        ImageFile(full[:1, :2, :2], True, spacing={"X": 0.1, "Y": 0.1}, units={"X": "µm", "Y": "µm"}),
        full.shape,
        full.dtype,
    )
    write_tiled_tiff(tmp_path / "s.tif", meta, tiles(), full.shape, tile=128)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled
    back = read_image_file(tmp_path / "s.tif")
    np.testing.assert_array_equal(back.data, full)
    assert back.spacing["X"] == pytest.approx(0.1)
    # Bands of 128 rows x 640 padded columns x 3: never more than the rows one engine tile spans.
    assert sink.peak_bytes <= 2 * 128 * 640 * 3 and sink.finished


def test_training_reads_through_the_same_reader(tmp_path):
    from napari_textsr.training.data import read_image

    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, 16:] = 240
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "o6.jpg", exif=exif, quality=95)
    unit = read_image(tmp_path / "o6.jpg")
    assert unit.shape == (32, 16, 3) and unit.dtype == np.float32  # oriented as the CLI sees it
    assert unit[:14].mean() < 0.1 and unit[18:].mean() > 0.9


def test_png_text_chunk_provenance_is_json(tmp_path):
    write_image_file(tmp_path / "p.png", np.zeros((4, 4), np.uint8), metadata={"caption": "x"})
    with Image.open(tmp_path / "p.png") as png:
        assert json.loads(png.text["textsr"])["textsr"] == {"caption": "x"}


def test_jpeg_quality_is_the_quality_the_file_was_saved_at(tmp_path):
    from napari_textsr.imageio import jpeg_quality

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
    found = {}
    for quality in range(1, 101):
        picture.save(tmp_path / "q.jpg", quality=quality)
        found[quality] = jpeg_quality(tmp_path / "q.jpg")
    assert found == {q: q for q in range(1, 101)}
    picture.save(tmp_path / "q.jpg", quality=37)
    image = read_image_file(tmp_path / "q.jpg")
    assert image.format == "jpeg" and image.jpeg_quality == 37
    assert image.upscaled(np.zeros((32, 32, 3), np.uint8), 2).jpeg_quality is None  # the output is not that JPEG
    picture.save(tmp_path / "q.png")
    assert jpeg_quality(tmp_path / "q.png") is None and read_image_file(tmp_path / "q.png").jpeg_quality is None


def _jpeg_pixels(pixels, quality, **options):
    """``pixels`` through a JPEG encode/decode at ``quality`` (Pillow)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, **options)
    return np.asarray(Image.open(buffer))


def test_jpeg_quality_from_pixels_reads_the_quality_a_jpeg_was_saved_at():
    from napari_textsr.imageio import jpeg_quality_from_pixels

    photograph = read_image_file(sample_path("cat_lr.png")).data  # a never-compressed 100x150 RGB photograph
    assert jpeg_quality_from_pixels(photograph) is None
    for quality in (10, 30, 50, 60, 75, 85, 95):
        decoded = _jpeg_pixels(photograph, quality)
        assert jpeg_quality_from_pixels(decoded) == quality  # a PNG of a decoded JPEG, a screenshot, a layer
        assert jpeg_quality_from_pixels(_jpeg_pixels(photograph, quality, subsampling=0)) == quality  # 4:4:4
        grey = photograph.mean(axis=-1).astype(np.uint8)
        assert jpeg_quality_from_pixels(_jpeg_pixels(grey, quality)) == quality
        rgba = np.concatenate([decoded, np.full(decoded.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        assert jpeg_quality_from_pixels(rgba) == quality
        assert jpeg_quality_from_pixels(decoded[3:, 5:]) == quality  # a crop: the grid is found where it lies
        assert jpeg_quality_from_pixels(np.rot90(decoded)) == quality  # turned upright after decoding
        assert jpeg_quality_from_pixels(decoded[:, ::-1]) == quality
        # Resized after compression, the blocks say nothing; nor do other dtypes.
        assert jpeg_quality_from_pixels(np.asarray(Image.fromarray(decoded).resize((149, 99)))) is None
        assert jpeg_quality_from_pixels(decoded.astype(np.uint16) * 257) is None


def test_jpeg_quality_from_pixels_is_silent_on_images_that_never_were_jpegs():
    from napari_textsr.imageio import jpeg_quality_from_pixels

    rng = np.random.default_rng(0)
    never = {
        "flat": np.full((64, 64, 3), 200, np.uint8),
        "ramp": np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1)),  # one coefficient value per column
        "dim photon counts": rng.poisson(20, (512, 512)).astype(np.uint8),  # block means all near one DC value
        "noise": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "8x8 checkerboard": ((np.indices((256, 256)).sum(0) // 8 % 2) * 255).astype(np.uint8),
        "smaller than two blocks": _jpeg_pixels(np.full((15, 15), 99, np.uint8), 20),
        "a text sample": read_image_file(sample_path("text_lr.png")).data,
    }
    for name, pixels in never.items():
        assert jpeg_quality_from_pixels(pixels) is None, name
    assert jpeg_quality_from_pixels(np.zeros((64, 64, 2), np.uint8)) is None  # not grey, RGB or RGBA


def test_jpeg_evidence_takes_the_heavier_compression_of_file_and_pixels():
    from napari_textsr.imageio import JpegEvidence, jpeg_evidence

    photograph = read_image_file(sample_path("cat_lr.png")).data
    decoded = _jpeg_pixels(photograph, 40)
    assert jpeg_evidence(40, decoded) == JpegEvidence(40, from_pixels=False)  # a JPEG file and its pixels agree
    assert jpeg_evidence(None, decoded) == JpegEvidence(40, from_pixels=True)
    # Re-saved at 95, the file says 95 and the blocks still show 40: the heavier compression is what counts.
    resaved = _jpeg_pixels(decoded, 95)
    assert jpeg_evidence(95, resaved) == JpegEvidence(40, from_pixels=True)
    assert jpeg_evidence(30, photograph[:12, :12]) == JpegEvidence(30, from_pixels=False)  # pixels too few to tell
    assert JpegEvidence(40, True).record() == {"input_jpeg_quality": 40, "input_jpeg_quality_from": "pixels"}
    assert jpeg_evidence(None, photograph) is None and jpeg_evidence(None, None) is None
    assert "quality about 40" in JpegEvidence(40, True).describe()
    assert JpegEvidence(55, False).describe() == "the input is a JPEG of quality 55"
