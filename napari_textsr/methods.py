"""The method table: everything the package knows about a super-resolution method, in one entry.

One :class:`MethodEntry` per method carries its model class (which names its
config class and size presets), its loss weights (the paper's defaults) and the
criterion that turns them into losses, its display title, a one-line
description and its rank when ``load_model("default")`` picks among bundled
models. Everything else is derived from :data:`METHODS`:

* the model registry (:func:`napari_textsr.models.available_methods`,
  :func:`~napari_textsr.models.get_model_class`, ``create_model``);
* the training losses (:func:`napari_textsr.training.losses.default_loss_weights`,
  :func:`~napari_textsr.training.losses.build_criterion`);
* the command line's ``--method`` choices and the benchmarks' method lists;
* the widgets' method names (:func:`method_title`);
* the default preference order (:func:`default_preference`).

Classes are named by import path (``"module:Name"``) and imported on first use,
so reading the table imports neither torch nor any method's code. Adding a
method is one new module plus one entry here (``docs/adding-a-method.md``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from napari_textsr.models.base import ModelConfig, TextSRModel
    from napari_textsr.training.losses import LossWeights, SRCriterion

__all__ = [
    "METHODS",
    "MethodEntry",
    "UnknownMethodError",
    "default_preference",
    "get_method",
    "method_names",
    "method_title",
]


class UnknownMethodError(ValueError):
    """A method name that is not in :data:`METHODS` (the message lists the known ones)."""


def _load(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class MethodEntry:
    """One super-resolution method.

    name: the key used everywhere (checkpoints, specs, ``--method``): lower case.
    title: the short display name ("PDN").
    description: one line naming the idea and the paper followed.
    model: ``"module:Class"`` of the :class:`~napari_textsr.models.TextSRModel`
        subclass; its ``config_class`` is the config dataclass with the presets.
    loss_weights: ``"module:Class"`` of the method's
        :class:`~napari_textsr.training.losses.LossWeights` (paper defaults).
    criterion: ``"module:Class"`` of its
        :class:`~napari_textsr.training.losses.SRCriterion`; built with
        ``Criterion.build(weights, encoder, scale)``.
    default_rank: order in which ``load_model("default")`` prefers a bundled
        model of this method (0 first); ``default_rank_by_scale`` overrides it
        at given scales (where another method measured better).
    """

    name: str
    title: str
    description: str
    model: str
    loss_weights: str
    criterion: str
    default_rank: int
    default_rank_by_scale: Mapping[int, int] = field(default_factory=dict)

    def model_class(self) -> type[TextSRModel]:
        """The model class (imports the method's module)."""
        return _load(self.model)

    def config_class(self) -> type[ModelConfig]:
        """The config dataclass (``model_class().config_class``)."""
        return self.model_class().config_class

    def presets(self) -> list[str]:
        """Names of the config's size presets (``tiny`` ... ``paper``)."""
        return list(self.config_class().PRESETS)

    def loss_weights_class(self) -> type[LossWeights]:
        """The loss-weights dataclass (imports the training losses)."""
        return _load(self.loss_weights)

    def criterion_class(self) -> type[SRCriterion]:
        """The criterion class (imports the training losses)."""
        return _load(self.criterion)

    def rank(self, scale: int | None = None) -> int:
        """Preference rank for the default model at ``scale`` (lower is preferred)."""
        return self.default_rank_by_scale.get(scale, self.default_rank) if scale is not None else self.default_rank


_LOSSES = "napari_textsr.training.losses"

# In the order the CLI and the widgets list them.
METHODS: Mapping[str, MethodEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            MethodEntry(
                name="tgsr",
                title="TGSR",
                description="TGSR: text attention, coarse-to-fine (Ma et al. 2022)",
                model="napari_textsr.models.tgsr:TGSR",
                loss_weights=f"{_LOSSES}:TGSRLossWeights",
                criterion=f"{_LOSSES}:TGSRCriterion",
                # The bundled TGSR x8 knows antialiased bicubic only; the bundled PDNs, trained on
                # the realistic degradation family, measured better on held-out photographs made
                # small the six ways of `textsr bench --degradation all` (README, "Bundled models").
                default_rank=1,
            ),
            MethodEntry(
                name="clipsr",
                title="CLIP-SR",
                description="CLIP-SR: TIFBlock fusion, prompt predictor, CLIP-ViT, iterative refinement (Hu et al. 2024)",
                model="napari_textsr.models.clipsr:CLIPSR",
                loss_weights=f"{_LOSSES}:CLIPSRLossWeights",
                criterion=f"{_LOSSES}:CLIPSRCriterion",
                default_rank=2,
            ),
            MethodEntry(
                name="pdn",
                title="PDN",
                description="PDN: prompt-guided Dynamic Correlation Modules (EDSR / RCAN backbone)",
                model="napari_textsr.models.pdn:PDN",
                loss_weights=f"{_LOSSES}:PDNLossWeights",
                criterion=f"{_LOSSES}:PDNCriterion",
                # PDN tiles exactly and is the fastest; first wherever no other measured better.
                default_rank=0,
            ),
        )
    }
)


def method_names() -> tuple[str, ...]:
    """Every method's name, in table order (``("tgsr", "clipsr", "pdn")``)."""
    return tuple(METHODS)


def get_method(name: str) -> MethodEntry:
    """The table entry of ``name`` (case-insensitive); UnknownMethodError otherwise."""
    try:
        return METHODS[name.lower()]
    except (KeyError, AttributeError):
        raise UnknownMethodError(f"unknown method {name!r}; choose from {list(METHODS)}") from None


def method_title(name: str) -> str:
    """Display name of a method ("pdn" -> "PDN"); an unknown name is shown as it is."""
    entry = METHODS.get(name.lower()) if isinstance(name, str) else None
    return entry.title if entry is not None else str(name)


def default_preference(scale: int | None = None) -> tuple[str, ...]:
    """Method names in the order ``load_model("default")`` prefers them at ``scale``."""
    return tuple(sorted(METHODS, key=lambda name: (METHODS[name].rank(scale), name)))
