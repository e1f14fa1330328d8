"""How often ``jpeg_quality_from_pixels`` sees JPEG compression, and at what quality, in LR photographs.

    python benchmarks/bench_jpeg_from_pixels.py --data ../shared/data/train/bsd200 \
        --data ../shared/data/train/t91 --scale 2 --scale 4 --scale 8 --scale 16 --jpeg-quality 30 --jpeg-quality 85
    python benchmarks/bench_jpeg_from_pixels.py --data ../shared/data/train/bsd200 --offset 3,5

For every photograph of the folders (all of them: the detector is not
trained), each LR the way ``textsr bench --degradation NAME`` makes it
(seeded per image), and, per ``--jpeg-quality Q``, antialiased bicubic then
JPEG at quality Q (Pillow): one line per scale and way with how many LR
images the pixels' 8x8 blocks call JPEG-compressed and the qualities
estimated (quality: images). Five of ``textsr bench``'s six ways never
compress, so any quality there is a false detection; on the JPEG ways the
estimate should be the quality used. Not a test: it describes the detector
on real photographs (docs/results/jpeg-from-pixels.txt).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def detections(items: Sequence, degradation, offset: tuple[int, int] = (0, 0)) -> Counter:
    """Estimated quality (None: no JPEG seen) -> number of ``items`` (CaptionedImage) whose LR gives it.

    ``offset``: the LR is cropped by (dy, dx) pixels first, so a JPEG's 8x8
    grid no longer starts at its pixel (0, 0) (a crop of a JPEG frame).
    """
    from napari_textsr.benchmark import degrade_to_uint8
    from napari_textsr.imageio import jpeg_quality_from_pixels

    scale = int(degradation.scale)
    found: Counter = Counter()
    for item in items:
        h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
        hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
        lr = degrade_to_uint8(hr, degradation, item.name)
        found[jpeg_quality_from_pixels(lr[offset[0] :, offset[1] :])] += 1
    return found


def format_line(label: str, found: Counter) -> str:
    """``label: seen n of N; quality q: k, ...`` for one scale and way."""
    seen = sorted((q, k) for q, k in found.items() if q is not None)
    total = sum(found.values())
    qualities = ", ".join(f"{q}: {k}" for q, k in seen) or "none"
    return f"{label}: JPEG seen in {total - found[None]} of {total}; estimated qualities {qualities}"


def main() -> None:
    from napari_textsr.training.data import load_captioned_folder
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS, Degradation, named_degradation

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="captioned folder (repeatable)")
    parser.add_argument("--scale", type=int, action="append", help="repeatable (default 2, 4, 8, 16)")
    parser.add_argument("--jpeg-quality", type=int, action="append", default=[], metavar="Q", help="repeatable")
    parser.add_argument(
        "--offset",
        default="0,0",
        metavar="DY,DX",
        help="crop each LR by DY rows and DX columns first (off the JPEG grid; default 0,0)",
    )
    args = parser.parse_args()

    offset = tuple(int(v) for v in args.offset.split(","))
    if len(offset) != 2 or min(offset) < 0:
        parser.error(f"--offset takes DY,DX (two non-negative integers), not {args.offset!r}")
    items = [item for folder in args.data for item in load_captioned_folder(folder)]
    print(f"{len(items)} photographs of {', '.join(args.data)}, LR cropped by {offset}", flush=True)
    for scale in args.scale or [2, 4, 8, 16]:
        ways = {name: named_degradation(name, scale) for name in NAMED_DEGRADATIONS}
        ways.update({f"jpeg-q{q}": Degradation(scale=scale, jpeg_quality=q) for q in args.jpeg_quality})
        for name, degradation in ways.items():
            label = f"x{scale} {name}" + (" (quality 60)" if name == "jpeg" else "")
            print(format_line(label, detections(items, degradation, offset)), flush=True)


if __name__ == "__main__":
    main()
