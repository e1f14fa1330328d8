"""Model lookup and loading: what a model spec means, which models are bundled, which is the default.

A *model spec* is the string every entry point takes (``load_model``, ``textsr
upscale --model``, the widgets' model picker); :class:`ModelSpec` is its parsed,
typed form:

* ``default``: the bundled model for the asked scale (:func:`pick_default`);
* the name of a bundled model (``napari_textsr/weights/<name>.textsr.safetensors``,
  see :func:`list_models`);
* a path to a ``.textsr.safetensors`` checkpoint;
* ``random:<method>[:<scale>[:<preset>]]``: an untrained model with the
  ``textsr-tiny:none`` encoder (tests, demos of the plumbing, benchmarks).

:func:`load` turns a spec into a model, its prompt encoder and a
:class:`ModelDescription`; :func:`napari_textsr.load_model` wraps that into an
:class:`~napari_textsr.inference.Upscaler`. A spec that names no model raises
:class:`ModelSpecError` (a ``ValueError``); a checkpoint path that does not
exist raises ``FileNotFoundError``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from napari_textsr._assets import WEIGHTS_DIR
from napari_textsr.checkpoints import SUFFIX, CheckpointError, TrainingRecord, load_checkpoint, read_metadata
from napari_textsr.devices import select_device
from napari_textsr.methods import default_preference
from napari_textsr.models import TextSRModel, TilingInfo, available_methods, create_model, get_model_class
from napari_textsr.prompts import PromptEncoder

__all__ = [
    "DEFAULT_SCALE",
    "WEIGHTS_DIR",
    "BundledModel",
    "LoadedModel",
    "ModelDescription",
    "ModelSpec",
    "ModelSpecError",
    "default_for_input",
    "describe_model",
    "list_models",
    "load",
    "pick_default",
]

RANDOM_ENCODER_SPEC = "textsr-tiny:none"
DEFAULT_SCALE = 4
_RANDOM_USAGE = "expected 'random:<method>[:<scale>[:<preset>]]', e.g. 'random:pdn:4:tiny'"


class ModelSpecError(ValueError):
    """A model spec that names no model: bad ``random:`` syntax, an unknown method,
    an unknown bundled name, or no bundled model for the asked scale. The message
    lists what is available."""


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (see the module docstring); ``str(spec)`` gives the text back.

    kind: ``default``, ``bundled``, ``file`` or ``random``.
    name: the bundled model's name, or the checkpoint path as given (``file``).
    method, scale, preset: for ``random`` only; ``scale`` None means the scale
        asked at load time, else :data:`DEFAULT_SCALE`.
    """

    kind: str
    name: str = ""
    method: str = ""
    scale: int | None = None
    preset: str = "default"

    KINDS: ClassVar[tuple[str, ...]] = ("default", "bundled", "file", "random")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ModelSpecError(f"unknown model spec kind {self.kind!r}; expected one of {self.KINDS}")
        if self.kind == "random":
            if self.method not in available_methods():
                raise ModelSpecError(
                    f"unknown method {self.method!r} in {str(self)!r}; choose from {available_methods()}"
                )
            if self.scale is not None and (isinstance(self.scale, bool) or not isinstance(self.scale, int)):
                raise ModelSpecError(f"scale must be an int or None, got {self.scale!r}")
        elif self.kind in ("bundled", "file") and not self.name:
            raise ModelSpecError(f"a {self.kind} model spec needs a name")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def parse(cls, spec: str | os.PathLike | ModelSpec) -> ModelSpec:
        """The spec a string (or path) means. ModelSpecError for malformed ``random:`` specs.

        A string is a file when it is an existing file, ends in ``.safetensors``
        or contains a path separator; otherwise it is a bundled model's name
        (whether that name exists is checked at load time).
        """
        if isinstance(spec, ModelSpec):
            return spec
        text = os.fspath(spec)
        if not isinstance(text, str):
            raise ModelSpecError(f"a model spec is a string or a path, got {spec!r}")
        text = text.strip()
        if not text:
            raise ModelSpecError(
                "empty model spec; use 'default', a bundled model's name, a checkpoint path or 'random:...'"
            )
        if text == "default":
            return cls("default")
        if text.startswith("random:"):
            return cls._parse_random(text)
        if Path(text).expanduser().is_file() or _looks_like_path(text):
            return cls("file", name=text)
        return cls("bundled", name=text)

    @classmethod
    def _parse_random(cls, text: str) -> ModelSpec:
        parts = text.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[1]:
            raise ModelSpecError(f"bad model spec {text!r}: {_RANDOM_USAGE}")
        method = parts[1].lower()
        if method not in available_methods():
            raise ModelSpecError(f"unknown method {method!r} in {text!r}; choose from {available_methods()}")
        scale = None
        if len(parts) >= 3 and parts[2]:
            try:
                scale = int(parts[2].lstrip("x"))
            except ValueError:
                raise ModelSpecError(f"bad scale {parts[2]!r} in {text!r}: {_RANDOM_USAGE}") from None
        preset = parts[3] if len(parts) == 4 and parts[3] else "default"
        return cls("random", method=method, scale=scale, preset=preset)

    @classmethod
    def random(cls, method: str, scale: int | None = None, preset: str = "default") -> ModelSpec:
        """An untrained model of ``method`` (ModelSpecError for an unknown method)."""
        return cls("random", method=method.lower(), scale=scale, preset=preset)

    # ------------------------------------------------------------------ views
    @property
    def path(self) -> Path | None:
        """The checkpoint path of a ``file`` spec (user home expanded), else None."""
        return Path(self.name).expanduser() if self.kind == "file" else None

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        if self.kind == "random":
            text = f"random:{self.method}"
            if self.scale is not None or self.preset != "default":
                text += f":{self.scale if self.scale is not None else ''}"
            if self.preset != "default":
                text += f":{self.preset}"
            return text
        return self.name


def _looks_like_path(text: str) -> bool:
    return text.endswith(".safetensors") or os.sep in text or "/" in text


# --------------------------------------------------------------------------- bundled models
@dataclass(frozen=True)
class BundledModel:
    """A checkpoint shipped in ``napari_textsr/weights/`` (read from its header only)."""

    name: str
    path: Path
    method: str
    scale: int
    encoder: str
    description: str = ""
    created: str = ""
    training: TrainingRecord | None = None

    @property
    def for_jpeg_inputs(self) -> bool:
        """Trained for JPEG-compressed inputs: its newest training stage drew JPEG in every sample (``p_jpeg`` 1).

        Such a model is not the ``default`` for other inputs; it is the default
        for inputs that show heavy JPEG compression (:func:`default_for_input`).
        """
        degradation = self.training.degradation if self.training is not None else {}
        return degradation.get("kind") == "family" and float(degradation.get("p_jpeg", 0.0)) >= 1.0

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["path"] = str(self.path)
        values["for_jpeg_inputs"] = self.for_jpeg_inputs
        return values


def list_models(directory: str | os.PathLike | None = None) -> list[BundledModel]:
    """Bundled models (``*.textsr.safetensors`` in :data:`WEIGHTS_DIR`), by scale then name.

    Only headers are read, so this is fast. A file that is not a readable
    checkpoint is skipped with a warning.
    """
    folder = Path(directory) if directory is not None else WEIGHTS_DIR
    models = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            meta = read_metadata(path)
        except (CheckpointError, ValueError, KeyError, TypeError) as error:
            warnings.warn(f"skipping unreadable bundled model {path.name}: {error}", stacklevel=2)
            continue
        models.append(
            BundledModel(
                name=path.name[: -len(SUFFIX)],
                path=path,
                method=meta.method,
                scale=meta.scale,
                encoder=meta.encoder_spec,
                description=meta.description or meta.name,
                created=meta.created,
                training=meta.training,
            )
        )
    return sorted(models, key=lambda m: (m.scale, m.name))


def pick_default(
    scale: int | None = None, models: list[BundledModel] | None = None, *, jpeg: bool = False
) -> BundledModel:
    """The bundled model ``default`` means at ``scale`` (None: :data:`DEFAULT_SCALE`).

    Order: a model named ``default*`` first, then the method preference at
    that scale (the method table's ranks, :func:`napari_textsr.methods.default_preference`),
    then the name. Models trained for JPEG inputs only
    (:attr:`BundledModel.for_jpeg_inputs`) are left out, unless ``jpeg``:
    then they come first (and the general default is the fallback).
    ModelSpecError when no bundled model has that scale.
    """
    models = list_models() if models is None else models
    wanted = scale if scale is not None else DEFAULT_SCALE
    at_scale = [m for m in models if m.scale == wanted]
    specialists = [m for m in at_scale if m.for_jpeg_inputs]
    candidates = specialists if jpeg and specialists else [m for m in at_scale if not m.for_jpeg_inputs]
    if not candidates:
        raise ModelSpecError(f"no bundled model for x{wanted}. {bundled_summary(models)}")
    order = default_preference(wanted)

    def preference(model: BundledModel) -> tuple[int, int, str]:
        method_rank = order.index(model.method) if model.method in order else len(order)
        return (0 if model.name.startswith("default") else 1, method_rank, model.name)

    return min(candidates, key=preference)


def default_for_input(
    spec: str | os.PathLike | ModelSpec, scale: int | None, jpeg_quality: int | None
) -> str | os.PathLike | ModelSpec:
    """The model spec to use for one input: ``spec``, or the JPEG default for a heavily compressed input.

    When ``spec`` names the default at ``scale`` (``"default"``, or the
    general default's own name) and the input went through JPEG compression
    of quality ``jpeg_quality`` <= :data:`~napari_textsr.training.captions.FILE_WORDS_MAX_JPEG_QUALITY`
    (the level at which the caption is given JPEG words too; from
    :func:`napari_textsr.imageio.jpeg_evidence`), returns the name of the bundled
    model trained for such inputs at that scale, if there is one. Every
    other spec is returned unchanged: a model chosen by name or path is used
    as chosen. Reads bundled headers only.
    """
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY

    if jpeg_quality is None or jpeg_quality > FILE_WORDS_MAX_JPEG_QUALITY:
        return spec
    try:
        parsed = ModelSpec.parse(spec)
        models = list_models()
        if parsed.kind == "bundled":
            named = [m for m in models if m.name == parsed.name]
            if not named or (scale is not None and named[0].scale != scale):
                return spec
            scale = named[0].scale
            if pick_default(scale, models).name != parsed.name:
                return spec
        elif parsed.kind != "default":
            return spec
        jpeg = pick_default(scale, models, jpeg=True)
        return jpeg.name if jpeg.for_jpeg_inputs else spec
    except ModelSpecError:  # loading the spec says what is wrong with it
        return spec


def bundled_summary(models: list[BundledModel] | None = None) -> str:
    """One paragraph naming the bundled models and the other ways to name a model (for error messages)."""
    models = list_models() if models is None else models
    if models:
        listing = ", ".join(f"{m.name} ({m.method}, x{m.scale})" for m in models)
        have = f"Bundled models: {listing}."
    else:
        have = f"No models are bundled (none in {WEIGHTS_DIR})."
    return (
        f"{have} Load a checkpoint by path (e.g. one written by `textsr train`), "
        "or use 'random:<method>:<scale>[:<preset>]' for an untrained model."
    )


def resolve_checkpoint(spec: ModelSpec, scale: int | None = None) -> tuple[Path, str]:
    """(checkpoint path, source description) of a ``default``, ``bundled`` or ``file`` spec.

    FileNotFoundError for a missing file; ModelSpecError for an unknown bundled
    name or no bundled model at ``scale``.
    """
    if spec.kind == "default":
        bundled = pick_default(scale)
        return bundled.path, f"bundled:{bundled.name}"
    if spec.kind == "file":
        path = spec.path
        assert path is not None  # a file spec always has one
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return path, str(path)
    if spec.kind == "bundled":
        models = list_models()
        for bundled in models:
            if bundled.name == spec.name:
                return bundled.path, f"bundled:{bundled.name}"
        raise ModelSpecError(
            f"no model {spec.name!r}: it is not a file and not a bundled model. {bundled_summary(models)}"
        )
    raise ModelSpecError(f"a {spec.kind} spec has no checkpoint file")


# --------------------------------------------------------------------------- descriptions
@dataclass
class ModelDescription:
    """Everything worth knowing about a loaded model (spandrel-style); ``textsr info`` prints it.

    ``source`` says where it came from (a checkpoint path, ``bundled:<name>``,
    ``random`` for an untrained model, ``memory``); ``preset`` is the size preset
    its config matches, if any. ``parameters`` counts the SR model's parameters
    (not the prompt encoder's, which is ``encoder_parameters``).
    """

    name: str
    method: str
    scale: int
    preset: str | None
    config: dict[str, Any]
    encoder: str
    trained: bool
    tiling: TilingInfo
    device: str
    parameters: int
    training: TrainingRecord | None = None
    source: str = ""
    description: str = ""
    half: bool = False
    encoder_parameters: int = 0
    self_ensemble: bool = False  # outputs averaged over 8 rotations/mirrors (Upscaler's self_ensemble)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        values = dataclasses.asdict(self)
        values["tiling"] = dataclasses.asdict(self.tiling)
        values["training"] = dataclasses.asdict(self.training) if self.training is not None else None
        return values


def infer_preset(model: TextSRModel) -> str | None:
    """The preset whose config (apart from scale, prompt width, channels, fusion) equals the model's."""
    config = model.config.to_dict()
    ignore = {"scale", "prompt_dim", "in_channels", "text_fusion"}
    for preset in model.config_class.PRESETS:
        try:
            candidate = model.config_class.from_preset(
                preset, **{k: config[k] for k in ignore if k in config}
            ).to_dict()
        except (TypeError, ValueError):
            continue
        if candidate == config:
            return preset
    return None


def describe_model(
    model: TextSRModel,
    encoder: PromptEncoder,
    device: torch.device,
    *,
    name: str,
    trained: bool,
    half: bool = False,
    training: TrainingRecord | None = None,
    source: str = "",
    description: str = "",
    preset: str | None = None,
) -> ModelDescription:
    """A :class:`ModelDescription` of ``model`` with ``encoder`` on ``device`` (preset inferred when None)."""
    return ModelDescription(
        name=name,
        method=model.method,
        scale=model.scale,
        preset=preset if preset is not None else infer_preset(model),
        config=model.config.to_dict(),
        encoder=str(encoder.spec),
        trained=trained,
        tiling=model.tiling_info(),
        device=str(device),
        parameters=sum(p.numel() for p in model.parameters()),
        training=training,
        source=source,
        description=description,
        half=half,
        encoder_parameters=sum(p.numel() for p in encoder.parameters()),
    )


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """What :func:`load` returns: the SR model and its prompt encoder on ``device``, and their description."""

    model: TextSRModel
    encoder: PromptEncoder
    description: ModelDescription
    device: torch.device


def load(
    spec: str | os.PathLike | ModelSpec = "default",
    *,
    scale: int | None = None,
    device: str | torch.device = "auto",
    encoder: PromptEncoder | None = None,
) -> LoadedModel:
    """Load the model ``spec`` names (see the module docstring) and its prompt encoder.

    scale: required scale; a model of another scale is refused (ValueError).
    encoder: a prompt encoder to use instead of the checkpoint's own (it must
      be the one the model was trained with; refused otherwise).
    Raises ModelSpecError (unknown name or method, malformed ``random:``),
    FileNotFoundError (missing checkpoint), CheckpointError (unreadable file).
    """
    torch_device = device if isinstance(device, torch.device) else select_device(device)
    parsed = ModelSpec.parse(spec)
    if parsed.kind == "random":
        return _load_random(parsed, scale, torch_device, encoder)
    path, source = resolve_checkpoint(parsed, scale)
    loaded = load_checkpoint(path, encoder=encoder, device=torch_device)
    meta = loaded.metadata
    if scale is not None and meta.scale != scale:
        raise ValueError(f"{path.name} is a x{meta.scale} model, but scale={scale} was asked for")
    file_name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    description = describe_model(
        loaded.model,
        loaded.encoder,
        torch_device,
        name=meta.name or file_name,
        trained=meta.training is not None,
        training=meta.training,
        source=source,
        description=meta.description,
    )
    return LoadedModel(loaded.model, loaded.encoder, description, torch_device)


def _load_random(
    spec: ModelSpec, scale: int | None, device: torch.device, encoder: PromptEncoder | None
) -> LoadedModel:
    if spec.scale is not None and scale is not None and spec.scale != scale:
        raise ValueError(f"{str(spec)!r} is a x{spec.scale} model, but scale={scale} was asked for")
    model_scale = spec.scale or scale or DEFAULT_SCALE
    if encoder is None:
        encoder = PromptEncoder.from_spec(RANDOM_ENCODER_SPEC, device=device)
    get_model_class(spec.method)  # a clear error for a method whose module is missing
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # same spec, same untrained weights
        model = create_model(spec.method, model_scale, spec.preset, prompt_dim=encoder.embed_dim)
    description = describe_model(
        model,
        encoder,
        device,
        name=f"random:{spec.method}:{model_scale}:{spec.preset}",
        trained=False,
        source="random",
        description="untrained (random weights): for tests, demos of the plumbing and benchmarks",
        preset=spec.preset,
    )
    return LoadedModel(model, encoder, description, device)
