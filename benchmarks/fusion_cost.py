"""What text fusion costs: one method's model with and without its text modules.

Runs the two models (``text_fusion=True`` and ``False``: the same backbone
without any text-conditioned module) back to back under ``torch.inference_mode``,
alternating which goes first so that load changes on a shared machine hit both
alike, and prints per-repetition wall-clock and process CPU time and their
ratios (CPU time is the steadier number when other processes compete for the
cores). ``--model-option`` sets other config fields, e.g. TGSR's
``fusion_merge=concat`` (the paper's concatenation).

    python benchmarks/fusion_cost.py --method tgsr --size 512 --scale 4 --preset default --threads 1 --reps 4
    python benchmarks/fusion_cost.py --method clipsr --encoder textsr-clip-s:none --threads 1 --reps 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from napari_textsr.methods import method_names
from napari_textsr.models import create_model
from napari_textsr.prompts import PromptEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=method_names(), required=True)
    parser.add_argument("--size", type=int, default=512, help="LR side in pixels")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--encoder", default="textsr-tiny:none", help="prompt encoder spec (sets prompt_dim)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--caption", default="DAPI-stained nuclei, two in mitosis")
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="config override, e.g. fusion_merge=concat (repeatable)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    encoder = PromptEncoder.from_spec(args.encoder)
    prompt = encoder.encode(args.caption)
    overrides = dict(option.split("=", 1) for option in args.model_option)
    torch.manual_seed(0)
    models = {
        fusion: create_model(
            args.method, args.scale, args.preset, prompt_dim=encoder.embed_dim, text_fusion=fusion, **overrides
        ).eval()
        for fusion in (True, False)
    }
    lr = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for model in models.values():
            model(lr[:, :, :64, :64], prompt)  # warm-up (oneDNN primitive creation)
        for rep in range(args.reps):
            for fusion in (True, False) if rep % 2 == 0 else (False, True):
                c0, t0 = time.process_time(), time.perf_counter()
                models[fusion](lr, prompt)
                wall[fusion].append(time.perf_counter() - t0)
                cpu[fusion].append(time.process_time() - c0)
            print(
                f"rep {rep}: wall fusion {wall[True][-1]:.2f}s no-fusion {wall[False][-1]:.2f}s "
                f"ratio {wall[True][-1] / wall[False][-1]:.3f} | cpu fusion {cpu[True][-1]:.2f}s "
                f"no-fusion {cpu[False][-1]:.2f}s ratio {cpu[True][-1] / cpu[False][-1]:.3f}",
                flush=True,
            )
    for label, times in (("wall", wall), ("cpu", cpu)):
        fused, plain = statistics.median(times[True]), statistics.median(times[False])
        ratios = [a / b for a, b in zip(times[True], times[False])]
        print(
            f"median {label}: fusion {fused:.2f}s no-fusion {plain:.2f}s ratio {fused / plain:.3f} "
            f"(median per-rep ratio {statistics.median(ratios):.3f}, ratio of minima "
            f"{min(times[True]) / min(times[False]):.3f})"
        )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
