"""Binned files say so themselves: an OME-TIFF's camera binning gives the caption "binned".

The models were trained to read "binned" (training vocabulary); said alone it
gains +0.24 dB over the empty caption at x2 on binned held-out photographs
(README, "Measurement consistency"), and with measurement consistency the
word makes the back-projection use binning (area).
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_textsr.cli import main
from napari_textsr.imageio import file_binning, read_image_series
from napari_textsr.training.captions import caption_with_file_words, caption_without_file_words


def ome_xml(size_y: int, size_x: int, binnings: list[str | None]) -> str:
    """OME-XML (schema 2016-06) of one uint16 image with a channel per entry of ``binnings``."""
    channels = "".join(
        f'<Channel ID="Channel:0:{i}" SamplesPerPixel="1">'
        + (f'<DetectorSettings ID="Detector:0:0" Binning="{b}"/>' if b else "")
        + "</Channel>"
        for i, b in enumerate(binnings)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Instrument ID="Instrument:0"><Detector ID="Detector:0:0"/></Instrument>'
        f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="{size_x}" '
        f'SizeY="{size_y}" SizeC="{len(binnings)}" SizeZ="1" SizeT="1" PhysicalSizeX="0.65" PhysicalSizeY="0.65">'
        f'{channels}<TiffData IFD="0" PlaneCount="{len(binnings)}"/></Pixels></Image></OME>'
    )


def write_ome(path, binnings: list[str | None], size: tuple[int, int] = (24, 20)) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = (rng.random((len(binnings), *size)) * 4000 + 100).astype(np.uint16)
    tifffile.imwrite(path, data if len(binnings) > 1 else data[0], description=ome_xml(*size, binnings), metadata=None)
    return data


@pytest.mark.parametrize(
    ("binnings", "expected"),
    [(["2x2"], 2), (["4x4", "4x4"], 4), (["2x2", "4x4"], None), (["1x1"], None), (["Other"], None), ([None], None)],
)
def test_the_ome_binning_is_read(tmp_path, binnings, expected):
    path = tmp_path / "cells.ome.tif"
    write_ome(path, binnings)
    (image,) = read_image_series(path)
    assert image.format == "ome" and image.binning == expected and image.spacing == {"X": 0.65, "Y": 0.65}
    assert file_binning(path) == expected
    assert file_binning(path, (24, 20)) == expected
    assert file_binning(path, (48, 40)) is None  # not the file's pixels


def test_other_files_have_no_binning(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8), np.uint16))
    assert read_image_series(tmp_path / "plain.tif")[0].binning is None
    assert file_binning(tmp_path / "plain.tif") is None
    assert file_binning(tmp_path / "missing.tif") is None
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    assert file_binning(tmp_path / "broken.tif") is None
    assert file_binning(tmp_path / "photo.png") is None


def test_file_words_for_binning():
    assert caption_with_file_words("nuclei", None, 2) == "nuclei, binned"
    assert caption_with_file_words("", None, 4) == "binned"
    assert caption_with_file_words("nuclei", 50, 2) == "nuclei, binned and JPEG-compressed"
    assert caption_with_file_words("nuclei, noisy", None, 2) == "nuclei, noisy"  # already says how it was taken
    assert caption_with_file_words("nuclei", None, None) == "nuclei"
    assert caption_with_file_words("nuclei", None, 1) == "nuclei"
    for caption in ("nuclei, binned", "nuclei, binned and JPEG-compressed", "nuclei, JPEG-compressed"):
        assert caption_without_file_words(caption) == "nuclei"
    assert caption_without_file_words("binned") == "" and caption_without_file_words("binned nuclei") == "binned nuclei"


def test_cli_says_binned_and_back_projects_with_binning(tmp_path, capsys):
    path = tmp_path / "cells.ome.tif"
    write_ome(path, ["2x2"])
    base = ["upscale", str(path), "--caption", "nuclei", "--model", "random:pdn:2:tiny", "--consistency", "--quiet"]
    assert main([*base[:2], str(tmp_path / "a.tif"), *base[2:]]) == 0
    out = capsys.readouterr().out
    assert "caption 'nuclei, binned': the file records camera binning 2x2" in out
    assert "(resize: area)" in out
    assert main([*base[:2], str(tmp_path / "b.tif"), *base[2:], "--no-file-words"]) == 0
    out = capsys.readouterr().out
    assert "binning" not in out and "(resize: bicubic-aa)" in out
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert "nuclei, binned" in tif.pages[0].description
