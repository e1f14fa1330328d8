"""The training loop: one generator of progress events for the CLI, scripts and napari.

``Trainer(config).run()`` yields a :class:`TrainingEvent` after every step and
returns a :class:`TrainingSummary`. The same generator drives the ``textsr
train`` progress bar and the napari training widget's worker; closing it
(cancel) writes a checkpoint of the last completed step before it returns.

What a run writes into ``config.out_dir``:

* ``model.textsr.safetensors``: the model, loadable by
  :func:`napari_textsr.checkpoints.load_checkpoint`, with a
  :class:`~napari_textsr.checkpoints.TrainingRecord` (command, data,
  degradation, steps, validation metrics);
* ``train_state.pt``: weights, optimiser, scheduler, scaler, discriminator,
  step and config, for an exact resume.

Both are written atomically (temporary file + rename), every
``checkpoint_every`` steps, on cancel and at the end.

Exact resume: all randomness of step ``k`` comes from generators seeded with
``(seed, rank, k)`` (the patch sampler's numpy generator and a forked torch
RNG), so a resumed run draws the same batches and noise as one never stopped.
Under ``torchrun`` every rank draws its own batches (its rank is in the seed),
``batch_size`` is the global batch split over the ranks, gradients are
averaged by DistributedDataParallel, and only rank 0 validates, writes and
yields events with validation/preview (every rank yields per-step events).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr.checkpoints import (
    SUFFIX,
    CheckpointError,
    EncoderMismatchError,
    TrainingRecord,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    training_stages,
)
from napari_textsr.devices import configure_threads, select_device
from napari_textsr.durable import atomic_write
from napari_textsr.metrics import quality_scores
from napari_textsr.models import TextSRModel, create_model, model_from_config
from napari_textsr.models.pdn import PDN
from napari_textsr.prompts import EncoderSpec, PromptEmbedding, PromptEncoder
from napari_textsr.training.config import (
    _STATE_FORMAT,
    _STATE_VERSION,
    CHECKPOINT_STEM,
    STATE_NAME,
    TrainConfig,
    _load_state,
)
from napari_textsr.training.losses import SRCriterion, build_criterion, default_loss_weights
from napari_textsr.training.runlock import RunLock
from napari_textsr.training.schedule import cosine_factor

if TYPE_CHECKING:
    from napari_textsr.training.data import CaptionedImage
    from napari_textsr.training.degradations import DegradationLike

__all__ = [
    "TrainConfig",
    "TrainingEvent",
    "ValidationResult",
    "PreviewImages",
    "TrainingSummary",
    "Trainer",
    "CHECKPOINT_NAME",
    "STATE_NAME",
    "load_training_items",
    "equivalent_command",
]

CHECKPOINT_NAME = CHECKPOINT_STEM + SUFFIX


# ----------------------------------------------------------------------- events
@dataclass
class ValidationResult:
    """Metrics on the held-out split, ``scale`` px border cropped.

    ``psnr``/``ssim`` (and the ``_bicubic`` baseline) are on the Y channel, the
    convention of SR papers; ``*_rgb`` on RGB. Averaged over ``n_images``.
    """

    step: int
    psnr: float
    ssim: float
    psnr_bicubic: float
    ssim_bicubic: float
    psnr_rgb: float
    ssim_rgb: float
    psnr_bicubic_rgb: float
    ssim_bicubic_rgb: float
    n_images: int

    def to_record(self) -> dict[str, float]:
        """Names used in a checkpoint's TrainingRecord.validation."""
        return {
            "psnr_y": self.psnr,
            "ssim_y": self.ssim,
            "psnr_bicubic_y": self.psnr_bicubic,
            "ssim_bicubic_y": self.ssim_bicubic,
            "psnr_rgb": self.psnr_rgb,
            "ssim_rgb": self.ssim_rgb,
            "psnr_bicubic_rgb": self.psnr_bicubic_rgb,
            "ssim_bicubic_rgb": self.ssim_bicubic_rgb,
            "n_images": float(self.n_images),
        }


@dataclass
class PreviewImages:
    """One held-out image through the current model: float32 (H, W, 3) arrays in [0, 1].

    ``lr`` is (h, w, 3); ``output``, ``bicubic`` and ``target`` are (s*h, s*w, 3);
    ``attention`` maps name -> float32 (h', w') at the model's resolution.
    """

    lr: np.ndarray
    output: np.ndarray
    target: np.ndarray
    bicubic: np.ndarray
    caption: str
    attention: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TrainingEvent:
    """Progress after one completed step (``step`` counts completed steps, 1-based)."""

    step: int
    total_steps: int
    losses: dict[str, float]
    learning_rate: float
    images_per_second: float
    eta_seconds: float
    validation: ValidationResult | None = None
    preview: PreviewImages | None = None
    checkpoint: Path | None = None
    message: str = ""
    extra: dict[str, float] = field(default_factory=dict)  # e.g. kernel_temperature, grad_norm, epoch


@dataclass
class TrainingSummary:
    """What :meth:`Trainer.run` returns."""

    steps_completed: int
    total_steps: int
    cancelled: bool
    checkpoint: Path | None
    train_state: Path | None
    validation: ValidationResult | None
    elapsed_seconds: float
    images_per_second: float
    record: TrainingRecord | None


# ----------------------------------------------------------------------- data
def load_training_items(entries: Sequence[str]) -> tuple[list["CaptionedImage"], list[str]]:
    """Load ``--data`` entries; returns the images and one description per entry.

    An entry is a folder of images with ``captions.csv`` or
    ``synthetic:N[:SEED[:SIZE]]`` (N synthetic scenes from generator seed SEED,
    SIZE x SIZE pixels, default 256); see ``training.data.load_data_source``.
    """
    from napari_textsr.training.data import load_data_source

    items: list[CaptionedImage] = []
    descriptions: list[str] = []
    for entry in entries:
        if not entry.startswith("synthetic:") and not Path(entry).expanduser().is_dir():
            raise FileNotFoundError(f"training data folder not found: {entry}")
        loaded = load_data_source(entry if entry.startswith("synthetic:") else str(Path(entry).expanduser()))
        if entry.startswith("synthetic:"):
            descriptions.append(f"{entry} ({len(loaded)} synthetic scenes, napari_textsr.synthetic)")
        else:
            descriptions.append(f"{Path(entry).expanduser().resolve()} ({len(loaded)} images)")
        items.extend(loaded)
    return items, descriptions


def equivalent_command(config: TrainConfig, data_note: str | None = None) -> str:
    """A ``textsr train`` command that reproduces ``config`` (for runs started from Python or napari).

    ``data_note`` replaces the ``--data`` arguments where the images came
    from napari layers and have no path.
    """
    c = config
    args = ["textsr", "train"]
    if data_note is not None:
        args += ["--data", data_note]
    else:
        for entry in c.data:
            args += ["--data", entry]
    args += ["--method", c.method, "--scale", str(c.scale), "--preset", c.preset]
    if c.encoder:
        args += ["--encoder", c.encoder]
    args += ["--steps", str(c.steps), "--batch-size", str(c.batch_size), "--patch", str(c.lr_patch)]
    args += ["--lr", repr(c.learning_rate), "--out", str(c.out_dir), "--seed", str(c.seed)]
    assert c.degradation is not None and c.losses is not None and c.captions is not None
    args += degradation_arguments(c.degradation)
    from napari_textsr.training.captions import CaptionPolicy

    if c.captions.form_rates != CaptionPolicy().form_rates:
        args += ["--caption-rates", ",".join(repr(v) for v in c.captions.form_rates)]
    if c.captions.p_degradation_as_content:
        args += ["--degradation-as-content", repr(c.captions.p_degradation_as_content)]
    if c.captions.as_content_kinds != CaptionPolicy().as_content_kinds:
        args += ["--as-content-kinds", ",".join(c.captions.as_content_kinds)]
    if c.captions.p_empty_keeps_blur:
        args += ["--empty-keeps-blur", repr(c.captions.p_empty_keeps_blur)]
    if c.captions.p_other_content:
        args += ["--other-content", repr(c.captions.p_other_content)]
    if c.init_transfer:
        args += ["--init-transfer"]
    defaults = default_loss_weights(c.method).to_dict()
    changed = {k: v for k, v in c.losses.to_dict().items() if v != defaults[k]}
    if changed:
        args += ["--loss-weights", ",".join(f"{k}={_format_setting(v)}" for k, v in changed.items())]
    if c.init:
        args += ["--init", str(c.init)]
    field_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for flag, name in (
        ("--val-fraction", "val_fraction"),
        ("--split-seed", "split_seed"),
        ("--val-every", "val_every"),
        ("--checkpoint-every", "checkpoint_every"),
        ("--warmup", "warmup_steps"),
        ("--grad-clip", "grad_clip"),
        ("--ema", "ema_decay"),
    ):
        value = getattr(c, name)
        if value != field_defaults[name]:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    if c.model_overrides:
        args += ["--model-option", ",".join(f"{k}={v}" for k, v in c.model_overrides.items())]
    return shlex.join(args)


def degradation_arguments(degradation: "DegradationLike") -> list[str]:
    """``--degradations`` / ``--degradation-option`` arguments that rebuild ``degradation``."""
    from napari_textsr.training.degradations import (
        DEFAULT_PRESET,
        DEGRADATION_PRESETS,
        Degradation,
        DegradationFamily,
        format_degradation_options,
    )

    if isinstance(degradation, DegradationFamily):
        kind = degradation.preset if degradation.preset in DEGRADATION_PRESETS else DEFAULT_PRESET
        changed = degradation.changes_from_preset()
    else:
        reference = Degradation(scale=degradation.scale).to_dict()
        kind = "fixed"
        changed = {k: v for k, v in degradation.to_dict().items() if k not in ("kind", "scale") and v != reference[k]}
    args = ["--degradations", kind]
    if changed:
        args += ["--degradation-option", format_degradation_options(changed)]
    return args


def _format_setting(value: Any) -> str:
    if isinstance(value, tuple):
        return ":".join(repr(v) for v in value)
    return "none" if value is None else str(value)


# ----------------------------------------------------------------------- helpers
def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] % (2**63))


def _to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor -> float32 (H, W, 3) in [0, 1]."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32)


def _encode_captions(encoder: PromptEncoder, captions: list[str], cache: bool = True) -> dict[str, PromptEmbedding]:
    """One embedding per caption; ``cache``: through the encoder's caption caches (see PromptEncoder.encode)."""
    embeddings: dict[str, PromptEmbedding] = {}
    chunk = 256
    for start in range(0, len(captions), chunk):
        part = captions[start : start + chunk]
        encoded = encoder.encode(part, cache=cache)
        for i, caption in enumerate(part):
            n = int(encoded.mask[i].sum())  # real tokens come first; drop the batch padding
            embeddings[caption] = PromptEmbedding(
                tokens=encoded.tokens[i : i + 1, :n].clone(),
                mask=encoded.mask[i : i + 1, :n].clone(),
                pooled=encoded.pooled[i : i + 1].clone(),
                words=[encoded.words[i][:n]],
                word_ids=[encoded.word_ids[i][:n]] if encoded.word_ids is not None else None,
            )
    return embeddings


class _CaptionCache:
    """Prompt embeddings of the training captions; the encoder is frozen, so content captions are encoded once.

    The content captions are encoded up front. Captions composed per sample
    (content plus degradation words, :mod:`napari_textsr.training.captions`)
    are rarely drawn twice, so they are not kept: :meth:`batch` encodes the
    distinct composed captions of one step together, in sorted order, in one
    encoder call (one at a time, they were what limited training on a GPU),
    past the encoder's caches. A step's embeddings so depend only on that
    step's captions, and a resumed run gets the same numbers (a cached
    embedding from an earlier step's batch differs in the last bits). Content
    captions go through the on-disk caption cache (the next run on the same
    data starts faster); composed ones do not (they would fill it with
    captions never asked for again).
    """

    def __init__(self, encoder: PromptEncoder, captions: list[str]) -> None:
        self.encoder = encoder
        self.fixed = _encode_captions(encoder, captions)

    def __getitem__(self, caption: str) -> PromptEmbedding:
        found = self.fixed.get(caption)
        return found if found is not None else _encode_captions(self.encoder, [caption], cache=False)[caption]

    def batch(self, captions: list[str]) -> PromptEmbedding:
        """The embeddings of one step's captions, in order, as one batch."""
        composed = sorted({c for c in captions if c not in self.fixed})
        encoded = _encode_captions(self.encoder, composed, cache=False) if composed else {}
        return PromptEmbedding.cat([self.fixed[c] if c in self.fixed else encoded[c] for c in captions])


@dataclass
class _ValImage:
    lr: torch.Tensor  # (1, 3, h, w)
    hr: torch.Tensor  # (1, 3, s*h, s*w)
    caption: str


@dataclass
class _Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> _Distributed:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Distributed(rank, local_rank, world, local_world, owns)


@dataclass
class _Session:
    """What one call of :meth:`Trainer.run` works with (built by ``Trainer._setup``)."""

    device: torch.device
    dist: _Distributed
    local_batch: int
    state: dict[str, Any] | None
    messages: list[str]
    train_items: list["CaptionedImage"]
    sampler: Any  # training.data.PatchSampler
    steps_per_epoch: int
    data_descriptions: list[str]
    encoder_spec: str
    encoder: PromptEncoder
    model: TextSRModel
    train_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    criterion: SRCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    d_optimizer: torch.optim.Optimizer | None
    scaler: "torch.amp.GradScaler | None"
    amp_dtype: torch.dtype | None
    caption_cache: "_CaptionCache"
    val_images: list[_ValImage]
    commands: list[str]
    # The --init checkpoint's own training record (a fine-tune is only reproducible with it).
    init_training: dict[str, Any] | None = None
    start_step: int = 0
    history: list[float] = field(default_factory=list)
    last_validation: ValidationResult | None = None
    # The moving average of the weights (TrainConfig.ema_decay), or None.
    ema: TextSRModel | None = None

    @property
    def output_model(self) -> TextSRModel:
        """The weights validation, previews and the checkpoint use: the average when kept."""
        return self.ema if self.ema is not None else self.model


# ----------------------------------------------------------------------- trainer
class Trainer:
    """Trains (or fine-tunes) one model as a generator of :class:`TrainingEvent`.

    ``items``: images to train on instead of ``config.data`` (e.g. napari
    layers turned into CaptionedImage by ``captioned_images_from_arrays``).
    Use from a thread: iterate :meth:`run`; cancel by closing the generator
    (or :meth:`request_stop`, which also works across torchrun ranks).
    ``overwrite``: start afresh in an ``out_dir`` that already holds a model
    or a run (refused otherwise, unless ``config.resume``).
    While it runs, ``out_dir/run.lock`` names this process; a second Trainer
    into the same folder is refused (:class:`~napari_textsr.training.runlock.RunLockedError`).
    """

    def __init__(
        self, config: TrainConfig, items: list["CaptionedImage"] | None = None, *, overwrite: bool = False
    ) -> None:
        self.config = config
        # A new run may replace the model (and run) already in out_dir only when asked to.
        self.overwrite = overwrite
        self._items = list(items) if items is not None else None
        if self._items is None and not config.data:
            raise ValueError("no training data: give config.data (folders or synthetic:N:SEED) or items")
        if self._items is not None and not self._items:
            raise ValueError("no training images given")
        self._stop = threading.Event()
        self._last_checkpoint: Path | None = None
        self._last_record: TrainingRecord | None = None

    @property
    def last_checkpoint(self) -> Path | None:
        """The most recent checkpoint this trainer wrote (None before the first)."""
        return self._last_checkpoint

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and end the run (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ run
    def run(self) -> Generator[TrainingEvent, None, TrainingSummary]:
        config = self.config
        dist_info = _setup_distributed(config.device)
        # Rank 0 speaks for all ranks: they share the folder.
        lock = RunLock.for_folder(config.out_dir, config.command or "") if dist_info.is_main else None
        try:
            if lock is not None:
                lock.acquire()
            return (yield from self._run(dist_info))
        finally:
            if lock is not None:
                lock.release()
            if dist_info.owns_group:
                import torch.distributed as dist

                dist.destroy_process_group()

    def _run(self, dist_info: _Distributed) -> Generator[TrainingEvent, None, TrainingSummary]:
        config = self.config
        s = self._setup(dist_info)
        completed = s.start_step
        saved_at = s.start_step if s.state is not None else -1
        step_times: deque[float] = deque(maxlen=20)
        run_start = time.perf_counter()
        stopped_early = False
        fork_devices = [s.device] if s.device.type == "cuda" else []  # fork_rng: leave the caller's RNG alone

        if s.messages and dist_info.is_main:
            yield TrainingEvent(
                step=s.start_step,
                total_steps=config.steps,
                losses={},
                learning_rate=float(s.scheduler.get_last_lr()[0]),
                images_per_second=0.0,
                eta_seconds=0.0,
                validation=s.last_validation,
                message="; ".join(s.messages),
            )
        from napari_textsr.training.data import BatchPrefetcher

        prefetcher = BatchPrefetcher(
            s.sampler, s.local_batch, seed=config.seed, rank=dist_info.rank, start=s.start_step,
            workers=config.workers,
        )  # fmt: skip
        try:
            for step in range(s.start_step, config.steps):
                t0 = time.perf_counter()
                with torch.random.fork_rng(devices=fork_devices):
                    torch.manual_seed(_step_seed(config.seed, dist_info.rank, step))
                    batch = prefetcher.get(step)
                    prompt = s.caption_cache.batch(batch.captions).to(s.device)
                    extra = s.criterion.schedule(s.model, step, s.steps_per_epoch)
                    learning_rate = float(s.scheduler.get_last_lr()[0])
                    terms, grad_norm = self._train_step(
                        s, batch.lr.to(s.device, non_blocking=True), batch.hr.to(s.device, non_blocking=True),
                        prompt, batch.captions,
                    )  # fmt: skip
                    s.scheduler.step()
                    self._update_ema(s)
                completed = step + 1
                losses, stop = self._reduce_step_results(s, terms)
                s.history.append(losses.get("total", float("nan")))

                step_times.append(time.perf_counter() - t0)
                mean_step = sum(step_times) / len(step_times)
                event = TrainingEvent(
                    step=completed,
                    total_steps=config.steps,
                    losses=losses,
                    learning_rate=learning_rate,
                    images_per_second=config.batch_size / mean_step if mean_step > 0 else 0.0,
                    eta_seconds=mean_step * (config.steps - completed),
                    extra={**extra, "grad_norm": grad_norm, "epoch": completed / s.steps_per_epoch},
                )
                last = completed == config.steps or stop
                if dist_info.is_main:
                    if (completed % config.val_every == 0 or last) and s.val_images:
                        s.last_validation = self._validate(s, completed)
                        event.validation = s.last_validation
                    if completed % config.preview_every == 0 or last:
                        event.preview = self._preview(s)
                if completed % config.checkpoint_every == 0 or last:
                    event.checkpoint = self._write_checkpoint(s, completed)
                    saved_at = completed
                if stop:
                    stopped_early = completed < config.steps
                    event.message = f"stopped at step {completed}; checkpoint written"
                yield event
                if stop:
                    break
        except GeneratorExit:
            # Cancelled by the consumer (closing the generator) after the event of
            # step `completed`: keep that step's work.
            if completed != saved_at:
                self._write_checkpoint(s, completed)
            return self._summary(completed, True, s.last_validation, run_start, s.start_step)
        finally:
            prefetcher.close()
        return self._summary(completed, stopped_early, s.last_validation, run_start, s.start_step)

    # ------------------------------------------------------------------ setup
    def _setup(self, dist_info: _Distributed) -> "_Session":
        """Everything a session needs: device, data, model, losses, optimisers, restored state."""
        config = self.config
        # torchrun's ranks on one machine share the CPUs this process may use.
        configure_threads(config.num_threads, ranks=dist_info.local_world_size if dist_info.enabled else 1)
        device = select_device(config.device)
        if device.type == "cuda" and dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
        if config.batch_size % dist_info.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be a multiple of the number of processes ({dist_info.world_size})"
            )

        messages: list[str] = []
        state: dict[str, Any] | None = None
        if config.state_path.is_file() and config.resume:
            state = _load_state(config.state_path)
            self._check_resume_compatible(state)
        elif config.state_path.is_file() and not self.overwrite:
            raise ValueError(
                f"{config.out_dir} already holds a training run ({STATE_NAME}); "
                "resume it (--resume / resume=True), replace it (--overwrite) or choose another output folder"
            )
        elif config.checkpoint_path.is_file() and not self.overwrite:
            raise ValueError(
                f"{config.out_dir} already holds a model ({CHECKPOINT_NAME}) and no {STATE_NAME} to resume; "
                "replace it (--overwrite) or choose another output folder"
            )
        elif config.resume:
            messages.append(f"nothing to resume in {config.out_dir}; starting a new run")

        # Refuse a wrong --init before spending time on data.
        init_meta = self._check_init(config.init) if config.init is not None and state is None else None
        if config.init is not None and init_meta is not None and not config.init_transfer:
            messages.extend(self._recipe_note(config.init))
        if state is not None:
            encoder_spec = state["encoder_spec"]
        else:
            encoder_spec = config.encoder or (init_meta.encoder_spec if init_meta else "textsr-tiny:none")
        # A public tag is downloaded only when the user named it, never because an --init file did.
        encoder = PromptEncoder.from_spec(
            EncoderSpec.parse(encoder_spec), device=device, download=state is not None or config.encoder is not None
        )
        model = self._build_model(state, init_meta, encoder, messages).to(device)
        messages.extend(model.prepare_for_training(encoder))
        model.train()

        # ---- data
        if self._items is not None:
            items = self._items
            names = ", ".join(i.name for i in items[:5]) + (", ..." if len(items) > 5 else "")
            data_descriptions = [f"{len(items)} images given directly (e.g. napari layers: {names})"]
            data_note: str | None = f"<{len(items)} images from napari layers>"
        else:
            items, data_descriptions = load_training_items(config.data)
            data_note = None
        from napari_textsr.training.data import PatchSampler, split_train_val

        train_items, val_items = split_train_val(items, config.val_fraction, config.split_seed)
        assert config.degradation is not None  # TrainConfig fills it in
        sampler = PatchSampler(
            train_items, config.degradation, lr_patch=config.lr_patch, augment=config.augment, captions=config.captions
        )
        # PDN's temperature schedule counts epochs: an epoch draws as many LR pixels as the training images hold.
        lr_pixels = sum((i.image.shape[0] // config.scale) * (i.image.shape[1] // config.scale) for i in sampler.items)
        steps_per_epoch = max(1, math.ceil(lr_pixels / (config.batch_size * config.lr_patch**2)))
        data_descriptions.append(
            f"validation: {len(val_items)} of {len(items)} images held out "
            f"(val_fraction {config.val_fraction}, split seed {config.split_seed})"
        )

        # ---- losses and optimisers
        assert config.losses is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)  # discriminators, if any
            criterion = build_criterion(config.losses, encoder, config.scale)
        criterion.to(device)
        criterion.train()
        messages.extend(criterion.notes)
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=config.losses.generator_betas(),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio)
        )
        d_optimizer = None
        if criterion.discriminator is not None:
            ratio = getattr(config.losses, "discriminator_lr_ratio", 1.0)
            d_optimizer = torch.optim.Adam(
                criterion.discriminator.parameters(),
                lr=config.learning_rate * ratio,
                betas=config.losses.discriminator_betas(),
            )
        amp_dtype = self._amp_dtype(device)
        train_model: nn.Module = model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers (PDN's kernel temperature) are synced from rank 0 at every forward, the default.
            train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        command = config.command if config.command is not None else self._command(data_note)
        session = _Session(
            device=device,
            dist=dist_info,
            local_batch=config.batch_size // dist_info.world_size,
            state=state,
            messages=messages,
            train_items=train_items,
            sampler=sampler,
            steps_per_epoch=steps_per_epoch,
            data_descriptions=data_descriptions,
            encoder_spec=encoder_spec,
            encoder=encoder,
            model=model,
            train_model=train_model,
            criterion=criterion,
            optimizer=optimizer,
            scheduler=scheduler,
            d_optimizer=d_optimizer,
            scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
            amp_dtype=amp_dtype,
            caption_cache=_CaptionCache(encoder, list(dict.fromkeys(c for i in items for c in i.captions))),
            val_images=self._prepare_validation(val_items, config) if dist_info.is_main else [],
            commands=[command],
            init_training=dataclasses.asdict(init_meta.training) if init_meta and init_meta.training else None,
        )
        if state is not None:
            self._restore(session, state)
        else:
            criterion.prepare(model)
        if config.ema_decay > 0:
            session.ema = self._start_ema(model, state, messages, session.start_step)
        return session

    def _start_ema(
        self, model: TextSRModel, state: dict[str, Any] | None, messages: list[str], step: int
    ) -> TextSRModel:
        """The weight average: a frozen copy of ``model``, or the one the resumed state kept.

        Parameters training never changes (CLIP-SR's frozen CLIP-ViT weights) are
        shared with ``model``, not copied: their average is themselves.
        """
        frozen: dict[int, Any] = {id(p): p for p in model.parameters() if not p.requires_grad}
        ema = copy.deepcopy(model, frozen).requires_grad_(False).eval()
        if state is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        else:
            messages.append(
                f"weight average (ema_decay {self.config.ema_decay}) starts from the weights of step {step}"
            )
        return ema

    @torch.no_grad()
    def _update_ema(self, s: "_Session") -> None:
        """ema <- decay * ema + (1 - decay) * weights for the trained parameters; buffers copied."""
        if s.ema is None:
            return
        pairs = [(e, p) for e, p in zip(s.ema.parameters(), s.model.parameters()) if p.requires_grad]
        if pairs:
            averaged, current = zip(*pairs)
            torch._foreach_lerp_(list(averaged), [p.detach() for p in current], 1.0 - self.config.ema_decay)
        for e, b in zip(s.ema.buffers(), s.model.buffers()):
            e.copy_(b)

    def _build_model(
        self, state: dict[str, Any] | None, init_meta, encoder: PromptEncoder, messages: list[str]
    ) -> TextSRModel:
        config = self.config
        if state is not None:
            model = model_from_config(config.method, state["model_config"])
            model.load_state_dict(state["model"])
            return model
        if config.init is not None:
            if init_meta.encoder.matches(encoder.identity()):
                try:
                    model = load_checkpoint(config.init, encoder=encoder).model
                except EncoderMismatchError as error:  # pragma: no cover - matched above
                    raise ValueError(str(error)) from error
            else:
                model = self._switch_encoder(init_meta, encoder, messages)
            if config.init_transfer:
                return self._transfer(model, encoder, messages)
            if config.model_overrides:
                model = self._grow(model, messages)
            messages.append(f"fine-tuning {config.init.name} ({init_meta.method} x{init_meta.scale})")
            return model
        # A new model's initialisation comes from the seed (same config, same start).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return create_model(
                config.method, config.scale, config.preset, prompt_dim=encoder.embed_dim, **config.model_overrides
            )

    def _grow(self, model: TextSRModel, messages: list[str]) -> TextSRModel:
        """The --init model grown to ``--model-option n_blocks=N`` and/or ``n_feats=C`` (PDN, EDSR backbone).

        It computes what it computed: new blocks start as the identity
        (:meth:`~napari_textsr.models.pdn.PDN.deepened`), new feature channels
        at zero (:meth:`~napari_textsr.models.pdn.PDN.widened`); their random
        weights are drawn from the run's seed. Widening comes first, so new
        blocks are as wide as the rest. Raises ValueError for any other model
        option: the rest of the architecture comes from --init.
        """
        config = self.config
        overrides = dict(config.model_overrides)
        n_feats = overrides.pop("n_feats", None)
        n_blocks = overrides.pop("n_blocks", None)
        if overrides or not (n_feats or n_blocks) or not isinstance(model, PDN):
            raise ValueError(
                "when fine-tuning, the architecture comes from --init; the model options it takes are "
                f"n_blocks and n_feats (a deeper or wider PDN), got --model-option {config.model_overrides}"
            )
        name = config.init.name if config.init else "the model"
        steps = (  # widening first, so that new blocks are as wide as the rest
            (n_feats, "n_feats", PDN.widened, "widened", "feature channels", "the new channels start at zero"),
            (n_blocks, "n_blocks", PDN.deepened, "deepened", "blocks", "the new blocks start as the identity"),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for value, field, grow, grown, unit, start in steps:
                before = getattr(model.config, field)
                if value is not None and int(value) != before:
                    model = grow(model, int(value))
                    messages.append(
                        f"{grown} {name} from {before} to {value} {unit}; {start}, so the output is unchanged at step 0"
                    )
        return model

    def _switch_encoder(self, init_meta, encoder: PromptEncoder, messages: list[str]) -> TextSRModel:
        """The --init model, to be fine-tuned against another prompt encoder than the one it was trained with.

        Only when --encoder was asked for explicitly (otherwise the run takes
        the checkpoint's own encoder, so there is no mismatch). The model's
        weights are kept; its text layers see the new encoder's embeddings from
        the first step on and adapt while fine-tuning. Encoders of another
        embedding width need --init-transfer, which re-initialises the text
        layers that no longer fit. Raises ValueError otherwise.
        """
        config = self.config
        new_identity = encoder.identity()
        if config.encoder is None:  # pragma: no cover - the run's encoder defaults to the checkpoint's
            raise ValueError(f"{config.init} was trained with {init_meta.encoder.describe()}; pass --encoder")
        if init_meta.encoder.embed_dim != new_identity.embed_dim and not config.init_transfer:
            raise ValueError(
                f"cannot fine-tune {config.init} onto prompt encoder {new_identity.describe()}: its embedding "
                f"width differs from that of {init_meta.encoder.describe()}, the model's. Add --init-transfer "
                f"to re-initialise the text layers that no longer fit, or train with --encoder {init_meta.encoder_spec}."
            )
        assert config.init is not None
        model = load_checkpoint(config.init).model.cpu()
        messages.append(
            f"switching prompt encoder from {init_meta.encoder.describe()} to {new_identity.describe()}: "
            "the model's text layers adapt while fine-tuning"
        )
        return model

    def _transfer(self, source: TextSRModel, encoder: PromptEncoder, messages: list[str]) -> TextSRModel:
        """A new model (this run's scale and preset, seeded) with every tensor of ``source`` that fits."""
        config = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = create_model(
                config.method, config.scale, config.preset, prompt_dim=encoder.embed_dim, **config.model_overrides
            )
        target = model.state_dict()
        taken = {k: v for k, v in source.state_dict().items() if k in target and target[k].shape == v.shape}
        if not taken:
            raise ValueError(
                f"--init-transfer: no tensor of {config.init} fits a {config.method} {config.preset} model"
            )
        model.load_state_dict(taken, strict=False)
        fresh = sorted(set(target) - set(taken))
        messages.append(
            f"transferred {len(taken)} of {len(target)} tensors from {config.init.name} "  # type: ignore[union-attr]
            f"(x{source.config.scale}); initialised {len(fresh)}: {', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}"
        )
        return model

    def _restore(self, s: "_Session", state: dict[str, Any]) -> None:
        """Continue from a train_state: optimisers, schedule, discriminator, step, history."""
        config = self.config
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
        if s.scaler is not None and state.get("scaler"):
            s.scaler.load_state_dict(state["scaler"])
        if s.criterion.discriminator is not None and state.get("discriminator") is not None:
            s.criterion.discriminator.load_state_dict(state["discriminator"])
            assert s.d_optimizer is not None
            s.d_optimizer.load_state_dict(state["discriminator_optimizer"])
        s.criterion.load_extra_state(state.get("criterion", {}))
        s.start_step = int(state["step"])
        # The schedule is a function of the step; recomputing the learning rate
        # gives the stored value bit for bit, and the right one if --steps grew.
        factor = cosine_factor(s.start_step, config.steps, config.warmup_steps, config.min_lr_ratio)
        for group in s.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        s.scheduler._last_lr = [group["lr"] for group in s.optimizer.param_groups]
        s.history = list(state.get("loss_history", []))
        # The first session's command, then each resume's: a resumed checkpoint is made by all of them.
        s.commands = list(state.get("commands", [])) + s.commands
        s.init_training = state.get("init_training")
        if state.get("validation"):
            s.last_validation = ValidationResult(**state["validation"])
        if state.get("world_size", 1) != s.dist.world_size:
            s.messages.append(
                f"resumed with {s.dist.world_size} processes instead of {state.get('world_size', 1)}: "
                "batches differ from the original run from here on"
            )
        s.messages.append(f"resumed from step {s.start_step}")

    # ------------------------------------------------------------- checkpoints
    def _record(self, s: "_Session", completed: int) -> TrainingRecord:
        config = self.config
        assert config.losses is not None and config.degradation is not None
        return TrainingRecord(
            command=s.commands[0],
            data=list(s.data_descriptions),
            degradation=config.degradation.to_dict(),
            steps=completed,
            validation=s.last_validation.to_record() if s.last_validation else {},
            extra={
                "method": config.method,
                "preset": config.preset if config.init is None else f"from {config.init}",
                "encoder": s.encoder_spec,
                "init": str(config.init) if config.init else None,
                # The --init model's stages, flat (a chain nested per stage grows too deep to read).
                "earlier_stages": training_stages(s.init_training),
                "losses": config.losses.to_dict(),
                "captions": config.captions.to_dict(),  # type: ignore[union-attr]
                "init_transfer": config.init_transfer,
                "loss_notes": list(s.criterion.notes),
                "batch_size": config.batch_size,
                "lr_patch": config.lr_patch,
                "learning_rate": config.learning_rate,
                "total_steps": config.steps,
                "seed": config.seed,
                "world_size": s.dist.world_size,
                "steps_per_epoch": s.steps_per_epoch,
                "ema_decay": config.ema_decay,
                "warmup_steps": config.warmup_steps,
                "min_lr_ratio": config.min_lr_ratio,
                "grad_clip": config.grad_clip,
                "augment": config.augment,
                "resume_commands": s.commands[1:],
            },
        )

    def _write_checkpoint(self, s: "_Session", completed: int) -> Path | None:
        """Write train_state.pt, then the model checkpoint (rank 0 only; both atomic)."""
        if not s.dist.is_main:
            return None
        config = self.config
        discriminator = s.criterion.discriminator
        train_state = {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "step": completed,
            "config": {**config.to_dict(), "encoder": s.encoder_spec},
            "encoder_spec": s.encoder_spec,
            "model_config": s.model.config.to_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()},
            "ema": {k: v.detach().cpu().clone() for k, v in s.ema.state_dict().items()} if s.ema is not None else None,
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict() if s.scaler is not None else None,
            "discriminator": discriminator.state_dict() if discriminator is not None else None,
            "discriminator_optimizer": s.d_optimizer.state_dict() if s.d_optimizer is not None else None,
            "criterion": s.criterion.extra_state(),
            # Step k's randomness is derived from (seed, rank, k), so the seed restores it.
            "rng": {"scheme": "per-step generators seeded with (seed, rank, step)", "seed": config.seed},
            "world_size": s.dist.world_size,
            "loss_history": s.history,
            "commands": s.commands,
            "init_training": s.init_training,
            "validation": dataclasses.asdict(s.last_validation) if s.last_validation else None,
        }
        # The state first: if we die between the two writes, the resume point
        # is never older than the model file a user might pick up.
        try:
            _atomic_torch_save(train_state, config.state_path)
            record = self._record(s, completed)
            checkpoint = save_checkpoint(
                config.checkpoint_path,
                s.output_model,
                s.encoder,
                name=config.name or f"{config.method}-x{config.scale}-{config.out_dir.name}",
                description=f"trained {completed} steps with napari-textsr's trainer",
                training=record,
            )
        except OSError as error:  # e.g. a full disk: the files written before are intact (atomic writes)
            saved = self._last_record.steps if self._last_record else s.start_step if s.state is not None else None
            kept = (
                f"the checkpoint saved before (step {saved}) is intact"
                if saved is not None
                else "nothing was saved before"
            )
            raise OSError(
                error.errno,
                f"cannot save the checkpoint of step {completed} in {config.out_dir}: {error.strerror or error}; {kept}",
            ) from error
        self._last_record, self._last_checkpoint = record, checkpoint
        return self._last_checkpoint

    # ------------------------------------------------------------ internals
    def _summary(
        self, completed: int, cancelled: bool, validation: ValidationResult | None, run_start: float, start_step: int
    ) -> TrainingSummary:
        elapsed = time.perf_counter() - run_start
        done = completed - start_step
        return TrainingSummary(
            steps_completed=completed,
            total_steps=self.config.steps,
            cancelled=cancelled,
            checkpoint=self._last_checkpoint,
            train_state=self.config.state_path if self._last_checkpoint else None,
            validation=validation,
            elapsed_seconds=elapsed,
            images_per_second=done * self.config.batch_size / elapsed if elapsed > 0 else 0.0,
            record=self._last_record,
        )

    def _amp_dtype(self, device: torch.device) -> torch.dtype | None:
        enabled = self.config.mixed_precision
        if enabled is None:
            enabled = device.type == "cuda"
        if not enabled:
            return None
        if device.type != "cuda":
            raise ValueError("mixed precision training needs a CUDA GPU")
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _train_step(
        self, s: "_Session", lr_img: torch.Tensor, hr_img: torch.Tensor, prompt: PromptEmbedding, captions: list[str]
    ) -> tuple[dict[str, float], float]:
        """One optimiser step (and one discriminator step when adversarial); returns loss terms and grad norm."""
        model, criterion, optimizer, d_optimizer = s.train_model, s.criterion, s.optimizer, s.d_optimizer
        scaler, amp_dtype, dist_info = s.scaler, s.amp_dtype, s.dist
        device_type = lr_img.device.type
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            output = model(lr_img, prompt)
        terms_out: dict[str, float] = {}
        discriminator = criterion.discriminator
        if discriminator is not None and d_optimizer is not None:
            # Discriminator first, on the detached output (AttnGAN / GALIP order).
            d_optimizer.zero_grad(set_to_none=True)
            d_total, d_terms = criterion.discriminator_loss(output, hr_img, prompt, captions)
            d_total.backward()
            if dist_info.enabled:
                import torch.distributed as dist

                for p in discriminator.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= dist_info.world_size
            d_optimizer.step()
            terms_out.update({k: float(v.detach()) for k, v in d_terms.items()})
            discriminator.requires_grad_(False)
        try:
            optimizer.zero_grad(set_to_none=True)
            total, terms = criterion.generator_loss(output, hr_img, prompt, captions)
            if not torch.isfinite(total):
                raise FloatingPointError(
                    f"training loss is {float(total)} ({ {k: float(v) for k, v in terms.items()} }); "
                    "lower the learning rate or check the data"
                )
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)
            else:
                total.backward()
            if self.config.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
            else:
                grads = [p.grad.detach().norm() for p in params if p.grad is not None]
                grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        finally:
            if discriminator is not None:
                discriminator.requires_grad_(True)
        terms_out.update({k: float(v.detach()) for k, v in terms.items()})
        terms_out["total"] = float(total.detach())
        return terms_out, grad_norm

    def _reduce_step_results(self, s: "_Session", terms: dict[str, float]) -> tuple[dict[str, float], bool]:
        """Loss terms averaged over ranks, and whether any rank asked to stop.

        One collective per step, so that all ranks stop at the same step.
        """
        names = sorted(terms)
        values = torch.tensor([terms[n] for n in names] + [float(self._stop.is_set())], dtype=torch.float64)
        if s.dist.enabled:
            import torch.distributed as dist

            packed = values.to(s.device) if s.device.type == "cuda" else values
            dist.all_reduce(packed)
            values = packed.cpu()
            values[:-1] /= s.dist.world_size
        return {n: float(v) for n, v in zip(names, values[:-1])}, bool(values[-1] > 0)

    def _check_resume_compatible(self, state: dict[str, Any]) -> None:
        saved = TrainConfig.from_dict(state["config"]).to_dict()  # fills fields added since the run began
        current = self.config.to_dict()
        if current.get("encoder") is None:
            current["encoder"] = saved.get("encoder")
        different = [
            f"{name}: run has {saved.get(name)!r}, now {current.get(name)!r}"
            for name in TrainConfig.RESUME_FIXED
            if saved.get(name) != current.get(name)
        ]
        if different:
            raise ValueError(
                f"cannot resume the run in {self.config.out_dir}: settings differ from the run's "
                f"({'; '.join(different)}). Resume with the same settings "
                "(TrainConfig.from_run(out_dir)) or start a new run in another folder."
            )

    def _check_init(self, path: Path):
        """The init checkpoint's metadata, if it can be fine-tuned by this run."""
        try:
            meta = read_metadata(path)
        except CheckpointError as error:
            raise ValueError(f"cannot fine-tune from {path}: {error}") from error
        config = self.config
        if meta.method != config.method:
            raise ValueError(
                f"cannot fine-tune {path.name}: it is a {meta.method} checkpoint and this run trains "
                f"{config.method}; use --method {meta.method} or a {config.method} checkpoint"
            )
        if meta.scale != config.scale and not config.init_transfer:
            raise ValueError(
                f"cannot fine-tune {path.name}: it upscales x{meta.scale} and this run trains x{config.scale}; "
                f"use --scale {meta.scale}, a x{config.scale} checkpoint, or --init-transfer to take the "
                "tensors that fit (the backbone) and initialise the rest"
            )
        return meta

    def _recipe_note(self, path: Path) -> list[str]:
        """A note when a fine-tune trains its --init model otherwise than the model's own last stage did."""
        from napari_textsr.training.config import recipe_changes, recipe_of

        try:
            changes = recipe_changes(self.config, recipe_of(path))
        except ValueError:  # no recorded recipe: nothing to compare with
            return []
        if not changes:
            return []
        shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
        return [
            f"{path.name} was trained with another recipe ({shown}); fine-tuning it on this one can undo what "
            "its own taught it (the bundled PDNs, for one, learnt to leave sharp inputs alone: docs/training.md, "
            "'Fine-tuning with the model's own recipe'). To keep its own: --recipe-from init (Train widget: "
            "Degradation 'as the starting model')."
        ]

    def _command(self, data_note: str | None) -> str:
        command = equivalent_command(self.config, data_note)
        if self.config.resume:
            command += " --resume"
        return command

    def _prepare_validation(self, val_items: list["CaptionedImage"], config: TrainConfig) -> list[_ValImage]:
        from napari_textsr.training.data import validation_pair

        s = config.scale
        images: list[_ValImage] = []
        for item in val_items:
            if len(images) == config.val_max_images:
                break
            if min(item.image.shape[:2], default=0) // s * s - 2 * s < 11:  # SSIM's 11x11 window after the border crop
                continue
            lr, hr = validation_pair(item, config.degradation, max_side=config.val_crop)  # type: ignore[arg-type]
            images.append(_ValImage(lr=lr.float(), hr=hr.float(), caption=item.captions[0]))
        return images

    @torch.no_grad()
    def _validate(self, s: "_Session", step: int) -> ValidationResult:
        """PSNR/SSIM of the model and of bicubic on the held-out images (rank 0)."""
        model, scale = s.output_model, self.config.scale
        was_training = model.training
        model.eval()
        scores: dict[str, list[float]] = {}
        try:
            for v in s.val_images:
                lr, hr = v.lr.to(s.device), v.hr.to(s.device)
                with torch.autocast(s.device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None):
                    out = model(lr, s.caption_cache[v.caption].to(s.device)).image.float()
                bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
                for names, image in (
                    (("psnr", "ssim", "psnr_rgb", "ssim_rgb"), out),
                    (("psnr_bicubic", "ssim_bicubic", "psnr_bicubic_rgb", "ssim_bicubic_rgb"), bicubic),
                ):
                    q = quality_scores(image, hr, border=scale)
                    for name, value in zip(names, (q.psnr_y, q.ssim_y, q.psnr_rgb, q.ssim_rgb)):
                        scores.setdefault(name, []).append(value)
        finally:
            model.train(was_training)
        means = {k: float(np.mean(v)) for k, v in scores.items()}
        return ValidationResult(step=step, n_images=len(s.val_images), **means)

    @torch.no_grad()
    def _preview(self, s: "_Session") -> PreviewImages | None:
        """The first held-out image (or a crop of the first training image) through the model."""
        config, model = self.config, s.output_model
        candidates = s.val_images or self._prepare_validation(s.train_items[:1], config)
        if not candidates:
            return None
        v = candidates[0]
        was_training = model.training
        model.eval()
        try:
            out = model(v.lr.to(s.device), s.caption_cache[v.caption].to(s.device))
        finally:
            model.train(was_training)
        bicubic = F.interpolate(v.lr, scale_factor=config.scale, mode="bicubic", align_corners=False)
        return PreviewImages(
            lr=_to_numpy_image(v.lr[0]),
            output=_to_numpy_image(out.image[0]),
            target=_to_numpy_image(v.hr[0]),
            bicubic=_to_numpy_image(bicubic[0]),
            caption=v.caption,
            attention={k: a[0, 0].detach().float().cpu().numpy() for k, a in out.attention.items()},
        )
