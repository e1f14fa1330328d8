"""Distributed inference on a dask.distributed cluster, with the same result as one process.

>>> from napari_textsr.distributed import upscale_distributed
>>> result = upscale_distributed("in.ome.zarr", "out.ome.zarr", "nuclei", model="default",
...                              scheduler="local:4")              # or "tcp://scheduler:8786"

How a job runs (see :func:`upscale_distributed`):

1. **Blocks.** The y/x plane is cut by the inference engine's own tile planner
   (:func:`napari_textsr.tiling.plan_tiles`) into *core* blocks of ``block``
   low-resolution pixels (rounded to the model's tiling alignment), each read
   with a halo of the model's receptive field (``TilingInfo``); every other axis
   (z, channel, time, file index) is one plane per block. Because halo >=
   receptive field and block origins are aligned, every output pixel sees
   exactly the inputs the single-process engine gives it (for models whose
   ``TilingInfo.exact`` is true; others are approximate here as in tiled runs).
2. **Intensities.** The percentile normalisation is computed once, over the
   whole input, on the client (:func:`napari_textsr.intensity.compute_mappings`,
   the engine's own), and sent to every block, so blocks do not normalise
   themselves differently. A restarted job reuses the stored mapping.
3. **Workers.** Each worker process loads the model once (:func:`cached_upscaler`,
   keyed by :class:`WorkerModel`) and runs each block through
   :meth:`Upscaler.upscale_block <napari_textsr.inference.Upscaler.upscale_block>`
   (the engine's own tiles, with the global mapping), then writes the block's core straight
   into the output OME-Zarr. Output chunks are exactly the blocks' cores scaled,
   so no two blocks write the same chunk.
4. **Restart.** After its core is written, a block sets its cell of a small
   marker array ``textsr_blocks`` (one chunk per block) inside the output
   group. A job started again on the same output with the same settings skips
   the blocks marked there; a different job on an existing output is refused.
5. **Failures.** Each block is retried ``retries`` times by dask; blocks that
   still fail are listed in the :class:`BlocksFailed` error after all other
   blocks have finished (and been written), never skipped silently.
6. Finally the pyramid levels are computed (:func:`napari_textsr.ngff.fill_pyramid`,
   on the cluster) and the provenance is marked complete.

Output: NGFF 0.5 (see :mod:`napari_textsr.ngff`), same dtype as the input,
axes and units of the input, y/x scale divided by the model's scale and the
translation moved so pixel edges stay aligned.

Needs the ``distributed`` extra (``pip install 'napari-textsr[distributed]'``).
"""

from __future__ import annotations

import collections
import datetime as _dt
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from napari_textsr.ngff import (
    Axis,
    OmeZarrImage,
    create_ome_zarr,
    default_axes,
    fill_pyramid,
    read_ome_zarr,
    require_zarr,
    update_attrs,
    upscaled_transform,
)
from napari_textsr.tiling import Tile, plan_tiles, round_up

__all__ = [
    "BlocksFailed",
    "DEFAULT_BLOCK",
    "DistributedResult",
    "WorkerModel",
    "cached_upscaler",
    "plan_blocks",
    "require_distributed",
    "upscale_distributed",
]

DEFAULT_BLOCK = 512  # core block side in input pixels (x4 output chunk: 2048 x 2048)
DEFAULT_RETRIES = 2
MARKERS = "textsr_blocks"  # marker array inside the output group: 1 = block written
PROVENANCE_KEY = "textsr"
# Levels are added while the smallest output side stays at least this big.
MIN_LEVEL_SIDE = 256
MAX_LEVELS = 8


class BlocksFailed(RuntimeError):
    """Some blocks failed after all retries; ``failures`` maps block index -> error text.

    Every other block was written; running the same job again retries only these.
    """

    def __init__(self, failures: dict[tuple[int, ...], str]) -> None:
        self.failures = failures
        listing = "; ".join(f"block {k}: {v}" for k, v in list(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} block(s) failed after all retries: {listing}{more}. "
            "The other blocks were written; run the same job again to retry these."
        )


def require_distributed():
    """Import dask.distributed, or raise ImportError saying which extra to install."""
    try:
        import dask.array  # noqa: F401
        import distributed
    except ImportError as error:
        raise ImportError(
            "distributed inference needs dask.distributed and zarr: pip install 'napari-textsr[distributed]'"
        ) from error
    require_zarr()
    return distributed


# --------------------------------------------------------------------------- model on the workers
@dataclass(frozen=True)
class WorkerModel:
    """How a worker loads the model: the arguments of :func:`napari_textsr.inference.load_model`
    (``spec`` is a model spec string, see :class:`napari_textsr.loading.ModelSpec`).

    ``torch_threads``: intra-op threads per worker process (None = torch's default,
    which dask's nanny sets to 1 through OMP_NUM_THREADS).
    """

    spec: str = "default"
    scale: int | None = None
    device: str = "auto"
    half: bool | None = None
    torch_threads: int | None = None


_UPSCALERS: dict[WorkerModel, Any] = {}
_UPSCALER_LOCK = threading.Lock()
_INFERENCE_LOCK = threading.Lock()  # an Upscaler serves one call at a time
LOAD_COUNTS: collections.Counter = collections.Counter()  # per process: how often each spec was loaded


def cached_upscaler(spec: WorkerModel):
    """The process's :class:`~napari_textsr.inference.Upscaler` for ``spec``, loaded on first use.

    On a dask worker this runs inside the worker process, so each worker loads
    the model once however many blocks it upscales (``LOAD_COUNTS`` counts loads).
    """
    with _UPSCALER_LOCK:
        upscaler = _UPSCALERS.get(spec)
        if upscaler is None:
            import torch

            from napari_textsr.inference import load_model

            if spec.torch_threads:
                torch.set_num_threads(int(spec.torch_threads))
            upscaler = load_model(spec.spec, scale=spec.scale, device=spec.device, half=spec.half)
            _UPSCALERS[spec] = upscaler
            LOAD_COUNTS[spec] += 1
        return upscaler


# --------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Block:
    """One unit of work: a plane (index into the leading axes) and a y/x tile of it.

    ``grid`` is the block's index in the block grid = its output chunk's index
    (leading index, tile row, tile column).
    """

    lead: tuple[int, ...]
    tile: Tile
    grid: tuple[int, ...]

    def padded_region(self) -> tuple[slice, ...]:
        return tuple(slice(i, i + 1) for i in self.lead) + self.tile.padded_slices()

    def output_region(self, scale: int) -> tuple[slice, ...]:
        return tuple(slice(i, i + 1) for i in self.lead) + self.tile.core_slices(scale)


@dataclass(frozen=True)
class BlockPlan:
    """All blocks of a job, the halo and the core block sides actually used (input pixels)."""

    blocks: tuple[Block, ...]
    block_shape: tuple[int, int]
    halo: int
    grid_shape: tuple[int, ...]

    def output_chunks(self, leading: int, scale: int) -> tuple[int, ...]:
        return (1,) * leading + (self.block_shape[0] * scale, self.block_shape[1] * scale)


def plan_blocks(
    shape: Sequence[int], block: int, receptive_field: int, alignment: int = 1, min_size: int = 1
) -> BlockPlan:
    """Blocks of an array (*leading, Y, X): one plane of the leading axes by a y/x tile.

    The y/x tiles are :func:`~napari_textsr.tiling.plan_tiles`' (core ``block``
    rounded up to ``alignment``, even sizes, halo = ``receptive_field`` rounded up
    to ``alignment``); every core but the last along an axis has the same side,
    which becomes the output chunk side (times the scale).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"need at least (Y, X), got shape {shape}")
    if block < 1:
        raise ValueError(f"block must be a positive number of pixels, got {block}")
    height, width = shape[-2:]
    tiles = plan_tiles(height, width, int(block), int(receptive_field), alignment, min_size)
    rows = sorted({t.y0 for t in tiles})
    cols = sorted({t.x0 for t in tiles})
    first = tiles[0]
    block_shape = (first.y1 - first.y0, first.x1 - first.x0)
    leading = shape[:-2]
    blocks = []
    for lead in np.ndindex(*leading):
        lead = tuple(int(i) for i in lead)
        for t in tiles:
            blocks.append(Block(lead, t, lead + (rows.index(t.y0), cols.index(t.x0))))
    halo = round_up(max(int(receptive_field), 0), max(int(alignment), 1))
    return BlockPlan(tuple(blocks), block_shape, halo, leading + (len(rows), len(cols)))


@dataclass(frozen=True)
class _Job:
    """What every block task needs (small, pickled once per task)."""

    model: WorkerModel
    caption: str
    colour: Any  # IntensityMapping
    output: str  # path of the output group
    scale: int
    consistency: str | None = None  # the back-projection's resize kernel, None: none


def _read_plane(source: Any, region: tuple[slice, ...]) -> np.ndarray:
    return np.asarray(source[region])


def _run_block(job: _Job, block: Block, raw: np.ndarray) -> dict[str, Any]:
    """Upscale one padded block and write its core; runs on a worker."""
    zarr = require_zarr()

    start = time.perf_counter()
    upscaler = cached_upscaler(job.model)
    raw = np.asarray(raw)
    expected = block.tile.padded_shape
    if raw.shape[-2:] != expected:
        raise ValueError(f"block {block.grid}: read {raw.shape[-2:]} pixels, expected {expected}")
    with _INFERENCE_LOCK:
        # With the job's global intensity mapping, not one computed from this block alone.
        image = upscaler.upscale_block(raw, job.caption, job.colour, rgb=False, consistency=job.consistency or False)
    lead = (slice(None),) * (image.ndim - 2)
    core = image[lead + block.tile.core_in_padded(job.scale)]
    group = zarr.open_group(job.output, mode="r+")
    group["0"][block.output_region(job.scale)] = core
    group[MARKERS][block.grid] = 1  # after the core: a marker means the block is on disk
    return {
        "grid": block.grid,
        "seconds": time.perf_counter() - start,
        "worker": os.getpid(),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }


# --------------------------------------------------------------------------- inputs
@dataclass
class _Input:
    array: Any  # dask array (*leading, Y, X)
    axes: tuple[Axis, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    description: str
    zarr_array: Any = None  # where blocks can read directly (no graph)


def _open_input(source: Any, axes: Sequence[Axis] | None) -> _Input:
    import dask.array as da

    zarr = require_zarr()
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        return _files_input([Path(s) for s in source], axes)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no such input: {path}")
        if not (path / "zarr.json").exists() and not (path / ".zgroup").exists() and not (path / ".zarray").exists():
            return _files_input([path], axes)
        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            image = read_ome_zarr(path)
            y, x = image.spatial_axes()
            if (y, x) != (len(image.axes) - 2, len(image.axes) - 1):
                raise ValueError(f"{path}: y and x must be the last two axes, axes are {image.axis_names!r}")
            return _Input(da.from_zarr(image.data), image.axes, image.scale, image.translation, str(path), image.data)
        return _array_input(da.from_zarr(node), axes, str(path), node)
    if hasattr(source, "dask"):
        return _array_input(source, axes, "dask array", None)
    if hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
        return _array_input(
            da.from_array(source, chunks=source.chunks if hasattr(source, "chunks") else "auto"),
            axes,
            type(source).__name__,
            source if not isinstance(source, np.ndarray) else None,
        )
    raise TypeError(
        f"input must be an OME-Zarr/zarr path, a list of image files, or a zarr/dask/numpy array, not {type(source).__name__}"
    )


def _array_input(array: Any, axes: Sequence[Axis] | None, description: str, zarr_array: Any) -> _Input:
    ndim = array.ndim
    axes = tuple(axes) if axes is not None else default_axes(ndim)
    return _Input(array, axes, (1.0,) * ndim, (0.0,) * ndim, description, zarr_array)


def _read_file(path: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    from napari_textsr.imageio import read_image_file

    image = read_image_file(path)
    if image.rgb or image.data.shape != shape or str(image.data.dtype) != dtype:
        raise ValueError(
            f"{path}: {image.data.shape} {image.data.dtype}{' RGB' if image.rgb else ''}, but the first file is "
            f"{shape} {dtype} grey; files of one job must match"
        )
    return image.data


def _files_input(paths: list[Path], axes: Sequence[Axis] | None) -> _Input:
    import dask
    import dask.array as da

    from napari_textsr.imageio import read_image_file

    first = read_image_file(paths[0])
    if first.rgb:
        raise ValueError(
            f"{paths[0]} is RGB; the distributed engine upscales grey planes (OME-Zarr keeps colour as a 'c' axis)"
        )
    shape, dtype = first.data.shape, first.data.dtype
    planes = [
        da.from_delayed(dask.delayed(_read_file)(str(p), shape, str(dtype)), shape=shape, dtype=dtype) for p in paths
    ]
    array = da.stack(planes)  # (file, *plane)
    if axes is None:
        plane_axes = default_axes(len(shape))
        axes = (Axis("i", "index"),) + plane_axes  # NGFF allows custom axis types
    name = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files ({paths[0]}, ...)"
    return _array_input(array, axes, name, None)


# --------------------------------------------------------------------------- the job
@dataclass
class DistributedResult:
    """What a job did.

    ``blocks``: all blocks of the job; ``computed``: blocks upscaled by this run;
    ``skipped``: blocks already written by an earlier run; ``seconds``: wall time
    of this run (blocks and pyramid); ``peak_rss``: worker address -> peak
    resident memory of its process in bytes (``ru_maxrss``, whole process:
    Python, torch, model and the largest block); ``output``: the written image.
    """

    output: OmeZarrImage
    blocks: int
    computed: int
    skipped: int
    seconds: float
    block_shape: tuple[int, int]
    halo: int
    peak_rss: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def _default_levels(height: int, width: int) -> int:
    side = min(height, width)
    levels = 1
    while levels < MAX_LEVELS and side // 2 >= MIN_LEVEL_SIDE:
        side //= 2
        levels += 1
    return levels


def _open_client(scheduler: Any):
    """(client, owned): a Client for ``scheduler`` and whether this job must close it (and its cluster)."""
    distributed = require_distributed()
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    if scheduler is None:
        try:
            return distributed.get_client(), False
        except ValueError:
            scheduler = "local"
    workers = _local_workers(scheduler)
    if workers is not None:
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        return distributed.Client(cluster), True
    return distributed.Client(str(scheduler)), True


def _local_workers(scheduler: Any) -> int | None:
    """N for ``"local"`` / ``"local:N"`` (``local`` = half the CPU cores), None for anything else."""
    if not isinstance(scheduler, str) or not (scheduler == "local" or scheduler.startswith("local:")):
        return None
    if scheduler == "local":
        return max((os.cpu_count() or 1) // 2, 1)
    try:
        workers = int(scheduler.split(":", 1)[1])
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"local:N needs a number of workers N >= 1, got {scheduler!r}")
    return workers


def upscale_distributed(
    source: Any,
    output: str | os.PathLike,
    caption: str = "",
    *,
    model: str | WorkerModel = "default",
    scale: int | None = None,
    scheduler: Any = None,
    block: int = DEFAULT_BLOCK,
    retries: int = DEFAULT_RETRIES,
    levels: int | None = None,
    axes: Sequence[Axis] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    percentiles: tuple[float, float] | None = None,
    jpeg_quality: int | None = None,
    consistency: bool | str = False,
) -> DistributedResult:
    """Upscale ``source`` block by block on a dask cluster into the OME-Zarr ``output``.

    source: an OME-Zarr image (NGFF 0.4/0.5) or plain zarr array path, a list of
        grey image files of one shape and dtype (stacked on a leading ``i`` axis),
        or a zarr/dask/numpy array (*leading, Y, X); grey planes only (colour:
        a channel axis, each channel upscaled as a grey plane, as the engine does).
    caption: the text prompt for every block.
    model: a :func:`~napari_textsr.inference.load_model` spec or a :class:`WorkerModel`.
    scheduler: a ``distributed.Client``, a scheduler address (``tcp://host:8786``),
        ``"local"`` / ``"local:N"`` (a local cluster of N single-thread worker
        processes, closed at the end) or None (the active client, else ``local``).
    block: core block side in input pixels (rounded up to the model's alignment);
        output chunks are ``block * scale`` square in y/x and one plane deep.
    retries: dask retries per block. levels: pyramid levels of the output
        (default: halving while the smaller side stays >= 256 pixels).
    overwrite: replace an existing output; otherwise an output from the same
        job resumes (written blocks skipped) and one from another job is refused.
    progress: ``progress(done, total)`` after each block; an exception raised
        in it cancels the remaining blocks and propagates (the blocks written
        so far stay, and the job can be resumed).
    jpeg_quality: the heaviest JPEG compression every input went through
        (None: not all of them, or not known); with ``model`` naming the
        default, <= 60 takes the bundled model for such inputs, as
        :func:`~napari_textsr.inference.load_model` and ``textsr distributed`` do
        (:func:`napari_textsr.loading.default_for_input`).
    consistency: back-project every block as
        :meth:`~napari_textsr.inference.Upscaler.upscale` does (True/"auto": the
        resize the caption names, or a kernel name of
        :data:`napari_textsr.consistency.CONSISTENCY_KERNELS`); the halo grows
        by the correction's reach, so the output still equals one process's.
        The kernel is recorded in the provenance (``consistency_kernel``); no
        consistency map is written.

    Returns a :class:`DistributedResult`. Raises :class:`BlocksFailed` if blocks
    still fail after ``retries``, ValueError for bad input or a mismatching
    existing output, FileNotFoundError for a missing input, ImportError without
    the ``distributed`` extra.
    """
    distributed = require_distributed()
    zarr = require_zarr()
    import dask

    from napari_textsr.intensity import compute_mappings

    start = time.perf_counter()
    _local_workers(scheduler)  # a bad "local:N" fails before any work
    if isinstance(model, WorkerModel):
        spec = model
    else:
        from napari_textsr.loading import default_for_input

        spec = WorkerModel(str(default_for_input(model, scale, jpeg_quality)), scale)
    if scale is not None and spec.scale is None:
        spec = WorkerModel(spec.spec, scale, spec.device, spec.half, spec.torch_threads)
    output = Path(output)
    data = _open_input(source, axes)
    array = data.array
    if array.ndim < 2:
        raise ValueError(f"need at least (Y, X), got shape {array.shape}")
    dtype = np.dtype(array.dtype)
    if len(data.axes) != array.ndim:
        raise ValueError(f"{len(data.axes)} axes for an input with {array.ndim} dimensions")

    # The client-side model: tiling info, scale and description (workers load their own).
    client_spec = WorkerModel(spec.spec, spec.scale, "cpu", False, None)
    upscaler = cached_upscaler(client_spec)
    info = upscaler.model.tiling_info()
    factor = upscaler.scale
    projection = upscaler.back_projection_for(consistency, caption)  # ValueError / warning before any work
    reach = info.receptive_field + (projection.extra_padding() if projection is not None else 0)
    plan = plan_blocks(array.shape, block, reach, info.alignment, info.min_size)
    leading = array.ndim - 2
    out_shape = tuple(array.shape[:-2]) + (array.shape[-2] * factor, array.shape[-1] * factor)
    job_settings = {
        "input": data.description,
        "input_shape": list(array.shape),
        "dtype": str(dtype),
        "caption": caption,
        "model": spec.spec,
        "model_name": upscaler.description.name,
        "scale": factor,
        "block": list(plan.block_shape),
        "halo": plan.halo,
        "percentiles": list(percentiles or upscaler.percentiles),
        # only when on, so a job written before this option existed still resumes
        **({"consistency_kernel": projection.kernel} if projection is not None else {}),
    }

    existing = _existing_job(output, job_settings, overwrite)
    if existing is not None:
        image = existing
        colour = _mapping_from_dict((image.provenance() or {})["intensity"])  # a resumable job's record has it
    else:
        if min(array.shape[-2:]) < max(info.min_size, 2):
            raise ValueError(
                f"the image is {array.shape[-2]}x{array.shape[-1]} pixels; this model needs {info.min_size}"
            )
        # The engine's normalisation over the whole input, read chunk by chunk
        # here on the client (dask inputs with the local threaded scheduler).
        with dask.config.set(scheduler="threads"):
            colour, _ = compute_mappings(
                data.zarr_array if data.zarr_array is not None else array,
                tuple(array.shape[:-2]),
                False,
                percentiles or upscaler.percentiles,
            )
        out_scale, out_translation = upscaled_transform(data.axes, data.scale, data.translation, factor)
        provenance = _provenance(upscaler, caption, colour, job_settings, data, plan)
        image = create_ome_zarr(
            output,
            out_shape,
            dtype,
            axes=data.axes,
            scale=out_scale,
            translation=out_translation,
            chunks=plan.output_chunks(leading, factor),
            n_levels=levels if levels is not None else _default_levels(*out_shape[-2:]),
            attrs={PROVENANCE_KEY: provenance},
            name=output.name,
            overwrite=overwrite,
        )
        group = zarr.open_group(str(output), mode="r+")
        group.create_array(
            MARKERS, shape=plan.grid_shape, dtype=np.uint8, chunks=(1,) * len(plan.grid_shape), fill_value=0
        )
    markers = zarr.open_group(str(output), mode="r")[MARKERS][...]
    todo = [b for b in plan.blocks if not markers[b.grid]]
    skipped = len(plan.blocks) - len(todo)

    if not todo and (image.provenance() or {}).get("complete"):  # nothing left to do
        return DistributedResult(
            read_ome_zarr(output),
            len(plan.blocks),
            0,
            skipped,
            time.perf_counter() - start,
            plan.block_shape,
            plan.halo,
            {},
            image.provenance() or {},
        )

    job = _Job(spec, caption, colour, str(output), factor, projection.kernel if projection is not None else None)
    client, owned = _open_client(scheduler)
    peak: dict[str, int] = {}
    try:
        if todo:
            tasks = []
            for b in todo:
                region = b.padded_region()
                if data.zarr_array is not None:  # read on the worker, straight from the store
                    raw = dask.delayed(_read_plane, pure=False)(data.zarr_array, region)
                else:
                    raw = array[region]
                tasks.append(dask.delayed(_run_block, pure=False)(job, b, raw))
            futures = client.compute(tasks, retries=int(retries))
            grid_of = {f.key: b.grid for f, b in zip(futures, todo)}
            failures: dict[tuple[int, ...], str] = {}
            done = skipped
            if progress is not None:
                progress(done, len(plan.blocks))
            try:
                for future in distributed.as_completed(futures):
                    if future.status == "error":
                        failures[grid_of[future.key]] = repr(future.exception())
                    else:
                        summary = future.result()
                        worker = str(summary["worker"])
                        peak[worker] = max(peak.get(worker, 0), int(summary["peak_rss"]))
                    done += 1
                    if progress is not None:
                        progress(done, len(plan.blocks))
            except BaseException:
                client.cancel(futures)
                raise
            if failures:
                raise BlocksFailed(failures)
        fill_pyramid(image)
        provenance = dict(image.provenance() or {})
        provenance.update(complete=True, finished=_now())
        update_attrs(image, {PROVENANCE_KEY: provenance})
    finally:
        if owned:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    return DistributedResult(
        output=read_ome_zarr(output),
        blocks=len(plan.blocks),
        computed=len(todo),
        skipped=skipped,
        seconds=time.perf_counter() - start,
        block_shape=plan.block_shape,
        halo=plan.halo,
        peak_rss=peak,
        provenance=provenance,
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _provenance(
    upscaler, caption: str, colour, settings: dict[str, Any], data: _Input, plan: BlockPlan
) -> dict[str, Any]:
    from napari_textsr._version import __version__

    d = upscaler.description
    return {
        "caption": caption,
        "model": d.name,
        "method": d.method,
        "scale": d.scale,
        "encoder": d.encoder,
        "trained": d.trained,
        "model_source": d.source,
        "intensity": colour.to_dict(),
        "input": data.description,
        "input_scale": list(data.scale),
        "input_translation": list(data.translation),
        "engine": "napari_textsr.distributed",
        **({"consistency_kernel": settings["consistency_kernel"]} if "consistency_kernel" in settings else {}),
        "job": settings,
        "software": "napari-textsr",
        "software_version": __version__,
        "time": _now(),
        "complete": False,
    }


def _mapping_from_dict(values: dict[str, Any]):
    from napari_textsr.intensity import IntensityMapping

    return IntensityMapping(
        np.dtype(values["dtype"]),
        float(values["low"]),
        float(values["high"]),
        float(values["clip_min"]),
        float(values["clip_max"]),
        str(values["mode"]),
    )


def _existing_job(output: Path, settings: dict[str, Any], overwrite: bool) -> OmeZarrImage | None:
    """The output of the same job to resume, None to start anew; ValueError for another job's output."""
    if overwrite or not output.exists():
        return None
    try:
        image = read_ome_zarr(output, mode="r+")
    except ValueError as error:
        raise ValueError(
            f"{output} exists and is not an output of textsr distributed ({error}); pass overwrite"
        ) from error
    provenance = image.provenance() or {}
    previous = provenance.get("job")
    if previous != settings:
        changed = sorted(k for k in set(settings) | set(previous or {}) if (previous or {}).get(k) != settings.get(k))
        raise ValueError(
            f"{output} exists from a different job (differs in: {', '.join(changed) or 'everything'}); "
            "pass overwrite to replace it, or choose another output"
        )
    return image
