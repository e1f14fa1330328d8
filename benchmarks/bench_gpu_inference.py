"""Inference time of the bundled default models on a GPU, in float32 and in float16 autocast.

    python benchmarks/bench_gpu_inference.py --json bench_gpu_inference.json

For each default model (x2, x4, x8, x16): a 512x512 uint8 RGB LR image
upscaled in one piece (``tile=0``, no attention maps) through the engine
(normalisation, model, conversion back), median of ``--repeats`` runs after
two warm-ups, ``torch.cuda.synchronize`` before each clock read; peak GPU
memory of the run (``torch.cuda.max_memory_allocated``). float16 is the
engine's ``half=True`` (autocast; the default on CUDA). Also: how far the
float16 output is from the float32 one (PSNR, dB, on the 8-bit outputs).
Needs a CUDA GPU; exits with 2 where there is none.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

CAPTION = "a brown bear and two cubs walking along a rocky shore"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the LR test image (px)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from napari_textsr.inference import load_model
    from napari_textsr.metrics import psnr

    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    # A smooth random field plus texture, so no model meets a degenerate input.
    coarse = rng.random((args.size // 16, args.size // 16, 3))
    image = np.kron(coarse, np.ones((16, 16, 1))) * 200 + rng.random((args.size, args.size, 3)) * 55
    image = image.astype(np.uint8)
    rows = []
    for scale in args.scales:
        outputs = {}
        for half in (False, True):
            upscaler = load_model("default", scale=scale, device="cuda", half=half)
            for _ in range(2):
                upscaler.upscale(image, CAPTION, tile=0, attention=False)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = upscaler.upscale(image, CAPTION, tile=0, attention=False)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            outputs[half] = result.image
            rows.append({
                "model": upscaler.description.name, "scale": scale, "half": half,
                "lr_size": args.size, "seconds": statistics.median(times),
                "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
            })  # fmt: skip
            print(f"x{scale:<2} {'float16' if half else 'float32'}: {rows[-1]['seconds'] * 1000:8.1f} ms, "
                  f"peak {rows[-1]['peak_gpu_bytes'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
            del upscaler
            torch.cuda.empty_cache()
        rows[-1]["float16_vs_float32_psnr_db"] = psnr(
            torch.from_numpy(outputs[True]).double(), torch.from_numpy(outputs[False]).double(), 255.0
        )
        print(f"x{scale:<2} float16 vs float32 output: {rows[-1]['float16_vs_float32_psnr_db']:.1f} dB", flush=True)
    report = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "image": f"{args.size}x{args.size} uint8 RGB, tile=0, no attention maps",
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
