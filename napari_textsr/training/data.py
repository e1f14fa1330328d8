"""Captioned training images: folders, napari layer arrays, splits and patch batches.

A captioned image folder is images plus ``captions.csv`` with header
``file,caption``; a file may have several rows (several captions), one of
which is drawn for each training sample.

Intensities follow the inference engine's convention (:mod:`napari_textsr.intensity`)
so a model sees the same kind of numbers in training as in use: uint8 RGB is
divided by 255, everything else (grey uint8, uint16, other integers, floats) is
percentile-normalised over the whole array (:data:`PERCENTILES`); training
images are then clipped to [0, 1].

torch is imported only where tensors are made, so the synthetic scenes (and the
napari sample data built on them) stay numpy-only.
"""

from __future__ import annotations

import csv
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, TypeVar

import numpy as np

from napari_textsr.captioned import CaptionedImage, DataError  # re-exported: their home is a leaf module
from napari_textsr.intensity import DEFAULT_PERCENTILES, compute_mappings

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.degradations import DegradationLike

__all__ = [
    "CaptionedImage",
    "DataError",
    "PERCENTILES",
    "IMAGE_SUFFIXES",
    "TrainingBatch",
    "PatchSampler",
    "BatchPrefetcher",
    "step_rng",
    "load_captioned_folder",
    "captioned_images_from_arrays",
    "load_data_source",
    "split_train_val",
    "to_unit_rgb",
    "read_image",
    "validation_pair",
]

PERCENTILES = DEFAULT_PERCENTILES  # the inference engine's, so training sees what inference feeds
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CAPTIONS_FILE = "captions.csv"


# ------------------------------------------------------------------ arrays
def to_unit_rgb(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """A 2D grey, RGB or RGBA array of any real dtype -> float32 (H, W, 3) in [0, 1].

    The inference engine's mapping (:mod:`napari_textsr.intensity`): uint8
    RGB(A) /255, everything else percentile-normalised; then clipped to [0, 1].
    Grey is replicated to 3 channels; RGBA's alpha is dropped.
    """
    array = np.asarray(array)
    rgb = array.ndim == 3 and array.shape[2] in (3, 4)
    if array.ndim != 2 and not rgb:
        raise DataError(f"{name}: expected a 2D grey, RGB or RGBA image, got shape {array.shape}")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise DataError(f"{name}: image of shape {array.shape} is too small")
    unit = _to_unit(array, (), rgb, name)
    if unit.ndim == 2:
        unit = np.repeat(unit[..., None], 3, axis=2)
    return np.ascontiguousarray(unit, dtype=np.float32)


def _to_unit(array: np.ndarray, leading: tuple[int, ...], rgb: bool, name: str) -> np.ndarray:
    """The engine's intensity mapping over the whole array, colour channels only, clipped to [0, 1]."""
    try:
        mapping, _alpha = compute_mappings(array, leading, rgb, PERCENTILES)
    except ValueError as error:  # unsupported dtype, no finite values
        raise DataError(f"{name}: {error}") from error
    unit = mapping.to_unit(array[..., :3] if rgb else array)
    return np.clip(unit, 0.0, 1.0, out=unit)


def captioned_images_from_arrays(
    images: Sequence[np.ndarray] | np.ndarray,
    captions: str | Sequence[str | Sequence[str]],
    names: Sequence[str] | None = None,
    *,
    rgb: bool | None = None,
) -> list[CaptionedImage]:
    """napari layers' data -> training items.

    images: arrays as napari holds them: (Y, X) grey or (Y, X, 3|4) RGB/RGBA,
        uint8/uint16/other ints/float. Leading axes (z, t, channels) are split
        into 2D slices named ``name[i,j]``, normalised once over the whole array.
        ``rgb``: whether the last axis is colour (None: when it has 3 or 4 entries).
    captions: one caption (str) for all images, or per image a str or a list of str.
    names: per image (default ``image-<i>``).
    """
    if isinstance(images, np.ndarray):
        images = [images]
    images = list(images)
    if isinstance(captions, str):
        captions = [captions] * len(images)
    if len(captions) != len(images):
        raise DataError(f"{len(images)} images but {len(captions)} captions")
    names = list(names) if names is not None else [f"image-{i}" for i in range(len(images))]
    if len(names) != len(images):
        raise DataError(f"{len(images)} images but {len(names)} names")
    items: list[CaptionedImage] = []
    for array, caption, name in zip(images, captions, names):
        array = np.asarray(array)
        is_rgb = rgb if rgb is not None else (array.ndim >= 3 and array.shape[-1] in (3, 4))
        spatial = 3 if is_rgb else 2
        if array.ndim < spatial:
            raise DataError(
                f"{name}: expected at least {spatial} axes for {'RGB' if is_rgb else 'grey'} data, got shape {array.shape}"
            )
        if is_rgb and array.shape[-1] not in (3, 4):
            raise DataError(f"{name}: RGB data needs 3 or 4 channels in the last axis, got shape {array.shape}")
        texts = [caption] if isinstance(caption, str) else list(caption)
        leading = array.shape[: array.ndim - spatial]
        # One normalisation for the whole stack, as the inference engine does.
        unit = _to_unit(array, leading, is_rgb, name)
        for index in np.ndindex(*leading) if leading else [()]:
            plane = unit[index]
            if plane.ndim == 2:
                plane = np.repeat(plane[..., None], 3, axis=2)
            label = f"{name}[{','.join(map(str, index))}]" if leading else name
            if plane.shape[0] < 2 or plane.shape[1] < 2:
                raise DataError(f"{label}: image of shape {plane.shape[:2]} is too small")
            items.append(CaptionedImage(np.ascontiguousarray(plane, dtype=np.float32), texts, label))
    return items


# ----------------------------------------------------------------- folders
def read_image(path: Path | str) -> np.ndarray:
    """An image file -> float32 (H, W, 3) in [0, 1] (see :func:`to_unit_rgb`).

    Read by the product's one reader (:func:`napari_textsr.imageio.read_image_file`:
    every PNG/TIFF/JPEG encoding, EXIF orientation applied), so training sees
    files exactly as ``textsr upscale`` and napari do. Raises DataError when the
    file cannot be decoded or is not one 2D image.
    """
    from napari_textsr.imageio import read_image_file

    try:
        image = read_image_file(path)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error
    return to_unit_rgb(image.data, name=str(path))


def load_captioned_folder(path: Path | str) -> list[CaptionedImage]:
    """Images plus ``captions.csv`` (header ``file,caption``; several rows per file allowed).

    Returns one item per file, in the order files first appear in the CSV,
    with all its captions. Raises DataError (a ValueError) naming the problem:
    no such folder, no captions.csv, a bad header, no rows, files listed but
    missing, or files that cannot be read as images.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"training data folder not found: {folder}")
    table = folder / CAPTIONS_FILE
    if not table.is_file():
        images = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        hint = f" ({len(images)} images found there)" if images else ""
        raise DataError(
            f"{folder} has no {CAPTIONS_FILE}{hint}: a captioned image folder needs a CSV file "
            f"with header 'file,caption' and one row per (image, caption)"
        )
    captions: dict[str, list[str]] = {}
    # strict: a stray or unterminated quote is an error, not a caption that swallows the rows after it.
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, strict=True)
        line = 1
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            if "file" not in header or "caption" not in header:
                raise DataError(f"{table}: the first row must be the header 'file,caption', got {','.join(header)!r}")
            file_col, caption_col = header.index("file"), header.index("caption")
            for row in reader:
                first, line = line + 1, reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if line != first:
                    raise DataError(
                        f"{table}, line {first}: a quoted field runs over lines {first}-{line} "
                        "(an unterminated quote?); a caption must fit on one line"
                    )
                if len(row) != len(header):
                    raise DataError(
                        f"{table}, line {line}: expected {len(header)} fields ({','.join(header)}), got {len(row)}: "
                        f"{row!r} (quote a caption that contains a comma)"
                    )
                name = row[file_col].strip()
                if not name:
                    raise DataError(f"{table}, line {line}: empty file name")
                captions.setdefault(name, []).append(" ".join(row[caption_col].split()))
        except csv.Error as error:
            hint = "; an unterminated quote?" if "end of data" in str(error) else ""
            raise DataError(f"{table}, line {line + 1}: malformed CSV ({error}{hint})") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{table}, after line {line}: not UTF-8 text ({error.reason})") from None
    if not captions:
        raise DataError(f"{table} lists no images")
    missing = [name for name in captions if not (folder / name).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{table} lists {len(missing)} file(s) not in {folder}: {shown}")
    items, unreadable = [], []
    for name, texts in captions.items():
        try:
            image = read_image(folder / name)
        except DataError as error:
            unreadable.append(str(error))
            continue
        items.append(CaptionedImage(image=image, captions=texts, name=name))
    if unreadable:
        shown = "; ".join(unreadable[:3]) + (f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else "")
        raise DataError(f"{len(unreadable)} image(s) in {folder} cannot be read: {shown}")
    return items


def load_data_source(spec: str) -> list[CaptionedImage]:
    """One data entry of a training config: a captioned folder, or
    ``synthetic:N[:SEED[:SIZE]]`` for N synthetic scenes (seed 0, size 256 by default)."""
    if spec.startswith("synthetic:"):
        from napari_textsr.synthetic import synthetic_dataset

        parts = spec.split(":")[1:]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if not 1 <= len(values) <= 3 or values[0] < 1:
            raise DataError(
                f"bad synthetic data spec {spec!r}; expected 'synthetic:N[:SEED[:SIZE]]', e.g. 'synthetic:500:0'"
            )
        n, seed, size = values[0], values[1] if len(values) > 1 else 0, values[2] if len(values) > 2 else 256
        return synthetic_dataset(n, seed=seed, size=size)
    return load_captioned_folder(spec)


# ------------------------------------------------------------------- split
def _name_fraction(name: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Named = TypeVar("Named", bound=_Named)


def split_train_val(
    items: Sequence[Named], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Named], list[Named]]:
    """Deterministic split by a hash of each item's name (and ``seed``); order kept.

    Works on anything with a ``name`` attribute (CaptionedImage or lighter records).

    An item's side depends only on its name, so adding data never moves an
    old validation image into training. Train is never empty; with two or more
    items and val_fraction > 0, validation holds at least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    items = list(items)
    if not items:
        raise DataError("no training images")
    fractions = [_name_fraction(item.name, seed) for item in items]
    in_val = [f < val_fraction for f in fractions]
    if all(in_val):
        in_val[int(np.argmax(fractions))] = False
    if val_fraction > 0 and len(items) >= 2 and not any(in_val):
        in_val[int(np.argmin(fractions))] = True
    train = [item for item, v in zip(items, in_val) if not v]
    val = [item for item, v in zip(items, in_val) if v]
    return train, val


# ----------------------------------------------------------------- batches
@dataclass
class TrainingBatch:
    """lr: float32 (B, 3, p, p); hr: float32 (B, 3, p*s, p*s); captions: B strings."""

    lr: "torch.Tensor"
    hr: "torch.Tensor"
    captions: list[str]
    names: list[str] = field(default_factory=list)


def _to_tensor(image: np.ndarray) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def _dihedral(x: "torch.Tensor", k: int) -> "torch.Tensor":
    """One of the 8 flips/rotations of the last two axes (k in 0..7; 0 = identity)."""
    import torch

    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return x.flip(-1) if k >= 4 else x


class PatchSampler:
    """Random (LR, HR) patch pairs with captions, for training.

    Each sample: an image drawn uniformly, a crop of ``lr_patch * scale``
    pixels on the scale grid, a degradation pipeline drawn from
    ``degradation`` (a fixed :class:`~napari_textsr.training.degradations.Degradation`
    or a :class:`~napari_textsr.training.degradations.DegradationFamily`)
    applied to the crop plus a margin (so a patch's LR equals the whole
    image's LR there, borders included; JPEG's 8x8 blocks are the exception:
    they align to the crop), one of the 8 flips/rotations when ``augment``
    and the item allows it, and one content caption drawn from the item's
    captions, turned into the sample's caption by ``captions`` (a
    :class:`~napari_textsr.training.captions.CaptionPolicy`: degradation
    words, caption dropout, degradation kept in the target when the caption
    calls it content; default: the content caption alone). All
    randomness comes from the ``rng`` passed to :meth:`batch` (noise via a
    torch generator seeded from it), so a seeded rng gives the same batch.

    Images smaller than the HR patch are left out with a warning (listed in
    ``skipped``); if none is large enough, DataError says what size is needed.
    """

    def __init__(
        self,
        items: Sequence[CaptionedImage],
        degradation: "DegradationLike",
        lr_patch: int = 32,
        augment: bool = True,
        captions: "CaptionPolicy | None" = None,
    ) -> None:
        from napari_textsr.training.captions import CaptionPolicy

        if lr_patch < 1:
            raise DataError(f"lr_patch must be positive, got {lr_patch}")
        self.degradation = degradation
        self.captions = captions if captions is not None else CaptionPolicy.content_only()
        self.scale = int(degradation.scale)
        self.lr_patch = int(lr_patch)
        self.augment = augment
        need = self.hr_patch
        self.items = [item for item in items if min(item.image.shape[:2]) >= need]
        self.skipped = [item.name for item in items if min(item.image.shape[:2]) < need]
        # Every content caption in use, in first-seen order: the pool CaptionPolicy.p_other_content draws from.
        self.content_captions = list(dict.fromkeys(c for item in self.items for c in item.captions if c))
        if not self.items:
            smallest = min((min(item.image.shape[:2]) for item in items), default=0)
            raise DataError(
                f"no training image is at least {need}x{need} pixels (LR patch {lr_patch} x scale {self.scale}); "
                f"the largest short side is {max((min(i.image.shape[:2]) for i in items), default=0)} px "
                f"(smallest {smallest} px): use a smaller patch size or larger images"
            )
        if self.skipped:
            warnings.warn(
                f"{len(self.skipped)} image(s) smaller than the {need}x{need} training patch are not used: "
                + ", ".join(self.skipped[:5]),
                stacklevel=2,
            )
        # LR pixels around the patch whose HR affects it: bicubic reaches 2 LR
        # pixels, the blur ceil(3 sigma) HR pixels more.
        self.margin = 2 + math.ceil(3 * float(degradation.max_blur_sigma) / self.scale) + 1

    @property
    def hr_patch(self) -> int:
        return self.lr_patch * self.scale

    def batch(self, batch_size: int, rng: np.random.Generator) -> TrainingBatch:
        import torch

        s, p, m = self.scale, self.lr_patch, self.margin
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        lrs, hrs, captions, names = [], [], [], []
        for _ in range(batch_size):
            item = self.items[int(rng.integers(len(self.items)))]
            lh, lw = item.image.shape[0] // s, item.image.shape[1] // s
            ly, lx = int(rng.integers(0, lh - p + 1)), int(rng.integers(0, lw - p + 1))
            caption = item.captions[int(rng.integers(len(item.captions)))]
            k = int(rng.integers(8))
            # A fixed pipeline and the content-only policy draw nothing, so runs
            # made before the family existed resume with the same batches.
            degradation = self.degradation.draw(rng)
            drawn = self.captions.draw_sample(caption, degradation, rng, self.content_captions, item.captions)
            y0, y1 = max(ly - m, 0), min(ly + p + m, lh)
            x0, x1 = max(lx - m, 0), min(lx + p + m, lw)
            region = _to_tensor(item.image[y0 * s : y1 * s, x0 * s : x1 * s])
            lr_region = degradation(region, generator=generator)
            if drawn.kept:  # the caption calls these kinds of degradation part of the scene
                region = degradation.content_target(region, lr_region, drawn.kept)
            lr = lr_region[..., ly - y0 : ly - y0 + p, lx - x0 : lx - x0 + p]
            hr = region[..., (ly - y0) * s : (ly - y0 + p) * s, (lx - x0) * s : (lx - x0 + p) * s]
            if self.augment and item.augment and k:
                lr, hr = _dihedral(lr, k), _dihedral(hr, k)
            lrs.append(lr)
            hrs.append(hr)
            captions.append(drawn.caption)
            names.append(item.name)
        return TrainingBatch(
            lr=torch.cat(lrs).contiguous().float(),
            hr=torch.cat(hrs).contiguous().float(),
            captions=captions,
            names=names,
        )


def validation_pair(
    item: CaptionedImage, degradation: "DegradationLike", max_side: int | None = None
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """A whole (or centre-cropped) image and its degraded version, for validation.

    Returns lr float32 (1, 3, h, w) and hr (1, 3, h*s, w*s): the image cropped
    to a multiple of the scale (and centrally to at most ``max_side`` pixels).
    The pipeline drawn from a family, and noise, are seeded by the item's
    name, so validation is repeatable.
    """
    import torch

    s = int(degradation.scale)
    h, w = item.image.shape[:2]
    side_h, side_w = (min(h, max_side), min(w, max_side)) if max_side else (h, w)
    side_h, side_w = side_h // s * s, side_w // s * s
    if side_h < s or side_w < s:
        raise DataError(f"{item.name}: image {h}x{w} is smaller than the scale {s}")
    y0, x0 = (h - side_h) // 2, (w - side_w) // 2
    hr = _to_tensor(item.image[y0 : y0 + side_h, x0 : x0 + side_w]).float()
    seed = int.from_bytes(hashlib.sha256(item.name.encode()).digest()[:7], "big")
    pipeline = degradation.draw(np.random.default_rng(seed))
    lr = pipeline(hr, generator=torch.Generator().manual_seed(seed))
    return lr, hr


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator that draws the batch of one optimiser step (the same on any machine and worker count)."""
    return np.random.default_rng([seed, rank, step])


# Worker-process state of BatchPrefetcher (set once per worker by its initializer).
_WORKER_SAMPLER: "PatchSampler | None" = None


def _init_batch_worker(sampler: "PatchSampler") -> None:
    import signal

    import torch

    # Ctrl-C, SIGTERM (timeout, SLURM) reach the whole process group: the
    # training process finishes its step, saves and then stops the workers.
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)
    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    torch.set_num_threads(1)


def _draw_in_worker(batch_size: int, seed: int, rank: int, step: int) -> tuple[np.ndarray, np.ndarray, list, list]:
    assert _WORKER_SAMPLER is not None
    batch = _WORKER_SAMPLER.batch(batch_size, step_rng(seed, rank, step))
    # numpy, not tensors: tensors would cross processes as shared-memory file descriptors.
    return batch.lr.numpy(), batch.hr.numpy(), batch.captions, batch.names


class BatchPrefetcher:
    """The batches of steps ``start, start+1, ...`` drawn ahead in worker processes.

    A training step's batch depends only on ``(seed, rank, step)``
    (:func:`step_rng`), so drawing it in another process gives bit-identical
    batches and exact resume is kept; with ``workers == 0`` every batch is drawn
    in the calling process when asked for. On a GPU the CPU-side degradations
    (blur, resizing, noise, JPEG) are the bottleneck of small models; each
    worker is one process with one torch thread. Workers are forked (Linux,
    macOS): the sampler's images are shared copy-on-write, not pickled; where
    fork is not available the batches are drawn in the calling process.

    At most ``2 * workers`` batches are in flight. Use as a context manager or
    call :meth:`close`; batches must be asked for in step order.
    """

    def __init__(self, sampler: "PatchSampler", batch_size: int, *, seed: int, rank: int = 0, start: int = 0,
                 workers: int = 0) -> None:  # fmt: skip
        import multiprocessing

        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.sampler, self.batch_size, self.seed, self.rank = sampler, int(batch_size), int(seed), int(rank)
        self._next_submit = self._next_get = int(start)
        self._pending: dict[int, object] = {}
        self._pool = None
        self._workers = 0
        if workers and "fork" in multiprocessing.get_all_start_methods():
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_batch_worker,
                initargs=(sampler,),
            )
            self._workers, self._depth = int(workers), 2 * int(workers)

    @property
    def workers(self) -> int:
        """Worker processes drawing batches (0: drawn in the calling process)."""
        return self._workers if self._pool is not None else 0

    def get(self, step: int) -> TrainingBatch:
        """The batch of ``step`` (the step after the previous call's)."""
        import torch

        if step != self._next_get:
            raise ValueError(f"batches are drawn in step order: expected step {self._next_get}, got {step}")
        self._next_get += 1
        if self._pool is None:
            return self.sampler.batch(self.batch_size, step_rng(self.seed, self.rank, step))
        while self._next_submit < step + self._depth:
            self._pending[self._next_submit] = self._pool.submit(
                _draw_in_worker, self.batch_size, self.seed, self.rank, self._next_submit
            )
            self._next_submit += 1
        lr, hr, captions, names = self._pending.pop(step).result()  # type: ignore[attr-defined]
        return TrainingBatch(lr=torch.from_numpy(lr), hr=torch.from_numpy(hr), captions=captions, names=names)

    def close(self) -> None:
        """Stop the workers (batches drawn ahead are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pending.clear()

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
