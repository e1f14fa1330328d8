"""One super-resolution run, as plain data and a generator: shared by the widget and the scripted path.

:func:`make_job` reads everything it needs from the viewer on the GUI thread;
:func:`iter_job` is the work (any thread), a generator of :class:`JobProgress`
events after each tile that returns the results; :func:`run_job_in_worker` wraps it
for a napari ``thread_worker`` (loads the model, turns exceptions and
cancellation into a :class:`JobOutcome` so the GUI shows one notification).
No Qt here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Sequence

from napari_textsr._generators import relay
from napari_textsr.loading import default_for_input
from napari_textsr.napari.layers import LayerDataTuple, SourceLayer, result_layer_data, select_input, source_from_layer
from napari_textsr.napari.model_store import MODEL_STORE, ModelStore

if TYPE_CHECKING:
    from napari_textsr.imageio import JpegEvidence
    from napari_textsr.inference import Upscaler, UpscaleResult


@dataclass(frozen=True)
class UpscaleJob:
    """Everything one run needs; built on the GUI thread, read by the worker.

    ``data`` is the input array (the whole layer, or one slice with its
    leading axes kept at size 1), ``offset`` its data index in the layer's
    leading axes. Several ``captions`` with ``compare`` make one stack.
    ``engine_kwargs`` go to :meth:`Upscaler.iter_upscale` as they are
    (e.g. ``reference``, ``percentiles``).
    """

    source: SourceLayer
    data: Any
    offset: tuple[int, ...]
    captions: tuple[str, ...]
    model: str
    compare: bool = False
    device: str = "auto"
    scale: int | None = None
    tile: int | None = None
    consistency: bool | str = False
    attention: bool = True
    # Maps on the model's own grid (the input's for PDN and CLIP-SR): the layers get a scale that
    # overlays them on the output, and napari holds scale**2 times fewer pixels.
    attention_grid: str = "native"
    # EDSR+'s geometric self-ensemble (Upscaler.self_ensemble): eight times the compute.
    self_ensemble: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobProgress:
    """Where a run is: counts are 0-based indices except ``done``/``total`` (tiles over the whole run)."""

    done: int
    total: int
    caption_index: int = 0
    n_captions: int = 1
    slice_index: int = 0
    n_slices: int = 1
    tile_index: int = 0
    n_tiles: int = 1
    message: str = ""
    loading: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class JobOutcome:
    """How a worker run ended: results, or cancelled, or an error message for the user.

    ``layer_data``: the layers to add (:func:`~napari_textsr.napari.layers.result_layer_data`),
    built in the worker when it was given the viewer's layer names.
    """

    results: list[UpscaleResult] = field(default_factory=list)
    layer_data: list[LayerDataTuple] = field(default_factory=list)
    cancelled: bool = False
    error: str | None = None
    seconds: float = 0.0
    upscaler: Upscaler | None = None


def split_captions(text: str, compare: bool) -> tuple[str, ...]:
    """The caption box's text -> captions: one per non-empty line when comparing, else the whole text."""
    if compare:
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not lines:
            raise ValueError("caption comparison needs at least one caption, one per line")
        return lines
    return (" ".join(text.split()),)


def make_job(
    layer: Any,
    captions: str | Sequence[str],
    model: str,
    *,
    compare: bool | None = None,
    whole_stack: bool = True,
    point: Sequence[float] | None = None,
    device: str = "auto",
    scale: int | None = None,
    tile: int | None = None,
    consistency: bool | str = False,
    attention: bool = True,
    self_ensemble: bool = False,
    jpeg: JpegEvidence | None = None,
    **engine_kwargs: Any,
) -> UpscaleJob:
    """A job for ``layer`` (TypeError/ValueError with a user-facing message if it cannot be upscaled).

    ``captions``: one caption, or a sequence of captions (compared: one stack).
    ``model``: a model spec; the default (``"default"`` or the default's own
    name) becomes the bundled model trained for JPEG inputs when ``jpeg``
    shows quality <= 60 (:func:`napari_textsr.loading.default_for_input`).
    ``jpeg``: what the layer showed of JPEG compression
    (:func:`~napari_textsr.napari.layers.layer_jpeg_evidence`), recorded in
    the outputs' metadata (``input_jpeg_quality``, ``input_jpeg_quality_from``).
    ``point``: the viewer's current world point (``viewer.dims.point``), used
    when ``whole_stack`` is False for an nD layer.
    """
    source = source_from_layer(layer, jpeg=jpeg)
    if isinstance(captions, str):
        caption_list: tuple[str, ...] = (captions,)
    else:
        caption_list = tuple(captions)
        if not caption_list or not all(isinstance(c, str) for c in caption_list):
            raise TypeError("captions must be a string or a non-empty sequence of strings")
    if compare is None:
        compare = len(caption_list) > 1
    data, offset = select_input(layer, whole_stack=whole_stack, point=point)
    return UpscaleJob(
        source=source,
        data=data,
        offset=offset,
        captions=caption_list,
        model=str(default_for_input(model, scale, jpeg.quality if jpeg is not None else None)),
        compare=compare,
        device=device,
        scale=scale,
        tile=tile,
        consistency=consistency,
        attention=attention,
        self_ensemble=self_ensemble,
        engine_kwargs=dict(engine_kwargs),
    )


class _Cancelled(Exception):
    """Raised between tiles when the job's cancel event is set; ends the run with None."""


def iter_job(
    job: UpscaleJob, upscaler: Upscaler, cancel: threading.Event | None = None
) -> Generator[JobProgress, None, list[UpscaleResult] | None]:
    """Upscale the job's data once per caption, yielding progress after each tile.

    Returns the results, or None when ``cancel`` was set (checked between
    tiles; the engine's generator is closed, nothing partial is kept).
    Exceptions from the engine (ValueError for bad input, MemoryError...) propagate.
    """
    results = []
    n = len(job.captions)
    upscaler = upscaler.with_self_ensemble(job.self_ensemble)
    for i, caption in enumerate(job.captions):
        if cancel is not None and cancel.is_set():
            return None
        label = f"caption {i + 1}/{n}: " if n > 1 else ""

        def progress(event, i: int = i, label: str = label) -> list[JobProgress]:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            return [
                JobProgress(
                    done=i * event.total + event.done,
                    total=n * event.total,
                    caption_index=i,
                    n_captions=n,
                    slice_index=event.slice_index,
                    n_slices=event.n_slices,
                    tile_index=event.tile_index,
                    n_tiles=event.n_tiles,
                    message=label + event.message,
                )
            ]

        generator = upscaler.iter_upscale(
            job.data,
            caption,
            rgb=job.source.rgb,
            tile=job.tile,
            consistency=job.consistency,
            attention=job.attention,
            attention_grid=job.attention_grid,
            **job.engine_kwargs,
        )
        try:
            results.append((yield from relay(generator, progress)))  # relay closes the engine's generator
        except _Cancelled:
            return None
    return results


def run_job_in_worker(
    job: UpscaleJob,
    cancel: threading.Event,
    store: ModelStore = MODEL_STORE,
    existing_names: Sequence[str] | None = None,
) -> Generator[JobProgress, None, JobOutcome]:
    """The widget's ``thread_worker`` body: load (cached), run, and report instead of raising.

    With ``existing_names`` (the viewer's layer names when the run started) the
    layer data tuples are built here too (stacking, contrast limits of the
    maps), off the GUI thread, so that adding them only hands arrays to napari.
    """
    start = time.perf_counter()
    yield JobProgress(done=0, total=0, message=f"loading model {job.model}", loading=True)
    try:
        store.get(job.model, job.device, job.scale)
    except Exception as error:  # shown as a notification; the widget stays usable
        return JobOutcome(error=f"could not load model '{job.model}': {error}", seconds=time.perf_counter() - start)
    try:
        with store.using(job.model, job.device, job.scale) as upscaler:
            if cancel.is_set():
                return JobOutcome(cancelled=True, seconds=time.perf_counter() - start)
            results = yield from iter_job(job, upscaler, cancel)
    except Exception as error:
        return JobOutcome(
            error=f"super-resolution of '{job.source.name}' failed: {error}", seconds=time.perf_counter() - start
        )
    if results is None:
        return JobOutcome(cancelled=True, seconds=time.perf_counter() - start)
    layer_data: list[LayerDataTuple] = []
    if existing_names is not None:
        try:
            layer_data = result_layer_data(
                job.source, results, offset=job.offset, compare=job.compare, existing_names=existing_names
            )
        except Exception as error:  # e.g. out of memory while stacking
            return JobOutcome(error=f"could not build the layers: {error}", seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return JobOutcome(results=results, layer_data=layer_data, seconds=seconds, upscaler=upscaler)
