"""What defines a training run: :class:`TrainConfig`, and the names of the files a run writes.

Light on purpose: importing this module imports neither torch nor numpy, so
``textsr train --help`` reads the defaults (the field defaults here, written
nowhere else) at once. The methods, scales, degradations and loss weights a
config names are checked when it is built (those imports happen then).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_textsr.training.presets import DEFAULT_PRESET

if TYPE_CHECKING:
    from napari_textsr.checkpoints import CheckpointMetadata
    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.degradations import DegradationLike
    from napari_textsr.training.losses import LossWeights

__all__ = [
    "TrainConfig",
    "CHECKPOINT_STEM",
    "STATE_NAME",
    "RECIPE_FIELDS",
    "records_recipe",
    "recipe_of",
    "recipe_changes",
]

# A run's checkpoint is CHECKPOINT_STEM + napari_textsr.checkpoints.SUFFIX
# (trainer.CHECKPOINT_NAME); its training state STATE_NAME.
CHECKPOINT_STEM = "model"
STATE_NAME = "train_state.pt"
_STATE_FORMAT = "napari-textsr-train-state"
_STATE_VERSION = 1


def _default_degradation(scale: int) -> "DegradationLike":
    from napari_textsr.training.degradations import DegradationFamily

    return DegradationFamily.preset_family(DEFAULT_PRESET, scale)


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    The field defaults are the only place training defaults are written:
    ``textsr train`` leaves every option not typed to them (and shows them in
    its help), and :func:`equivalent_command` leaves out settings equal to them.

    ``batch_size`` is the global batch (split over ``torchrun`` ranks);
    ``lr_patch`` the LR patch side (HR patches are ``lr_patch * scale``).
    ``encoder``: an EncoderSpec string; ``None`` takes the ``init``
    checkpoint's encoder (or ``textsr-tiny:none`` without one).
    ``degradation``: a fixed pipeline or a family drawn per sample
    (:mod:`napari_textsr.training.degradations`); ``None`` means the
    ``realistic`` family. ``captions``: how degradation words and caption
    dropout enter the captions (:class:`~napari_textsr.training.captions.CaptionPolicy`;
    ``None`` means its defaults). ``losses``: ``None`` means the method's
    paper defaults (:func:`~napari_textsr.training.losses.default_loss_weights`).
    ``init_transfer``: with ``init``, start from a checkpoint of another scale
    (or preset), taking every tensor whose name and shape fit and
    initialising the rest (e.g. x16 from x8: all but the last upsampling stage).
    ``data``: folders with ``captions.csv`` and ``synthetic:N:SEED[:SIZE]``
    entries (ignored when the Trainer is given ``items``).
    Learning rate: cosine from ``learning_rate`` to ``learning_rate *
    min_lr_ratio`` over ``steps`` after ``warmup_steps`` of linear warm-up.
    ``seed`` sets the initialisation and the batches; ``split_seed`` (default
    0, like ``textsr bench --split-seed``) which images are held out.
    ``grad_clip``: max global gradient norm (0 = off). ``mixed_precision``:
    ``None`` = on for CUDA (bfloat16 where supported, else float16 with loss
    scaling), off elsewhere. Validation uses at most ``val_max_images``
    held-out images, centre-cropped to ``val_crop`` HR pixels, so it stays
    quick on a CPU. ``model_overrides`` set model config fields of a new model
    (e.g. ``text_fusion=False`` for the text-free baseline); with ``init``
    the overrides taken are ``n_blocks`` and ``n_feats`` of a PDN, which grow
    it by blocks that start as the identity and by feature channels that
    start at zero (:meth:`napari_textsr.models.pdn.PDN.deepened`,
    :meth:`~napari_textsr.models.pdn.PDN.widened`). ``command``: the
    command line to record (the CLI passes ``sys.argv``); ``None`` records an
    equivalent ``textsr train`` command rebuilt from this config.
    ``ema_decay``: keep an exponential moving average of the weights,
    ``ema = decay * ema + (1 - decay) * weights`` after every optimiser step
    (Polyak averaging; BasicSR's ``ema_decay``, typically 0.999: about the last
    1000 steps), and validate, preview and write the checkpoint from it; 0 = off.
    The raw weights keep training and are in the training state with the average.
    A resumed run may switch it on (the average starts from the weights it
    resumes with), change the decay, or switch it off.
    ``workers``: processes that draw (degrade) the coming steps' batches
    while the model trains (:class:`~napari_textsr.training.data.BatchPrefetcher`;
    0 = drawn in the training process). Batches, and so the trained model, are
    the same for any value; on a GPU a few workers keep it busy.
    """

    method: str
    scale: int = 4
    preset: str = "default"
    encoder: str | None = None
    data: list[str] = field(default_factory=list)
    steps: int = 1000
    batch_size: int = 16
    lr_patch: int = 32
    learning_rate: float = 2e-4
    degradation: "DegradationLike | None" = None
    captions: "CaptionPolicy | None" = None
    losses: "LossWeights | None" = None
    val_fraction: float = 0.1
    val_every: int = 200
    checkpoint_every: int = 200
    preview_every: int = 200
    out_dir: Path = Path("textsr-training")
    init: Path | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    workers: int = 0
    # Additions to the documented contract.
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    mixed_precision: bool | None = None
    # Which images are held out is fixed apart from ``seed``, so a fine-tune or
    # a rerun with another seed never trains on an earlier run's validation images.
    split_seed: int = 0
    augment: bool = True
    val_max_images: int = 8
    val_crop: int = 256
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_transfer: bool = False
    name: str = ""
    command: str | None = None

    # Fields a resumed run must share with the run it continues (others, like
    # steps, intervals, the weight average, device and threads, may change between sessions).
    RESUME_FIXED = (
        "method", "scale", "preset", "encoder", "data", "batch_size", "lr_patch", "learning_rate",
        "degradation", "losses", "val_fraction", "split_seed", "seed", "warmup_steps", "min_lr_ratio", "grad_clip",
        "augment", "model_overrides", "init", "captions", "init_transfer",
    )  # fmt: skip

    def __post_init__(self) -> None:
        from napari_textsr.methods import method_names
        from napari_textsr.models.base import SUPPORTED_SCALES
        from napari_textsr.training.losses import default_loss_weights

        self.method = self.method.lower()
        if self.method not in method_names():
            raise ValueError(f"unknown method {self.method!r}; choose from {method_names()}")
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        for name in ("steps", "batch_size", "lr_patch", "val_every", "checkpoint_every", "preview_every"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        self.out_dir = Path(self.out_dir)
        self.init = Path(self.init) if self.init else None
        self.data = [str(d) for d in self.data]
        if self.degradation is None:
            self.degradation = _default_degradation(self.scale)
        elif self.degradation.scale != self.scale:
            raise ValueError(f"degradation scale {self.degradation.scale} differs from scale {self.scale}")
        if self.captions is None:
            from napari_textsr.training.captions import CaptionPolicy

            self.captions = CaptionPolicy()
        if self.losses is None:
            self.losses = default_loss_weights(self.method)
        elif self.losses.method != self.method:
            raise ValueError(f"loss weights are for {self.losses.method}, not {self.method}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, degradation and losses as dicts)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["out_dir"] = str(self.out_dir)
        values["init"] = str(self.init) if self.init else None
        values["degradation"] = self.degradation.to_dict()  # type: ignore[union-attr]
        values["captions"] = self.captions.to_dict()  # type: ignore[union-attr]
        values["losses"] = self.losses.to_dict()  # type: ignore[union-attr]
        values["data"] = list(self.data)
        values["model_overrides"] = dict(self.model_overrides)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"TrainConfig does not take {sorted(unknown)}")
        from napari_textsr.training.captions import CaptionPolicy
        from napari_textsr.training.degradations import degradation_from_dict

        # Runs stored before split_seed existed split with their seed; runs stored
        # before degradation words existed trained on content captions alone.
        values.setdefault("split_seed", values.get("seed", 0))
        values.setdefault("captions", CaptionPolicy.content_only().to_dict())
        if isinstance(values.get("degradation"), dict):
            values["degradation"] = degradation_from_dict(values["degradation"])
        if isinstance(values.get("captions"), dict):
            values["captions"] = CaptionPolicy.from_dict(values["captions"])
        if isinstance(values.get("losses"), dict):
            from napari_textsr.training.losses import loss_weights_from_dict

            values["losses"] = loss_weights_from_dict(values["method"], values["losses"])
        return cls(**values)

    @classmethod
    def from_run(cls, out_dir: str | os.PathLike) -> "TrainConfig":
        """The config a previous run in ``out_dir`` was started with (to resume it)."""
        state = _load_state(Path(out_dir) / STATE_NAME)
        config = cls.from_dict(state["config"])
        config.out_dir = Path(out_dir)
        return config

    @property
    def checkpoint_path(self) -> Path:
        from napari_textsr.checkpoints import SUFFIX

        return self.out_dir / (CHECKPOINT_STEM + SUFFIX)

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_NAME


def _load_state(path: Path) -> dict[str, Any]:
    """A run's training state (``torch.load`` with ``weights_only``); ValueError if it is not one this package wrote."""
    from napari_textsr.durable import load_torch_state

    state = load_torch_state(path)
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path} is not a napari-textsr training state")
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"{path}: training state version {state.get('version')} is not supported")
    return state


# The TrainConfig fields a checkpoint's last training stage records and
# :func:`recipe_of` hands to a new run (``textsr train --recipe-from``): how
# the model was trained, not what on, where or from which weights.
RECIPE_FIELDS = (
    "encoder", "steps", "batch_size", "lr_patch", "learning_rate", "warmup_steps", "min_lr_ratio", "grad_clip",
    "ema_decay", "augment", "degradation", "captions", "losses",
)  # fmt: skip


def records_recipe(meta: CheckpointMetadata) -> bool:
    """Whether a checkpoint's metadata (``read_metadata``) records a training stage :func:`recipe_of` can take.

    Header only: imports neither torch nor the training modules.
    """
    return meta.training is not None and bool(meta.training.degradation)


def recipe_of(path: str | os.PathLike, *, method: str | None = None, scale: int | None = None) -> dict[str, Any]:
    """The recipe of the last training stage of the checkpoint at ``path``, as TrainConfig field values.

    Returns ``{field: value}`` for the :data:`RECIPE_FIELDS` the checkpoint's
    :class:`~napari_textsr.checkpoints.TrainingRecord` holds: the degradation
    (a ``Degradation`` or ``DegradationFamily``), the caption policy
    (``CaptionPolicy``), the loss weights (``LossWeights``) and the plain
    settings (encoder spec, steps, global batch size, LR patch side in pixels,
    peak learning rate, the weight average's decay, ...). Settings a
    checkpoint does not record (``warmup_steps``, ``min_lr_ratio``,
    ``grad_clip`` and ``augment`` were first recorded on 7 December 2026) are
    left out, so a new run takes TrainConfig's defaults for them; loss
    weights newer than the record (e.g. PDN's ``l2``) take their defaults.

    ``method`` / ``scale``: the run's, if already known; a recipe of another
    method or scale is refused (its degradation and losses would not fit).

    Raises ``CheckpointError`` for a file that is not a checkpoint and
    ``ValueError`` for one with no training record (e.g. converted weights)
    or of another method or scale.
    """
    from napari_textsr.checkpoints import read_metadata

    meta = read_metadata(path)
    record = meta.training
    if record is None or not records_recipe(meta):
        raise ValueError(f"{path}: the checkpoint records no training stage to take a recipe from")
    if method is not None and method.lower() != meta.method:
        raise ValueError(f"{path} is a {meta.method} model; its recipe does not fit a {method} run")
    if scale is not None and int(scale) != meta.scale:
        raise ValueError(f"{path} is an x{meta.scale} model; its recipe does not fit an x{scale} run")
    from napari_textsr.training.captions import CaptionPolicy
    from napari_textsr.training.degradations import degradation_from_dict
    from napari_textsr.training.losses import loss_weights_from_dict

    values: dict[str, Any] = {}
    for key, value in record.extra.items():
        name = "steps" if key == "total_steps" else key
        if name in RECIPE_FIELDS and name not in ("degradation", "captions", "losses") and value is not None:
            values[name] = value
    values["degradation"] = degradation_from_dict(record.degradation)
    if isinstance(record.extra.get("captions"), dict):
        values["captions"] = CaptionPolicy.from_dict(record.extra["captions"])
    if isinstance(record.extra.get("losses"), dict):
        values["losses"] = loss_weights_from_dict(meta.method, record.extra["losses"])
    return values


def recipe_changes(config: TrainConfig, recipe: dict[str, Any]) -> list[str]:
    """How ``config`` trains differently from ``recipe`` (:func:`recipe_of`), in what decides a model's behaviour.

    Compares the caption policy, the degradation and the loss weights setting
    by setting; returns lines like ``"captions.p_empty_keeps_blur 0.7 -> 0"``
    (``"degradation: Degradation -> DegradationFamily"`` when the types
    differ), empty when they agree.
    """
    changes: list[str] = []
    for name in ("captions", "degradation", "losses"):
        before, after = recipe.get(name), getattr(config, name)
        if before is None or after is None:
            continue
        if type(before) is not type(after):
            changes.append(f"{name}: {type(before).__name__} -> {type(after).__name__}")
            continue
        old, new = dataclasses.asdict(before), dataclasses.asdict(after)
        changes.extend(
            f"{name}.{key} {_short(old.get(key))} -> {_short(new.get(key))}"
            for key in dict.fromkeys([*old, *new])
            if old.get(key) != new.get(key)
        )
    return changes


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ":".join(_short(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def config_defaults() -> dict[str, Any]:
    """TrainConfig's field defaults (``default_factory`` fields called), by field name.

    The one source of the CLI's and the Train widget's defaults.
    """
    values: dict[str, Any] = {}
    for item in dataclasses.fields(TrainConfig):
        if item.default is not dataclasses.MISSING:
            values[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            values[item.name] = item.default_factory()
    return values
