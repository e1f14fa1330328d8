"""Peak memory of an output larger than memory: ``textsr upscale --stream`` into a tiled BigTIFF.

Not a timed test: run by hand, e.g. (the figure in README.md)::

    nice -n 10 python benchmarks/bench_large_output.py --size 16384 --scale 2

It writes a synthetic uint8 grey input of SIZE x SIZE as a TIFF, then runs the
product's own path (``napari_textsr.cli.main(["upscale", IN, OUT, "--stream", ...])``)
in a child process and reports the child's peak resident memory
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), its wall time and the output's
size. The model defaults to ``random:pdn:<scale>:tiny``: an untrained PDN of
the smallest preset, because this measures the file path (reading, tiling,
streaming tiles into the BigTIFF), not the network; a trained model changes
the time, and the memory only by its tile's working memory.

The input itself is in memory while it is upscaled (SIZE^2 bytes: 256 MiB at
16384), the output never is: the sink holds a few bands of 256 output rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_input(path: Path, size: int) -> None:
    """A smooth uint8 test pattern (sums of sines), written band by band to bound this process's memory."""
    import tifffile

    x = np.arange(size, dtype=np.float32)
    column = np.sin(x / 37.0) + np.sin(x / 211.0)

    def rows():
        for y0 in range(0, size, 1024):
            y = np.arange(y0, min(y0 + 1024, size), dtype=np.float32)[:, None]
            band = 127.5 + 60.0 * (column[None, :] * np.cos(y / 53.0)) + 3.0 * np.sin(y / 7.0)
            yield np.clip(band, 0, 255).astype(np.uint8)

    # One page, written in strips from the generator.
    tifffile.imwrite(path, data=rows(), shape=(size, size), dtype=np.uint8, rowsperstrip=1024, bigtiff=size * size > 2**31)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="input side in pixels (default 16384)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: random:pdn:<scale>:tiny")
    parser.add_argument("--tile", type=int, default=512, help="engine tile side in input pixels")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args(argv)
    model = args.model or f"random:pdn:{args.scale}:tiny"
    folder = Path(args.dir or tempfile.mkdtemp(prefix="textsr-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    source, target = folder / "input.tif", folder / "output.tif"
    make_input(source, args.size)
    command = [
        sys.executable, "-m", "napari_textsr.cli", "upscale", str(source), str(target), "--stream",
        "--model", model, "--tile", str(args.tile), "--device", "cpu", "--quiet",
        "--max-pixels", str(max(args.size * args.size, 1)),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    import tifffile

    with tifffile.TiffFile(target) as tif:
        page = tif.pages[0]
        shape, tiled, bigtiff = tuple(page.shape), page.is_tiled, tif.is_bigtiff
    report = {
        "input": f"{args.size}x{args.size} uint8",
        "output": f"{shape[0]}x{shape[1]} uint8 ({shape[0] * shape[1] / 2**30:.2f} GiB), tiled={tiled}, bigtiff={bigtiff}",
        "output_file_bytes": target.stat().st_size,
        "model": model,
        "tile": args.tile,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        source.unlink()
        target.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
