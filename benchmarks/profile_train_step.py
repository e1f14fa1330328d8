"""Where a training step's time goes: wall time per step, and the operations that take it.

    # on a GPU: the bundled x4 PDN with its own recipe, at the GPU stage's batch
    python benchmarks/profile_train_step.py --init pdn-x4 --device cuda --batch-size 128 --json prof-x4.json
    # on this project's CPU: the fixed cost of a step (batch 1, 8 px LR patches)
    python benchmarks/profile_train_step.py --init pdn-x4 --batch-size 1 --patch 8 --threads 1

A fine-tune as ``textsr train --init MODEL --recipe-from init`` runs (the
model's own recorded recipe, on ``--data``; ``--batch-size`` and ``--patch``
override it), driven step by step through ``Trainer.run()``: ``--warmup``
steps untimed, ``--timed`` steps on the wall clock (``torch.cuda.synchronize``
before each clock read on CUDA), then ``--profiled`` steps under
``torch.profiler``. Prints milliseconds and images per second of the timed
steps, the time to draw one batch on one thread (what each batch worker
does: crops, degradations, captions), the aten operations per profiled step, and the operations with the
most self CPU time and (on CUDA) self CUDA time. The profiler's own overhead
is in its numbers, not in the timed ones. Nothing is written but a scratch
run folder (deleted) and ``--json``. The batches come from ``--workers``
processes as in the GPU stage (``scripts/gpu_train.sh``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="pdn-x4", help="bundled model or checkpoint to fine-tune")
    parser.add_argument("--data", action="append", default=None, help="captioned folders (default: BSD200 + T91)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--patch", type=int, default=None, help="LR patch side; default: the recipe's")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0, help="batch worker processes")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--timed", type=int, default=20)
    parser.add_argument("--profiled", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15, help="operations listed per table")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    for name in ("warmup", "timed", "profiled"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from napari_textsr.cli import build_parser
    from napari_textsr.cli.train import build_config
    from napari_textsr.training.trainer import Trainer

    data = args.data or [str(DATA / "bsd200"), str(DATA / "t91")]
    scratch = Path(tempfile.mkdtemp(prefix="textsr-profile-"))
    steps = args.warmup + args.timed + args.profiled
    train_args = ["train", "--init", args.init, "--recipe-from", "init", "--out", str(scratch / "run"),
                  "--steps", str(steps + 1), "--val-every", str(10**9), "--checkpoint-every", str(10**9),
                  "--device", args.device, "--workers", str(args.workers), "--no-progress"]  # fmt: skip
    for path in data:
        train_args += ["--data", path]
    for flag, value in (("--batch-size", args.batch_size), ("--patch", args.patch), ("--threads", args.threads)):
        if value is not None:
            train_args += [flag, str(value)]
    config = build_config(build_parser(train_args, full=True).parse_args(train_args))
    draw_ms = time_batch_drawing(config, args.timed)
    trainer = Trainer(config, overwrite=True)
    cuda = torch.cuda.is_available() and args.device != "cpu"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    done = 0
    started = timed_seconds = 0.0
    events = trainer.run()
    try:
        for event in events:
            if not event.losses:
                continue  # messages, not a step
            done += 1
            if done == args.warmup:
                sync()
                started = time.perf_counter()
            elif done == args.warmup + args.timed:
                sync()
                timed_seconds = time.perf_counter() - started
                prof.__enter__()
            elif done == steps:
                sync()
                prof.__exit__(None, None, None)
                trainer.request_stop()
    finally:
        events.close()
        shutil.rmtree(scratch, ignore_errors=True)

    averages = prof.key_averages()
    ms_per_step = 1000 * timed_seconds / args.timed
    result = {
        "init": args.init,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": config.batch_size,
        "lr_patch": config.lr_patch,
        "mixed_precision": config.mixed_precision,
        "workers": args.workers,
        "batch_draw_ms": round(draw_ms, 2),
        "images_per_second_per_batch_worker": round(1000 * config.batch_size / draw_ms, 1),
        "ms_per_step": round(ms_per_step, 2),
        "images_per_second": round(1000 * config.batch_size / ms_per_step, 1),
        "aten_ops_per_step": round(sum(a.count for a in averages if a.key.startswith("aten::")) / args.profiled),
    }
    print(
        f"{args.init}, batch {config.batch_size}, LR patch {config.lr_patch} px, {result['device']}: "
        f"{ms_per_step:.1f} ms per step, {result['images_per_second']} images/s "
        f"({args.timed} steps timed); {result['aten_ops_per_step']} aten operations per step; drawing a batch "
        f"(degradations, one thread) {draw_ms:.1f} ms, {result['images_per_second_per_batch_worker']} images/s "
        "per batch worker"
    )
    tables = {"self_cpu": "self_cpu_time_total"} | ({"self_cuda": "self_device_time_total"} if cuda else {})
    for name, key in tables.items():
        table = averages.table(sort_by=key, row_limit=args.rows)
        print(table)
        result[name] = [
            {
                "op": a.key,
                "calls_per_step": a.count / args.profiled,
                "ms_per_step": getattr(a, key) / 1000 / args.profiled,
            }
            for a in sorted(averages, key=lambda a: -getattr(a, key))[: args.rows]
        ]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def time_batch_drawing(config, batches: int) -> float:
    """Milliseconds to draw one training batch (crops, degradations, captions) on one torch thread."""
    import torch

    from napari_textsr.training.data import PatchSampler, split_train_val, step_rng
    from napari_textsr.training.trainer import load_training_items

    items, _ = load_training_items(config.data)
    train_items, _ = split_train_val(items, config.val_fraction, config.split_seed)
    sampler = PatchSampler(train_items, config.degradation, config.lr_patch, config.augment, config.captions)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a batch worker
    try:
        sampler.batch(config.batch_size, step_rng(config.seed, 0, 0))  # warm-up
        start = time.perf_counter()
        for step in range(1, batches + 1):
            sampler.batch(config.batch_size, step_rng(config.seed, 0, step))
        return 1000 * (time.perf_counter() - start) / batches
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
