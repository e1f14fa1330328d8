"""Shared fixtures: a tiny random-init open_clip encoder and deterministic seeds."""

from __future__ import annotations

import os

import pytest

# Widget tests need Qt without a screen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Encoded captions are cached on disk between runs; tests keep theirs in a
# fresh folder of their own (not the user's cache, not shared between runs).
if "NAPARI_TEXTSR_EMBEDDING_CACHE" not in os.environ:
    import tempfile

    os.environ["NAPARI_TEXTSR_EMBEDDING_CACHE"] = tempfile.mkdtemp(prefix="textsr-test-embeddings-")

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before Qt: a known crash when PyQt is imported first)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_encoder():
    """The ``textsr-tiny`` open_clip architecture, random init (no downloads)."""
    from napari_textsr.prompts import PromptEncoder

    return PromptEncoder.from_spec("textsr-tiny:none")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
