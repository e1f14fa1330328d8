"""Peak memory of an output larger than memory: ``textsr upscale`` streamed into a tiled BigTIFF and into an OME-Zarr.

Not a timed test: run by hand, e.g. (the figures in README.md)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_large_output.py --size 16384 --scale 2

It writes a synthetic uint8 grey input of SIZE x SIZE as a TIFF, then runs the
product's own path once per ``--format``:

* ``tif``: ``napari_textsr.cli.main(["upscale", IN, "output.tif", "--stream", ...])``,
  tile by tile into a tiled BigTIFF (``TiffTileBands``, a few bands of output rows);
* ``zarr``: ``napari_textsr.cli.main(["upscale", IN, "output.ome.zarr", ...])``,
  tile by tile into an OME-Zarr (NGFF 0.5, 512^2 chunks) plus ``--zarr-levels``
  pyramid levels computed afterwards with dask.

Each run is a child process of its own; its peak resident memory is that
child's own high-water mark (``VmHWM``, see :func:`run_measured`), its time the wall
time of the whole command (Python start, model, reading the input, upscaling,
writing, pyramid). The model defaults to ``random:pdn:<scale>:tiny``: an
untrained PDN of the smallest preset, because this measures the file path
(reading, tiling, streaming tiles into the file), not the network; a trained
model changes the time, and the memory only by its tile's working memory.

The input itself is in memory while it is upscaled (SIZE^2 bytes: 256 MiB at
16384), the output never is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMATS = {"tif": "output.tif", "zarr": "output.ome.zarr"}


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
    tifffile.imwrite(
        path, data=rows(), shape=(size, size), dtype=np.uint8, rowsperstrip=1024, bigtiff=size * size > 2**31
    )


# Runs in the measured child: executes ``-m MODULE ARGS`` or ``-c CODE ARGS`` and,
# at exit, writes the process's own VmHWM (peak RSS since its exec, KiB) to a file.
_PEAK_WRAPPER = r"""
import atexit, runpy, sys
report, mode, target = sys.argv[1:4]
def _peak():
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(report, "w") as out:
        out.write(str(kib))
atexit.register(_peak)
if mode == "-m":
    sys.argv = [target] + sys.argv[4:]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c"] + sys.argv[4:]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def run_measured(python_args: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``python -m MODULE ...`` or ``python -c CODE ...`` to the end: (wall seconds, its peak RSS in bytes).

    python_args: what follows the interpreter, starting with ``-m`` or ``-c``.
    The peak is the child's own ``VmHWM`` (Linux ``/proc/self/status``, read
    by the child at exit). Not ``ru_maxrss``: a child's ``ru_maxrss`` starts
    from its parent's resident memory at the fork (it survives ``exec``), and
    ``RUSAGE_CHILDREN`` is the largest over every child waited for so far.
    Raises subprocess.CalledProcessError when the command fails.
    """
    if len(python_args) < 2 or python_args[0] not in ("-m", "-c"):
        raise ValueError(f"python_args must start with -m MODULE or -c CODE, got {python_args[:2]}")
    with tempfile.TemporaryDirectory(prefix="textsr-peak-") as tmp:
        report = Path(tmp) / "vmhwm"
        command = [sys.executable, "-c", _PEAK_WRAPPER, str(report), *python_args]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        seconds = time.perf_counter() - start
        return seconds, int(report.read_text()) * 1024


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_output(path: Path) -> dict:
    """Shape, dtype and layout of the written output (read from its header only)."""
    if path.suffix == ".tif":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return {
                "shape": list(page.shape),
                "dtype": str(page.dtype),
                "tiled": page.is_tiled,
                "bigtiff": tif.is_bigtiff,
                "file_bytes": path.stat().st_size,
            }
    from napari_textsr.ngff import read_ome_zarr

    image = read_ome_zarr(path)
    files = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "chunks": list(image.data.chunks),
        "levels": [list(a.shape) for a in image.arrays],
        "file_bytes": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="input side in pixels (default 16384)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: random:pdn:<scale>:tiny")
    parser.add_argument("--tile", type=int, default=512, help="engine tile side in input pixels")
    parser.add_argument("--format", nargs="+", choices=sorted(FORMATS), default=["tif", "zarr"], dest="formats")
    parser.add_argument("--zarr-levels", type=int, default=3, help="pyramid levels of the OME-Zarr (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    model = args.model or f"random:pdn:{args.scale}:tiny"
    folder = Path(args.dir or tempfile.mkdtemp(prefix="textsr-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "input.tif"
    make_input(source, args.size)
    runs = []
    for name in args.formats:
        target = folder / FORMATS[name]
        command = [
            "-m",
            "napari_textsr.cli",
            "upscale",
            str(source),
            str(target),
            "--model",
            model,
            "--tile",
            str(args.tile),
            "--device",
            "cpu",
            "--quiet",
            "--max-pixels",
            str(max(args.size * args.size, 1)),
        ]
        command += ["--stream"] if name == "tif" else ["--zarr-levels", str(args.zarr_levels)]
        seconds, peak = run_measured(command)
        output = describe_output(target)
        runs.append(
            {
                "format": name,
                "output": output,
                "seconds": round(seconds, 1),
                "peak_rss_mib": round(peak / 2**20, 1),
                "output_gib": round(float(np.prod(output["shape"])) / 2**30, 2),
                "command": "python " + " ".join(command),
            }
        )
        print(json.dumps(runs[-1]), flush=True)  # each run as it ends: a long second run may be stopped
        if not args.keep:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    load = os.getloadavg()
    report = {
        "input": f"{args.size}x{args.size} uint8",
        "model": model,
        "tile": args.tile,
        "runs": runs,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "load_average_at_end": [round(v, 1) for v in load],
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        source.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
