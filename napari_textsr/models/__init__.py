"""Model registry: method name -> (config dataclass, nn.Module class), from the method table.

The methods themselves are listed once, in :data:`napari_textsr.methods.METHODS`;
each method's module is imported on first use, so building one method does not
import the others.

``create_model("pdn", scale=4, preset="tiny", prompt_dim=32)`` builds an
untrained model of any method, scale and preset.
"""

from __future__ import annotations

from typing import Any

from napari_textsr.methods import METHODS, get_method
from napari_textsr.models.base import (
    SUPPORTED_SCALES,
    ModelConfig,
    SROutput,
    TextSRModel,
    TilingInfo,
)

__all__ = [
    "SUPPORTED_SCALES",
    "ModelConfig",
    "SROutput",
    "TextSRModel",
    "TilingInfo",
    "available_methods",
    "create_model",
    "get_model_class",
    "model_from_config",
]


def available_methods() -> list[str]:
    """Names of every method (the method table's keys, :data:`napari_textsr.methods.METHODS`)."""
    return list(METHODS)


def get_model_class(method: str) -> type[TextSRModel]:
    """The model class of ``method`` (imported on first use; UnknownMethodError, a ValueError, otherwise)."""
    return get_method(method).model_class()


def create_model(
    method: str, scale: int = 4, preset: str = "default", prompt_dim: int = 64, **overrides: Any
) -> TextSRModel:
    """An untrained model of ``method`` at ``scale`` with a named size preset.

    ``prompt_dim`` must equal the prompt encoder's embedding width.
    Overrides set any other config field (e.g. ``text_fusion=False``).
    """
    cls = get_model_class(method)
    config = cls.config_class.from_preset(preset, scale=scale, prompt_dim=prompt_dim, **overrides)
    return cls(config)


def model_from_config(method: str, config: dict[str, Any]) -> TextSRModel:
    """Rebuild a model from the config dict a checkpoint stores."""
    cls = get_model_class(method)
    return cls(cls.config_class.from_dict(config))
