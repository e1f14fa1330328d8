"""Model registry: method name -> (config dataclass, nn.Module class).

``create_model("pdn", scale=4, preset="tiny", prompt_dim=32)`` builds an
untrained model of any method, scale and preset.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

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

# Method name -> "module:Class"; imported on first use so that building one
# method does not import the others.
_REGISTRY: dict[str, str] = {
    "tgsr": "napari_textsr.models.tgsr:TGSR",
    "clipsr": "napari_textsr.models.clipsr:CLIPSR",
    "pdn": "napari_textsr.models.pdn:PDN",
}

METHOD_TITLES = {
    "tgsr": "TGSR: text attention, coarse-to-fine (Ma et al. 2022)",
    "clipsr": "CLIP-SR: TIFBlock fusion, prompt predictor, CLIP-ViT, iterative refinement (Hu et al. 2024)",
    "pdn": "PDN: prompt-guided Dynamic Correlation Modules (EDSR / RCAN backbone)",
}


@dataclass(frozen=True)
class MethodEntry:
    name: str
    model_class: type[TextSRModel]

    @property
    def config_class(self) -> type[ModelConfig]:
        return self.model_class.config_class

    @property
    def presets(self) -> list[str]:
        return list(self.config_class.PRESETS)


def available_methods() -> list[str]:
    return list(_REGISTRY)


def get_model_class(method: str) -> type[TextSRModel]:
    method = method.lower()
    if method not in _REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose from {available_methods()}")
    module_name, class_name = _REGISTRY[method].split(":")
    return getattr(importlib.import_module(module_name), class_name)


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
