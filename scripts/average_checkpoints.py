"""Average the weights of checkpoints of one architecture (a "model soup").

    python scripts/average_checkpoints.py OUT.textsr.safetensors A.textsr.safetensors B.textsr.safetensors \\
        [C.textsr.safetensors@0.5 ...]

Writes the weighted mean of the models' floating-point weights (uniform unless
a path ends in ``@WEIGHT``; weights are normalised to sum to 1) to OUT, with the
first checkpoint's encoder, metadata and training record; the record's
``extra["averaged_from"]`` lists every input's path, SHA-256 and weight. This is
the uniform soup of Wortsman et al., "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference
time" (ICML 2022): fine-tunes of one model often lie in one basin, where their
mean can beat each of them. docs/training.md ("Averaging stages", 7 December
2026) has what it gave for the PDN stages here: nothing past the best stage.

Raises CheckpointError (from loading) for an unreadable input and ValueError
for fewer than two inputs, a weight <= 0, or inputs of different method,
scale or configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from napari_textsr.checkpoints import TrainingRecord, load_checkpoint, save_checkpoint
from napari_textsr.report import sha256_file


def parse_input(text: str) -> tuple[Path, float]:
    """``PATH`` or ``PATH@WEIGHT`` -> (path, weight); the weight defaults to 1 and must be > 0."""
    path, _, weight = text.rpartition("@") if "@" in text else (text, "", "1")
    value = float(weight)
    if value <= 0:
        raise ValueError(f"{text}: the weight must be > 0")
    return Path(path), value


def average_checkpoints(output: Path, inputs: list[tuple[Path, float]]) -> Path:
    """Write the weighted mean of ``inputs``' model weights to ``output`` (see the module docstring)."""
    if len(inputs) < 2:
        raise ValueError("give at least two checkpoints to average")
    loaded = [load_checkpoint(path) for path, _ in inputs]
    first = loaded[0]
    for path_weight, other in zip(inputs[1:], loaded[1:]):
        same = (other.metadata.method, other.metadata.scale, other.metadata.config)
        if same != (first.metadata.method, first.metadata.scale, first.metadata.config):
            raise ValueError(f"{path_weight[0]} is not the same model as {inputs[0][0]} (method, scale, config)")
    total = sum(weight for _, weight in inputs)
    weights = [weight / total for _, weight in inputs]
    states = [c.model.state_dict() for c in loaded]
    mean = {
        name: sum(w * s[name].double() for w, s in zip(weights, states)).to(value.dtype)
        if value.is_floating_point()
        else value
        for name, value in states[0].items()
    }
    first.model.load_state_dict(mean)
    record = first.metadata.training or TrainingRecord()
    sources = [
        {"path": str(path), "sha256": sha256_file(path), "weight": weight} for (path, _), weight in zip(inputs, weights)
    ]
    record = dataclasses.replace(record, extra={**record.extra, "averaged_from": sources})
    return save_checkpoint(
        output,
        first.model,
        first.encoder,
        name=first.metadata.name,
        description=f"weight average of {len(inputs)} checkpoints",
        training=record,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("inputs", nargs="+", help="checkpoints, each PATH or PATH@WEIGHT")
    args = parser.parse_args()
    with torch.inference_mode():
        path = average_checkpoints(args.output, [parse_input(text) for text in args.inputs])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
