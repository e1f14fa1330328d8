"""Data-parallel training with torchrun (two CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from napari_textsr.checkpoints import load_checkpoint
from napari_textsr.training.trainer import STATE_NAME
from trainer_support import DATA


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "napari_textsr.cli", "train", "--data", DATA, "--method", "pdn", "--preset", "tiny",
               "--steps", "3", "--batch-size", "4", "--patch", "8", "--val-every", "3", "--out", str(out),
               "--device", "cpu", "--threads", "1", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("finished at step 3/3") == 1  # only rank 0 prints
    loaded = load_checkpoint(out / "model.textsr.safetensors")
    record = loaded.metadata.training
    assert record.steps == 3 and record.extra["world_size"] == 2
    assert record.command.startswith("torchrun --nproc_per_node 2 -m napari_textsr.cli train --data")
    assert (out / STATE_NAME).is_file()
    with torch.no_grad():
        lr = torch.rand(1, 3, 8, 8)
        image = loaded.model(lr, loaded.encoder.encode(["a red square"])).image
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
