"""Slowdown of one upscale when other processes keep the CPUs busy.

    python benchmarks/bench_busy_machine.py --model pdn-x4 --size 256 --load 0 2 4 --threads auto 2 torch

For every number of background processes K (``--load``) and every thread
setting (``--threads``: ``auto`` = :func:`napari_textsr.devices.configure_threads`,
i.e. the CPUs this process may use; ``torch`` = torch's own default, not
touched; or a number), a fresh worker process loads the model once, warms up,
and times ``--repeats`` upscales of a ``--size`` x ``--size`` uint8 grey image;
the median is reported. The K background processes each spin a pure-Python
loop (one core each, no memory traffic) for at most ``--load-seconds`` and are
ended by this script when the measurement is done.

The report compares each median with the same thread setting at K = 0 and with
what fair sharing explains: a process with T threads among K single-threaded
spinners on C cores gets about C * T / (K + T) cores instead of min(T, C), so it
slows by about max(1, (K + T) / C) * min(T, C) / T. Anything far above that is
threads waiting for each other (a descheduled OpenMP thread holds the rest at
the next barrier). The machine may already be loaded by other work, which the
K = 0 row then includes: report the load average next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spinner(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from napari_textsr import load_model
    from napari_textsr.devices import configure_threads

    setting = args.threads[0]  # a worker measures one setting
    if setting == "auto":
        threads = configure_threads()
    elif setting == "torch":
        threads = torch.get_num_threads()
    else:
        threads = configure_threads(int(setting))
    upscaler = load_model(args.model, device="cpu")
    image = (np.random.default_rng(0).random((args.size, args.size)) * 255).astype(np.uint8)
    upscaler.upscale(image, args.caption, tile=0, attention=False)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        upscaler.upscale(image, args.caption, tile=0, attention=False)
        times.append(time.perf_counter() - start)
    print(json.dumps({"threads": threads, "seconds": times, "median": statistics.median(times)}))


def _measure(args: argparse.Namespace, load: int, threads: str) -> dict:
    spinners = [subprocess.Popen([sys.executable, __file__, "--spin", str(args.load_seconds)]) for _ in range(load)]
    try:
        time.sleep(0.5 if load else 0)  # let the spinners start
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--threads",
            threads,
            "--model",
            args.model,
            "--size",
            str(args.size),
            "--repeats",
            str(args.repeats),
            "--caption",
            args.caption,
        ]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.load_seconds)
        if result.returncode:
            raise SystemExit(result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        for process in spinners:  # only the processes this script started
            process.terminate()
        for process in spinners:
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pdn-x4", help="model spec (default: the bundled pdn-x4)")
    parser.add_argument("--size", type=int, default=256, help="input side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caption", default="DAPI-stained nuclei, two in mitosis")
    parser.add_argument("--load", type=int, nargs="+", default=[0, 2, 4], help="numbers of background spinners")
    parser.add_argument("--threads", nargs="+", default=["auto", "torch"], help="auto, torch or a number")
    parser.add_argument("--load-seconds", type=float, default=300, help="upper bound of each measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spin", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spin is not None:
        return _spinner(args.spin)
    if args.worker:
        return _worker(args)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    for threads in args.threads:
        for load in sorted(args.load):
            measured = _measure(args, load, threads)
            rows.append({"setting": threads, "load": load, "loadavg": os.getloadavg()[0], **measured})
    print(
        f"{args.model}, {args.size}x{args.size} grey, median of {args.repeats}; {cores} CPUs; "
        f"load average at the start {rows[0]['loadavg']:.1f}"
    )
    print("| threads setting | torch threads | background spinners | median s | slowdown | fair-share slowdown |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        base = next((r for r in rows if r["setting"] == row["setting"] and r["load"] == min(args.load)), row)
        t, k = row["threads"], row["load"]
        fair = max(1.0, (k + t) / cores) * min(t, cores) / t
        base_fair = max(1.0, (min(args.load) + t) / cores) * min(t, cores) / t
        print(
            f"| {row['setting']} | {t} | {k} | {row['median']:.2f} | {row['median'] / base['median']:.2f}x "
            f"| {fair / base_fair:.2f}x |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cores": cores, "model": args.model, "size": args.size, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
