"""Helpers shared by the training tests (test_trainer.py, test_cli_train.py, test_losses.py, test_torchrun.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_textsr._generators import drive
from napari_textsr.synthetic import synthetic_dataset
from napari_textsr.training.data import PatchSampler
from napari_textsr.training.degradations import Degradation
from napari_textsr.training.trainer import TrainConfig, Trainer

DATA = "synthetic:6:0:64"


def tiny_config(tmp_path: Path, method: str = "pdn", **changes) -> TrainConfig:
    values = dict(
        method=method,
        scale=4,
        preset="tiny",
        data=[DATA],
        steps=4,
        batch_size=4,
        lr_patch=8,
        learning_rate=2e-3,
        val_every=2,
        checkpoint_every=100,
        preview_every=100,
        val_max_images=1,
        val_crop=64,
        out_dir=tmp_path / "run",
        num_threads=1,
    )
    values.update(changes)
    return TrainConfig(**values)


def run_all(trainer: Trainer):
    """All events and the summary of a run."""
    events = []
    summary = drive(trainer.run(), events.append)
    return events, summary


def step_events(events):
    return [e for e in events if e.losses]


def fixed_batch(scale: int = 4):
    items = synthetic_dataset(4, seed=123, size=64)
    sampler = PatchSampler(items, Degradation(scale=scale), lr_patch=8)
    return sampler.batch(8, np.random.default_rng(7))
