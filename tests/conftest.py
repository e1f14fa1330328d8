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


@pytest.fixture(scope="session")
def _jpeg_weights_folder(tmp_path_factory):
    import dataclasses
    import shutil

    from napari_textsr import loading
    from napari_textsr.checkpoints import read_metadata, save_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    source = loading.WEIGHTS_DIR / "pdn-x2.textsr.safetensors"
    shutil.copy(source, folder)
    loaded = loading.load(str(source), device="cpu")
    training = read_metadata(source).training
    record = dataclasses.replace(training, degradation={**training.degradation, "p_jpeg": 1.0})
    save_checkpoint(folder / "pdn-x2-jpeg.textsr.safetensors", loaded.model, loaded.encoder, training=record)
    return folder


@pytest.fixture
def jpeg_model_weights(_jpeg_weights_folder, monkeypatch):
    """A bundled-models folder with ``pdn-x2`` and ``pdn-x2-jpeg``: the x2 default's weights, recorded
    as trained on JPEG inputs only (so ``default`` at x2 routes heavy JPEG inputs to it)."""
    from napari_textsr import loading

    monkeypatch.setattr(loading, "WEIGHTS_DIR", _jpeg_weights_folder)
    return _jpeg_weights_folder
