"""The learning-rate schedule both training loops use: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

__all__ = ["cosine_factor"]


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at 0-based ``step`` of ``total``.

    Linear warm-up ``(step + 1) / warmup`` for the first ``warmup`` steps, then
    half a cosine from 1 down to ``min_ratio`` at ``total`` (SGDR without
    restarts, Loshchilov & Hutter 2017; open_clip's ``cosine_lr``); constant
    ``min_ratio`` after ``total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
