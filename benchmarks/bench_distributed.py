"""Throughput of distributed inference on 1, 2 and 4 local dask workers, against one process.

    python benchmarks/bench_distributed.py                                  # 2048^2 x 8 planes, bundled PDN x4
    python benchmarks/bench_distributed.py --size 512 --planes 4 --model random:pdn:4:tiny --workers 1 2

What it does:

1. writes a uint16 OME-Zarr volume (``--planes`` x ``--size`` x ``--size``,
   smooth structures plus noise, chunks 1 x 256 x 256) in a temporary folder;
2. **one process**: ``Upscaler.upscale`` over the whole volume, torch limited
   to ``--threads`` threads (default 1, like one single-thread dask worker),
   in a fresh subprocess; its time includes the intensity statistics, not the
   model loading;
3. for each ``--workers`` N: a ``LocalCluster`` of N single-thread worker
   processes (each with ``--threads`` torch threads), then
   :func:`napari_textsr.distributed.upscale_distributed` with ``--block``. Its
   time is the whole job as a user sees it once the cluster is up: client-side
   model load and statistics, every worker loading the model once, all blocks,
   and the pyramid. Cluster start-up is reported separately.

Peak memory per worker is ``ru_maxrss`` of each worker process after its
blocks (the whole process: Python, torch, the model and its largest block),
as :class:`~napari_textsr.distributed.DistributedResult` reports it.

Throughput is input megapixels (all planes) per second; the ratio is one
process's time over the job's. Results are printed as a markdown table (and
written as JSON with ``--json``). It is a benchmark, not a test: run it on an
idle machine for numbers worth quoting, and report the machine's load.
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

CAPTION = "DAPI-stained nuclei in a tissue section"


def make_volume(path: Path, planes: int, size: int) -> None:
    import numpy as np

    from napari_textsr.ngff import Axis, write_ome_zarr

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    data = np.empty((planes, size, size), np.uint16)
    for z in range(planes):
        plane = 2000 + 1500 * np.sin(yy / (9 + z)) * np.cos(xx / 13) + rng.normal(0, 100, (size, size))
        data[z] = np.clip(plane, 0, 65535).astype(np.uint16)
    axes = (Axis("z", "space", "micrometer"), Axis("y", "space", "micrometer"), Axis("x", "space", "micrometer"))
    write_ome_zarr(path, data, axes=axes, scale=(1.0, 0.2, 0.2), chunks=(1, 256, 256))


def single_process(args: argparse.Namespace) -> dict:
    """Runs in a subprocess: load the model, then time one Upscaler.upscale over the volume."""
    import torch

    from napari_textsr.inference import load_model
    from napari_textsr.ngff import read_ome_zarr

    torch.set_num_threads(args.threads)
    upscaler = load_model(args.model, device="cpu")
    data = read_ome_zarr(args.input).data[...]
    start = time.perf_counter()
    result = upscaler.upscale(data, CAPTION, attention=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tile": result.tile,
        "model": result.model.name,
    }


def distributed_run(args: argparse.Namespace, workers: int, output: Path) -> dict:
    import distributed

    from napari_textsr.distributed import WorkerModel, upscale_distributed

    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    startup = time.perf_counter() - start
    try:
        spec = WorkerModel(args.model, None, "cpu", None, args.threads)
        result = upscale_distributed(args.input, output, CAPTION, model=spec, scheduler=client, block=args.block)
    finally:
        client.close()
        cluster.close()
    return {
        "workers": workers,
        "seconds": result.seconds,
        "startup": startup,
        "blocks": result.blocks,
        "block_shape": list(result.block_shape),
        "halo": result.halo,
        "peak_rss": sorted(result.peak_rss.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="plane side in pixels (default: 2048)")
    parser.add_argument("--planes", type=int, default=8, help="number of planes (default: 8)")
    parser.add_argument("--model", default="default", help="model spec (default: the bundled x4 default)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--block", type=int, default=512, help="core block side (default: 512)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process/worker (default: 1)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--single-process", dest="input", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.input is not None:  # the one-process measurement, in its own process
        print(json.dumps(single_process(args)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        volume = Path(tmp) / "in.ome.zarr"
        make_volume(volume, args.planes, args.size)
        megapixels = args.planes * args.size * args.size / 1e6
        command = [
            sys.executable,
            __file__,
            "--single-process",
            str(volume),
            "--model",
            args.model,
            "--threads",
            str(args.threads),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        one = json.loads(output.strip().splitlines()[-1])
        args.input = volume
        runs = [distributed_run(args, n, Path(tmp) / f"out{n}.ome.zarr") for n in args.workers]
    load = os.getloadavg()
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end",
        "volume": f"{args.planes} x {args.size} x {args.size} uint16",
        "model": one["model"],
        "block": args.block,
        "threads": args.threads,
        "one_process": one,
        "runs": runs,
    }
    print(f"{report['volume']}, {report['model']}, block {args.block}, {args.threads} torch thread(s) per process")
    print(f"machine: {report['machine']}\n")
    print("| processes | seconds | MP/s | vs one process | peak memory per worker (MiB) | cluster start (s) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| one process | {one['seconds']:.1f} | {megapixels / one['seconds']:.3f} | 1.00x | "
        f"{one['peak_rss'] / 2**20:.0f} | - |"
    )
    for run in runs:
        peaks = ", ".join(f"{p / 2**20:.0f}" for p in run["peak_rss"])
        print(
            f"| {run['workers']} worker(s) | {run['seconds']:.1f} | {megapixels / run['seconds']:.3f} | "
            f"{one['seconds'] / run['seconds']:.2f}x | {peaks} | {run['startup']:.1f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
