"""A fine-tuning run started from napari: layers in, TrainingEvents out, no Qt.

The training widget snapshots the chosen layers and settings on the GUI thread
(:class:`TrainingRequest`); :func:`run_training_in_worker` builds the training
items and drives :meth:`Trainer.run` in a napari ``thread_worker``;
:class:`TrainingControl` lets the GUI thread stop it (the Trainer then writes a
checkpoint of the last completed step).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

if TYPE_CHECKING:
    from napari_textsr.training.data import CaptionedImage
    from napari_textsr.training.trainer import TrainConfig, Trainer, TrainingEvent, TrainingSummary


@dataclass(frozen=True)
class TrainingLayer:
    """An Image layer's data and captions, as the training run sees them."""

    name: str
    data: Any
    rgb: bool
    captions: tuple[str, ...]


@dataclass
class TrainingRequest:
    """What to train on (layers and/or a captioned folder) and how (a TrainConfig)."""

    config: TrainConfig
    layers: list[TrainingLayer] = field(default_factory=list)
    folder: str | None = None


@dataclass
class TrainingOutcome:
    """How a run ended: its summary, or an error message; ``checkpoint`` is the last one written (if any)."""

    summary: TrainingSummary | None = None
    error: str | None = None
    checkpoint: Path | None = None
    cancelled: bool = False
    seconds: float = 0.0


class TrainingControl:
    """Stop a run from another thread, before or after its Trainer exists."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> None:
        with self._lock:
            self.trainer = trainer
            if self._stop.is_set():
                trainer.request_stop()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self.trainer is not None:
                self.trainer.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()


def training_items(request: TrainingRequest) -> list[CaptionedImage]:
    """Layers (each 2D slice of an nD layer is one image) plus the folder's images."""
    from napari_textsr.training.data import captioned_images_from_arrays
    from napari_textsr.training.trainer import load_training_items

    items: list[CaptionedImage] = []
    for layer in request.layers:
        if not any(c.strip() for c in layer.captions):
            raise ValueError(f"layer '{layer.name}' has no caption: type what it shows")
        items += captioned_images_from_arrays(
            [layer.data], [[c.strip() for c in layer.captions if c.strip()]], [layer.name], rgb=layer.rgb
        )
    if request.folder:
        folder_items, _descriptions = load_training_items([request.folder])
        items += folder_items
    if not items:
        raise ValueError("no training images: tick at least one Image layer (with a caption) or choose a folder")
    return items


def run_training_in_worker(
    request: TrainingRequest, control: TrainingControl
) -> Generator[TrainingEvent, None, TrainingOutcome]:
    """The training widget's ``thread_worker`` body; reports errors instead of raising."""
    from napari_textsr.training.trainer import Trainer

    start = time.perf_counter()
    trainer = None
    try:
        items = training_items(request)
        if control.stop_requested:
            return TrainingOutcome(cancelled=True, seconds=time.perf_counter() - start)
        trainer = Trainer(request.config, items)
        control.attach(trainer)
        summary = yield from trainer.run()
    except Exception as error:  # shown as a notification; the last good checkpoint stays usable
        checkpoint = trainer.last_checkpoint if trainer is not None else None
        return TrainingOutcome(error=str(error), checkpoint=checkpoint, seconds=time.perf_counter() - start)
    return TrainingOutcome(
        summary=summary,
        checkpoint=summary.checkpoint,
        cancelled=summary.cancelled,
        seconds=time.perf_counter() - start,
    )
