"""Inference speed and memory of each method, beside bicubic and the same backbone without text.

    python benchmarks/bench_inference.py --json bench_inference.json

For every method (default preset, x4, the ``textsr-clip-s`` encoder architecture
with random weights, i.e. the shipped configuration untrained):

* speed on a 512x512 uint8 RGB image, upscaled in one piece (``tile=0``) through
  the engine (normalisation, model, conversion back): the model with text
  fusion, the same backbone built with ``text_fusion=False``, the fusion model
  also returning its attention maps, and bicubic (torch, the same conversions).
  The variants run alternately in one process, so background load hits them
  alike; the median of ``--repeats`` runs is reported.
* peak memory of each of those runs, each in a fresh process;
* peak memory (and time) of a 4096x4096 uint16 grey image at x4 with
  automatic tiling, as ``textsr upscale`` runs it (no attention maps).

Peak memory is the peak resident set size (``ru_maxrss``) of a fresh Python
process that imports the package, builds the model and encoder, makes the
input and runs the measurement once after a small warm-up: everything the
process ever held, interpreter and torch included. "of which the run" is that
peak minus the resident size just before the measured run (model and input
already in memory).

Every measurement runs in a subprocess of this script (``--worker``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from napari_textsr.methods import method_names

METHODS = method_names()
ENCODER = "textsr-clip-s:none"
CAPTION = "a white van with a dented rear door parked by a brick wall"


# --------------------------------------------------------------------------- worker side
def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _rgb_image(size: int):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(0)
    planes = [0.5 + 0.25 * np.sin(2 * np.pi * (f * x + g * y)) for f, g in ((3, 1), (1, 5), (7, 2))]
    image = np.stack(planes, -1) + 0.1 * rng.random((size, size, 3), dtype=np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _grey16_image(size: int):
    """A uint16 microscopy-like image built row block by row block (no float copy of it all)."""
    import numpy as np

    image = np.empty((size, size), np.uint16)
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32) / size
    for y0 in range(0, size, 256):
        y = (np.arange(y0, min(y0 + 256, size), dtype=np.float32) / size)[:, None]
        block = (
            2000
            + 1500 * np.sin(2 * np.pi * 40 * x)[None] * np.cos(2 * np.pi * 30 * y)
            + 300 * rng.random((y.shape[0], size), dtype=np.float32)
        )
        image[y0 : y0 + y.shape[0]] = np.clip(block, 0, 65535).astype(np.uint16)
    return image


def _upscaler(method: str, preset: str, scale: int, fusion: bool):
    import torch

    from napari_textsr.inference import Upscaler
    from napari_textsr.models import create_model
    from napari_textsr.prompts import PromptEncoder

    encoder = PromptEncoder.from_spec(ENCODER)
    torch.manual_seed(0)
    model = create_model(method, scale, preset, prompt_dim=encoder.embed_dim, text_fusion=fusion)
    return Upscaler(model, encoder, device="cpu")


def _bicubic(image, scale: int):
    import numpy as np
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        out = (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(out)


def worker(task: dict) -> dict:
    import torch

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    kind = task["kind"]
    scale, size = task["scale"], task["size"]
    if kind == "speed":  # alternate the variants, report every time
        image = _rgb_image(size)
        variants = {}
        upscalers = {}
        for variant in ("fusion", "no_fusion"):
            upscalers[variant] = _upscaler(task["method"], task["preset"], scale, variant == "fusion")
        runs = {
            "fusion": lambda: upscalers["fusion"].upscale(image, CAPTION, tile=0, attention=False),
            "no_fusion": lambda: upscalers["no_fusion"].upscale(image, CAPTION, tile=0, attention=False),
            "fusion_with_maps": lambda: upscalers["fusion"].upscale(image, CAPTION, tile=0, attention=True),
            "bicubic": lambda: _bicubic(image, scale),
        }
        small = _rgb_image(64)
        for upscaler in upscalers.values():  # warm-up (and caption encoding, cached after)
            upscaler.upscale(small, CAPTION, tile=0)
        for name in runs:
            variants[name] = []
        for _ in range(task["repeats"]):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                variants[name].append(time.perf_counter() - start)
        encoder = upscalers["fusion"].encoder
        encoder.clear_cache()
        start = time.perf_counter()
        encoder.encode([CAPTION + " (fresh)"])
        encode_seconds = time.perf_counter() - start
        return {
            "seconds": variants,
            "parameters": {k: sum(p.numel() for p in u.model.parameters()) for k, u in upscalers.items()},
            "caption_encoding_seconds": encode_seconds,
            "threads": torch.get_num_threads(),
        }
    if kind == "memory":  # one variant, one run, in this fresh process
        image = _rgb_image(size) if task["dtype"] == "uint8" else _grey16_image(size)
        if task["variant"] == "bicubic":
            _bicubic(_rgb_image(64), scale)
            before = _rss_bytes()
            start = time.perf_counter()
            _bicubic(image, scale)
            seconds = time.perf_counter() - start
            tile, n_tiles = 0, 1
        else:
            upscaler = _upscaler(task["method"], task["preset"], scale, task["variant"] != "no_fusion")
            upscaler.upscale(image[:64, :64], CAPTION, tile=0, attention=task["attention"])
            events = []
            before = _rss_bytes()
            start = time.perf_counter()
            result = upscaler.upscale(
                image, CAPTION, tile=task["tile"], attention=task["attention"], progress=events.append
            )
            seconds = time.perf_counter() - start
            tile, n_tiles = result.tile, events[-1].total
            del result
        return {
            "seconds": seconds,
            "peak_rss": _peak_rss_bytes(),
            "rss_before_run": before,
            "tile": tile,
            "n_tiles": n_tiles,
        }
    raise ValueError(f"unknown task kind {kind!r}")


# --------------------------------------------------------------------------- orchestration
def _run_worker(task: dict, timeout: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)]
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.time() - started
    return result


def _machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            total = int(fh.readline().split()[1]) * 1024
    except OSError:
        total = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(total / 1e9, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def markdown(report: dict) -> str:
    args = report["settings"]
    size, scale = args["size"], args["scale"]
    out_mp = (size * scale) ** 2 / 1e6
    repeats = args["repeats"]
    lines = [
        f"Speed and memory at x{scale} on a {size}x{size} uint8 RGB image in one piece (tile=0): best and "
        f"median of {repeats} runs (variants alternate, so background load hits them alike; ratios use the "
        "best run, the least disturbed). MP/s = output megapixels per second (best run). Peak RSS: whole "
        "fresh process (Python + torch + model + input + run); 'run' = what the measured run added.",
        "",
        "| method | variant | parameters | best s | median s | MP/s | time / bicubic | time / no text | peak RSS (MiB) | run (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bicubic_best = bicubic_median = None
    labels = {
        "fusion": "text fusion",
        "fusion_with_maps": "text fusion + attention maps",
        "no_fusion": "same backbone, no text",
    }
    for method, entry in report["methods"].items():
        runs = entry["speed"]["seconds"]
        best = {k: min(v) for k, v in runs.items()}
        median = {k: statistics.median(v) for k, v in runs.items()}
        bicubic_best, bicubic_median = best["bicubic"], median["bicubic"]
        for variant, label in labels.items():
            memory = entry.get("memory", {}).get(variant)
            params = entry["speed"]["parameters"]["no_fusion" if variant == "no_fusion" else "fusion"]
            lines.append(
                f"| {method} | {label} | {params:,} | {best[variant]:.2f} | {median[variant]:.2f} | "
                f"{out_mp / best[variant]:.2f} | {best[variant] / best['bicubic']:,.0f}x | "
                f"{best[variant] / best['no_fusion']:.2f}x | "
                f"{_mb(memory['peak_rss']) if memory else '-'} | "
                f"{_mb(memory['peak_rss'] - memory['rss_before_run']) if memory else '-'} |"
            )
    if bicubic_best is not None:
        memory = report.get("bicubic_memory")
        lines.append(
            f"| bicubic | torch F.interpolate | 0 | {bicubic_best:.3f} | {bicubic_median:.3f} | "
            f"{out_mp / bicubic_best:.1f} | 1x | - | "
            f"{_mb(memory['peak_rss']) if memory else '-'} | "
            f"{_mb(memory['peak_rss'] - memory['rss_before_run']) if memory else '-'} |"
        )
    lines += [
        "",
        "Text fusion cost (target <= 1.3x the same backbone without text). 'best' compares best runs; "
        "'bound' also counts the 'fusion + attention maps' runs, which run the same network and do more "
        "work, so their best is an upper bound on the fusion network's time too:",
        "",
    ]
    for method, entry in report["methods"].items():
        runs = entry["speed"]["seconds"]
        ratio = min(runs["fusion"]) / min(runs["no_fusion"])
        bound = min(runs["fusion"] + runs["fusion_with_maps"]) / min(runs["no_fusion"])
        median_ratio = statistics.median(runs["fusion"]) / statistics.median(runs["no_fusion"])
        if ratio <= 1.3:
            verdict = "meets the target"
        elif bound <= 1.3:
            verdict = "at the target within the noise"
        else:
            verdict = "MISSES the target"
        lines.append(f"- {method}: best {ratio:.2f}x, bound {bound:.2f}x, medians {median_ratio:.2f}x ({verdict})")
    large = {m: e["large"] for m, e in report["methods"].items() if e.get("large")}
    if large:
        big = args["large"]
        lines += [
            "",
            f"A {big}x{big} uint16 grey image at x{scale} ({(big * scale) ** 2 / 1e6:,.0f} MP output, "
            f"{(big * scale) ** 2 * 2 / 2**20:,.0f} MiB as uint16), automatic tiling, no attention maps, "
            "one run each (target: peak < 4 GB):",
            "",
            "| method | tile (LR px) | tiles | seconds | MP/s | peak RSS (MiB) | run (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for method, m in large.items():
            lines.append(
                f"| {method} | {m['tile']} | {m['n_tiles']} | {m['seconds']:.0f} | "
                f"{(big * scale) ** 2 / 1e6 / m['seconds']:.2f} | {_mb(m['peak_rss'])} | "
                f"{_mb(m['peak_rss'] - m['rss_before_run'])} |"
            )
    machine = report["machine"]
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM, "
        f"torch {machine['torch']} ({args.get('threads') or machine['torch_threads']} threads), "
        f"Python {machine['python']}"
        + (f", GPU {machine['cuda']}" if machine["cuda"] else ", CPU only")
        + f". Encoder {ENCODER}; models untrained (timing does not depend on the weights)."
        + (
            f" Load average when the run started: {machine['load_average_at_start'][0]:.1f} (other users' jobs)."
            if machine.get("load_average_at_start")
            else ""
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="side of the speed test image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=4096, help="side of the uint16 memory test image (0: skip)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per worker")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only print the tables of an earlier run's JSON report",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0

    from napari_textsr.models import available_methods, get_model_class

    report = {
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "machine": _machine(),
        "methods": {},
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    common = {"preset": args.preset, "scale": args.scale, "threads": args.threads}
    for method in args.methods:
        if method not in available_methods():
            raise SystemExit(f"unknown method {method!r}")
        try:
            get_model_class(method)
        except ModuleNotFoundError:
            print(f"skipping {method}: its model module is not there yet", file=sys.stderr)
            continue
        print(f"[{method}] speed ...", file=sys.stderr, flush=True)
        entry: dict = {
            "speed": _run_worker(
                {"kind": "speed", "method": method, "size": args.size, "repeats": args.repeats, **common}, args.timeout
            )
        }
        entry["memory"] = {}
        for variant in ("fusion", "fusion_with_maps", "no_fusion"):
            print(f"[{method}] memory, {variant} ...", file=sys.stderr, flush=True)
            entry["memory"][variant] = _run_worker(
                {
                    "kind": "memory",
                    "method": method,
                    "variant": variant,
                    "size": args.size,
                    "dtype": "uint8",
                    "tile": 0,
                    "attention": variant == "fusion_with_maps",
                    **common,
                },
                args.timeout,
            )
        report["methods"][method] = entry
        if args.json:  # partial results survive an interrupted run
            args.json.write_text(json.dumps(report, indent=2))
    report["bicubic_memory"] = _run_worker(
        {
            "kind": "memory",
            "variant": "bicubic",
            "size": args.size,
            "dtype": "uint8",
            "tile": 0,
            "attention": False,
            **common,
        },
        args.timeout,
    )
    if args.large:
        for method in report["methods"]:
            print(f"[{method}] {args.large}x{args.large} uint16, automatic tiling ...", file=sys.stderr, flush=True)
            report["methods"][method]["large"] = _run_worker(
                {
                    "kind": "memory",
                    "method": method,
                    "variant": "fusion",
                    "size": args.large,
                    "dtype": "uint16",
                    "tile": None,
                    "attention": False,
                    **common,
                },
                args.timeout,
            )
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    report["markdown"] = table
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
