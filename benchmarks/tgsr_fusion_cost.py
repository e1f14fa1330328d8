"""What text fusion costs in TGSR: time of a preset with and without text fusion.

Runs the two models back to back (alternating which goes first, so load
changes on a shared machine hit both alike) under ``torch.inference_mode`` and prints per-repetition
wall-clock and process CPU time and their ratios. CPU time is the steadier
number when other processes compete for the cores.

    python benchmarks/tgsr_fusion_cost.py --size 512 --scale 4 --preset default --threads 1 --reps 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from napari_textsr.models import create_model
from napari_textsr.prompts import PromptEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="LR side in pixels")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--fusion-merge", choices=["add", "concat"], default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--caption", default="DAPI-stained nuclei, two in mitosis")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    encoder = PromptEncoder.from_spec("textsr-tiny:none")
    prompt = encoder.encode(args.caption)
    overrides = {} if args.fusion_merge is None else {"fusion_merge": args.fusion_merge}
    torch.manual_seed(0)
    models = {
        fusion: create_model(
            "tgsr", args.scale, args.preset, prompt_dim=encoder.embed_dim, text_fusion=fusion, **overrides
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
            order = (True, False) if rep % 2 == 0 else (False, True)
            for fusion in order:
                model = models[fusion]
                c0, t0 = time.process_time(), time.perf_counter()
                model(lr, prompt)
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
        print(f"median {label}: fusion {fused:.2f}s no-fusion {plain:.2f}s ratio {fused / plain:.3f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
