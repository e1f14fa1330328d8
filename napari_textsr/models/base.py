"""The contract every text-guided SR model follows.

A model is an :class:`torch.nn.Module` whose ``forward(lr, prompt)`` takes a batch of
low-resolution RGB images and a :class:`~napari_textsr.prompts.PromptEmbedding` and
returns an :class:`SROutput`. Nothing here knows about napari, files or devices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from napari_textsr.prompts import PromptEmbedding, PromptEncoder

SUPPORTED_SCALES = (2, 4, 8, 16)


@dataclass
class SROutput:
    """What a model returns.

    Attributes
    ----------
    image:
        float32 tensor (B, 3, s*h, s*w), nominally in [0, 1] (not clamped: the
        engine clamps, training losses see the raw values).
    attention:
        Human-readable name -> non-negative float tensor (B, 1, h', w') at the
        model's internal resolution (the engine resamples to the output grid).
        Names are built from the first batch item's prompt (inference runs one
        caption at a time): a word for TGSR, an iteration for CLIP-SR, a module
        for PDN. Insertion order is the order maps are shown in.
    aux:
        Intermediate tensors that only training needs (e.g. TGSR's coarse
        image and per-word attention stack). Empty at inference if unused.
    """

    image: torch.Tensor
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Fields shared by every method's config; subclasses add their own.

    ``prompt_dim`` is the prompt encoder's embedding width, so a config also
    says which encoders it can be paired with. ``text_fusion=False`` builds the
    same backbone with every text-conditioned module removed, which is the
    baseline the benchmarks compare against.
    """

    scale: int = 4
    prompt_dim: int = 64
    in_channels: int = 3
    text_fusion: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        if self.prompt_dim <= 0:
            raise ValueError(f"prompt_dim must be positive, got {self.prompt_dim}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "ModelConfig":
        """Config of a named size (``tiny`` for tests ... ``paper``), with overrides."""
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown preset {preset!r} for {cls.__name__}; choose from {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[preset], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{cls.__name__} does not take {sorted(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class TilingInfo:
    """What the inference engine must know to tile a model without seams.

    ``receptive_field``: LR pixels on each side that can influence an output
    pixel; the engine pads every tile by at least this much, so a tiled result
    equals the untiled one. ``alignment``: tile origins (LR pixels) must be
    multiples of it (windowed attention). ``min_size``: smallest LR side the
    model accepts. ``bytes_per_lr_pixel``: rough float32 activation memory per
    LR pixel at batch 1, used to choose a tile size from free memory.
    """

    receptive_field: int
    alignment: int = 1
    min_size: int = 1
    bytes_per_lr_pixel: int = 0
    exact: bool = True  # False where a global op (e.g. channel attention) makes tiles approximate


class TextSRModel(nn.Module):
    """Base class: ``forward(lr, prompt) -> SROutput``.

    Subclasses set ``method`` and ``config_class``, build their layers from a
    config in ``__init__`` and implement :meth:`forward` and :meth:`tiling_info`.
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr: torch.Tensor, prompt: "PromptEmbedding") -> SROutput:  # pragma: no cover
        """lr: float32 (B, 3, h, w) in [0, 1]; returns image (B, 3, s*h, s*w)."""
        raise NotImplementedError

    def tiling_info(self) -> TilingInfo:  # pragma: no cover
        raise NotImplementedError

    def prepare_for_training(self, encoder: "PromptEncoder") -> list[str]:
        """Hook run before the optimiser is built (new, resumed and fine-tuned runs alike).

        Models that reuse frozen parts of the prompt encoder (CLIP-SR's
        CLIP-ViT) load and freeze them here. Returns messages for the log.
        """
        return []

    def fusion_parameters(self) -> list[nn.Parameter]:
        """Parameters of the text-conditioned modules (tests perturb these)."""
        return [p for name, p in self.named_parameters() if _is_fusion_name(name)]


# Sub-module attribute names that hold text-conditioned layers. Models name
# their fusion modules with one of these prefixes so generic code (tests,
# fine-tuning that freezes the backbone) can find them without special cases.
FUSION_MODULE_PREFIXES = ("tam", "tif", "dcm", "prompt_predictor", "text_")


def _is_fusion_name(param_name: str) -> bool:
    return any(part.startswith(FUSION_MODULE_PREFIXES) for part in param_name.split("."))
