"""Where one small upscale's seconds go, measured inside one fresh process (issue 15).

    OMP_NUM_THREADS=1 python benchmarks/bench_startup_parts.py [--size 128] [--caption nuclei]

Prints the seconds of ``import torch``, the package's own imports, loading the
default x4 model, and the upscale plus writing a TIFF. Run it a few times: the
first run with a new caption also builds the prompt encoder (the caption is then
kept in the on-disk caption cache), later runs do not. Each run must be a new
process, or ``import torch`` costs nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="side of the uint16 input image (default 128)")
    parser.add_argument("--caption", default="nuclei")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import torch  # noqa: F401

    t1 = time.perf_counter()
    import numpy as np
    import tifffile

    from napari_textsr.inference import load_model

    t2 = time.perf_counter()
    image = (np.random.default_rng(0).random((args.size, args.size)) * 4000).astype(np.uint16)
    upscaler = load_model("default", scale=4)
    t3 = time.perf_counter()
    output = upscaler.upscale(image, args.caption).image
    with tempfile.TemporaryDirectory() as folder:
        tifffile.imwrite(Path(folder) / "out.tif", output)
    t4 = time.perf_counter()
    print(
        f"import torch {t1 - t0:.2f} s, package imports {t2 - t1:.2f} s, model load {t3 - t2:.2f} s, "
        f"upscale + write {t4 - t3:.2f} s; model load plus upscale {t4 - t2:.2f} s"
    )


if __name__ == "__main__":
    main()
