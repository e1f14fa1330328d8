"""One-file checkpoints: safetensors weights plus JSON metadata in the header.

A checkpoint holds the SR model's weights (``model.*``), the method, its config
and scale, exactly which prompt encoder it was trained with, and the encoder's
own weights (``encoder.*``) when they cannot be fetched by name (random init or
a local file). Loading verifies a checksum over all tensors, so a truncated or
corrupt file is refused, and refuses an encoder that is not the one recorded.

A checkpoint is untrusted input (see SECURITY.md). Before any tensor is read,
:func:`load_checkpoint` validates the JSON header against a typed schema
(:class:`CheckpointError` naming the field), checks that the header's scale is
the config's, builds the described model on the ``meta`` device (no memory)
and compares its tensor shapes with the shapes the safetensors header stores,
so a header that describes a 14 GB model in a 6 MB file is refused at once.
Encoder specs in a header may name only weights inside the file, bundled
weights inside the package's ``weights`` folder, or a public open_clip tag,
which is downloaded only when the caller allows it. Weights with NaN or Inf
are refused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import struct
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_textsr.durable import atomic_write
from napari_textsr.models import (
    SUPPORTED_SCALES,
    TextSRModel,
    available_methods,
    get_model_class,
    model_from_config,
)
from napari_textsr.prompts import EncoderIdentity, EncoderSpec, PromptEncoder

__all__ = [
    "CheckpointError",
    "EncoderMismatchError",
    "CheckpointMetadata",
    "TrainingRecord",
    "training_stages",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
]

FORMAT_NAME = "napari-textsr"
FORMAT_VERSION = 1
SUFFIX = ".textsr.safetensors"


class CheckpointError(ValueError):
    """A file is not a usable napari-textsr checkpoint."""


class EncoderMismatchError(CheckpointError):
    """The prompt encoder offered is not the one the model was trained with."""


@dataclass
class TrainingRecord:
    """How a checkpoint was made, so anyone can make it again.

    ``command``: the exact command line; ``data``: dataset descriptions (folders,
    synthetic generator and seed); ``degradation``: the LR degradation settings;
    ``validation``: metric name -> value on the held-out split (e.g.
    ``psnr_y``, ``psnr_bicubic_y``); ``extra``: anything else worth keeping.
    """

    command: str = ""
    data: list[str] = field(default_factory=list)
    degradation: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    validation: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def stages(self) -> list[dict[str, Any]]:
        """Every training stage of the model, newest first: this run, then the runs it was fine-tuned from.

        Each stage is a plain dict of a record's fields whose ``extra`` holds no
        earlier stages. Earlier stages are kept flat in ``extra["earlier_stages"]``
        (newest first); checkpoints written before that nested each one in the
        next one's ``extra["init_training"]``, and both are read.
        """
        return training_stages(dataclasses.asdict(self))


_HISTORY_KEYS = ("earlier_stages", "init_training")


def training_stages(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """:meth:`TrainingRecord.stages` of a record given as a dict (``dataclasses.asdict``); ``[]`` for None."""
    stages: list[dict[str, Any]] = []
    while record:
        extra = dict(record.get("extra") or {})
        earlier, nested = extra.get("earlier_stages"), extra.get("init_training")
        for key in _HISTORY_KEYS:
            extra.pop(key, None)
        stages.append({**record, "extra": extra})
        if earlier:
            stages.extend(training_stages(stage)[0] for stage in earlier)
            break
        record = nested
    return stages


@dataclass
class CheckpointMetadata:
    method: str
    scale: int
    config: dict[str, Any]
    encoder_spec: str
    encoder: EncoderIdentity
    name: str = ""
    description: str = ""
    software_version: str = ""
    created: str = ""
    training: TrainingRecord | None = None

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["encoder"] = self.encoder.to_dict()
        return json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, **values})

    @classmethod
    def from_json(cls, text: str) -> "CheckpointMetadata":
        """Parse and validate header metadata; :class:`CheckpointError` names the first bad field."""
        return _parse_metadata(text)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``textsr info`` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "method": self.method,
            "scale": self.scale,
            "config": self.config,
            "encoder": self.encoder_spec,
            "encoder_identity": self.encoder.to_dict(),
            "software_version": self.software_version,
            "created": self.created,
            "training": dataclasses.asdict(self.training) if self.training else None,
        }


@dataclass
class LoadedCheckpoint:
    model: TextSRModel
    encoder: PromptEncoder
    metadata: CheckpointMetadata
    path: Path


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(name.encode())
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _embeds_encoder(spec: EncoderSpec) -> bool:
    # Tags are downloadable and bundled weights ship with the package; everything
    # else would be lost if the checkpoint did not carry it.
    return spec.kind in ("random", "file")


def save_checkpoint(
    path: str | os.PathLike,
    model: TextSRModel,
    encoder: PromptEncoder,
    *,
    name: str = "",
    description: str = "",
    training: TrainingRecord | None = None,
    half_encoder: bool = False,
) -> Path:
    """Write ``model`` and its encoder identity (and weights if needed) to one file.

    The write goes through :func:`napari_textsr.durable.atomic_write` (a
    unique temporary file, fsync, rename), so an interrupted save or a full
    disk never leaves a broken checkpoint where a good one was.
    """
    from safetensors.torch import save_file

    from napari_textsr._version import __version__

    if model.config.prompt_dim != encoder.embed_dim:
        raise CheckpointError(
            f"model expects prompt_dim={model.config.prompt_dim} but the encoder gives {encoder.embed_dim}"
        )
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    if _embeds_encoder(encoder.spec):
        dtype = torch.float16 if half_encoder else None
        for k, v in encoder.clip.state_dict().items():
            v = v.detach().cpu()
            tensors[f"encoder.{k}"] = (
                (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().clone()
            )
    metadata = CheckpointMetadata(
        method=model.method,
        scale=model.config.scale,
        config=model.config.to_dict(),
        encoder_spec=str(encoder.spec),
        encoder=encoder.identity(),
        name=name,
        description=description,
        software_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        training=training,
    )
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"textsr": metadata.to_json(), "sha256": _checksum(tensors)})
    return path


def read_metadata(path: str | os.PathLike) -> CheckpointMetadata:
    """Read only the header (fast; no weights loaded), validated like :func:`load_checkpoint` does.

    Raises :class:`CheckpointError` for a missing, foreign or malformed file.
    """
    path = Path(path)
    header = _read_header(path)
    return _metadata_of(path, header)


# ------------------------------------------------------------------ limits
# A valid header is a few kB; these bounds keep a crafted one cheap to refuse.
MAX_HEADER_BYTES = 16 * 1024 * 1024  # the whole safetensors JSON header
MAX_METADATA_CHARS = 1024 * 1024  # the napari-textsr JSON inside it
MAX_JSON_DEPTH = 8  # nesting of the free-form parts (training.degradation, training.extra)
MAX_STRING_CHARS = 64 * 1024
MAX_CONFIG_INT = 1 << 16  # any integer of a model config (widths, block counts)


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path``: ``{"metadata": {str: str}, "tensors": {name: (dtype, shape)}}``.

    Reads the 8-byte length prefix first and refuses a header larger than
    :data:`MAX_HEADER_BYTES` (or than the file) before parsing anything; the
    tensor table comes from safetensors itself (memory-mapped, nothing loaded).
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {size} bytes")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_HEADER_BYTES or header_len > size - 8:
        raise CheckpointError(
            f"{path} is not a readable checkpoint: its header claims {header_len} bytes "
            f"(file {size} bytes, limit {MAX_HEADER_BYTES})"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {}
            for name in handle.keys():
                view = handle.get_slice(name)
                tensors[name] = (view.get_dtype(), tuple(int(n) for n in view.get_shape()))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from error
    if "textsr" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a napari-textsr checkpoint")
    return {"metadata": metadata, "tensors": tensors}


# ------------------------------------------------------------------ schema
def _fail(field_name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint header field '{field_name}' {problem}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(
    values: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    *,
    required: bool = True,
    default: Any = None,
) -> Any:
    """``values[key]`` if it is of JSON type ``kind`` (bool is not an int; an int is a float)."""
    name = f"{where}{key}"
    if key not in values:
        if required:
            raise _fail(name, "is missing")
        return default
    value = values[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = any(_is_json_type(value, k) for k in kinds)
    if not ok:
        wanted = " or ".join("number" if k is float else k.__name__ for k in kinds)
        raise _fail(name, f"must be {wanted}, got {_type_name(value)} {_short(value)}")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise _fail(name, f"is a string of {len(value)} characters (limit {MAX_STRING_CHARS})")
    return float(value) if kinds == (float,) else value


def _is_json_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _no_unknown(values: dict[str, Any], known: set[str] | typing.Iterable[str], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise _fail(f"{where}{unknown[0]}", f"is not a known field (known: {', '.join(sorted(known))})")


def _free_json(value: Any, name: str, depth: int = 0) -> None:
    """A free-form JSON value (training notes): bounded nesting and string lengths."""
    if depth > MAX_JSON_DEPTH:
        raise _fail(name, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _free_json(item, f"{name}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _free_json(item, f"{name}[{index}]", depth + 1)
    elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise _fail(name, f"is a string of {len(value)} characters (limit {MAX_STRING_CHARS})")


def _parse_metadata(text: str) -> CheckpointMetadata:
    """The typed schema of a checkpoint header: every field's JSON type, no unknown keys, bounded nesting."""
    if len(text) > MAX_METADATA_CHARS:
        raise CheckpointError(f"checkpoint metadata is {len(text)} characters (limit {MAX_METADATA_CHARS})")
    try:
        values = json.loads(text)
    except RecursionError:
        raise CheckpointError("checkpoint metadata is nested too deeply to be napari-textsr's") from None
    except ValueError as error:
        raise CheckpointError(f"checkpoint metadata is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"checkpoint metadata must be a JSON object, got {_type_name(values)}")
    if values.get("format") != FORMAT_NAME:
        raise _fail("format", f"must be {FORMAT_NAME!r}: the metadata does not come from napari-textsr")
    version = values.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _fail("version", f"is {_short(version)}: checkpoint format version {FORMAT_VERSION} is expected")
    known = {f.name for f in dataclasses.fields(CheckpointMetadata)} | {"format", "version"}
    _no_unknown(values, known, "")

    method = _expect(values, "method", str, "")
    if method not in available_methods():
        raise _fail("method", f"is {method!r}; expected one of {available_methods()}")
    scale = _expect(values, "scale", int, "")
    if scale not in SUPPORTED_SCALES:
        raise _fail("scale", f"is {scale}; expected one of {SUPPORTED_SCALES}")
    config = _validate_model_config(method, _expect(values, "config", dict, ""))
    if config.get("scale", get_model_class(method).config_class.scale) != scale:
        raise _fail("scale", f"is {scale} but the model config says scale {config.get('scale')}")
    encoder_spec = _expect(values, "encoder_spec", str, "")
    try:
        EncoderSpec.parse(encoder_spec)
    except ValueError as error:
        raise _fail("encoder_spec", str(error)) from None
    encoder = _parse_identity(_expect(values, "encoder", dict, ""))
    if encoder.embed_dim != config.get("prompt_dim", get_model_class(method).config_class.prompt_dim):
        raise _fail(
            "encoder.embed_dim",
            f"is {encoder.embed_dim} but the model config's prompt_dim is {config.get('prompt_dim')}",
        )
    strings = {
        k: _expect(values, k, str, "", required=False, default="")
        for k in ("name", "description", "software_version", "created")
    }
    training_values = _expect(values, "training", (dict, type(None)), "", required=False)
    training = _parse_training(training_values) if training_values is not None else None
    return CheckpointMetadata(
        method=method,
        scale=scale,
        config=config,
        encoder_spec=encoder_spec,
        encoder=encoder,
        training=training,
        **strings,
    )


def _validate_model_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Each key a field of the method's config dataclass, each value of that field's type and bounded."""
    config_class = get_model_class(method).config_class
    hints = {k: v for k, v in typing.get_type_hints(config_class).items() if k != "PRESETS"}
    _no_unknown(config, hints, "config.")
    for key, value in config.items():
        kind = hints[key]
        if kind not in (int, float, bool, str):  # pragma: no cover - every config field today is one of these
            raise _fail(f"config.{key}", f"has an unsupported type {kind}")
        value = _expect(config, key, kind, "config.")
        if kind is float and not math.isfinite(value):
            raise _fail(f"config.{key}", f"must be finite, got {value}")
        if kind is int and not -MAX_CONFIG_INT <= value <= MAX_CONFIG_INT:
            raise _fail(f"config.{key}", f"is {value}, outside [-{MAX_CONFIG_INT}, {MAX_CONFIG_INT}]")
        if kind is str and len(value) > 64:
            raise _fail(f"config.{key}", f"is a string of {len(value)} characters")
        config[key] = value
    return config


def _parse_identity(values: dict[str, Any]) -> EncoderIdentity:
    where = "encoder."
    _no_unknown(values, {"arch", "source", "pretrained", "embed_dim", "fingerprint"}, where)
    source = _expect(values, "source", str, where)
    if source not in ("random", "bundled", "tag", "file"):
        raise _fail("encoder.source", f"is {source!r}; expected random, bundled, tag or file")
    embed_dim = _expect(values, "embed_dim", int, where)
    if not 0 < embed_dim <= MAX_CONFIG_INT:
        raise _fail("encoder.embed_dim", f"is {embed_dim}; expected a positive width")
    return EncoderIdentity(
        arch=_expect(values, "arch", str, where),
        source=source,
        pretrained=_expect(values, "pretrained", str, where),
        embed_dim=embed_dim,
        fingerprint=_expect(values, "fingerprint", str, where),
    )


def _parse_training(values: dict[str, Any]) -> TrainingRecord:
    where = "training."
    _no_unknown(values, {f.name for f in dataclasses.fields(TrainingRecord)}, where)
    data = _expect(values, "data", list, where, required=False, default=[])
    for index, item in enumerate(data):
        if not isinstance(item, str) or len(item) > MAX_STRING_CHARS:
            raise _fail(f"training.data[{index}]", f"must be a string, got {_type_name(item)} {_short(item)}")
    validation = _expect(values, "validation", dict, where, required=False, default={})
    for key in list(validation):
        validation[key] = _expect(validation, key, float, "training.validation.")
    steps = _expect(values, "steps", int, where, required=False, default=0)
    if steps < 0:
        raise _fail("training.steps", f"is {steps}; expected a count >= 0")
    degradation = _expect(values, "degradation", dict, where, required=False, default={})
    extra = _expect(values, "extra", dict, where, required=False, default={})
    _free_json(degradation, "training.degradation", 1)
    _free_json(extra, "training.extra", 1)
    return TrainingRecord(
        command=_expect(values, "command", str, where, required=False, default=""),
        data=list(data),
        degradation=degradation,
        steps=steps,
        validation=validation,
        extra=extra,
    )


def _metadata_of(path: Path, header: dict[str, Any]) -> CheckpointMetadata:
    try:
        return _parse_metadata(header["metadata"]["textsr"])
    except CheckpointError as error:
        raise CheckpointError(f"{path.name}: {error}") from None


# ------------------------------------------------------------------ shapes
class _TooManyTensors(Exception):
    pass


def _meta_shapes(build: Callable[[], torch.nn.Module], budget: int) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the module ``build()`` makes, built on the ``meta`` device (no memory).

    Construction stops with :class:`_TooManyTensors` once it has registered
    more than ``budget`` parameters and buffers, so a config that asks for a
    million blocks costs no more than one that matches the file.
    """
    from torch.nn.modules import module as module_hooks

    owner, count = threading.get_ident(), 0

    def count_registration(module, name, tensor):
        nonlocal count
        if threading.get_ident() == owner:
            count += 1
            if count > budget:
                raise _TooManyTensors

    handles = [
        module_hooks.register_module_parameter_registration_hook(count_registration),
        module_hooks.register_module_buffer_registration_hook(count_registration),
    ]
    try:
        with torch.device("meta"):
            built = build()
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(t.shape) for name, t in built.state_dict().items()}


def _compare_shapes(
    path: Path, what: str, expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]]
) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if not (missing or unexpected or wrong):
        return
    details = []
    if wrong:
        k = wrong[0]
        details.append(
            f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k}: stored {list(stored[k])}, "
            f"the header's config gives {list(expected[k])}"
        )
    if missing:
        details.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
    raise CheckpointError(
        f"{path.name}: the stored {what} weights do not fit the header's description ({'; '.join(details)})"
    )


def _check_model_shapes(path: Path, metadata: CheckpointMetadata, stored: dict[str, tuple[int, ...]]) -> None:
    budget = 2 * len(stored) + 64
    try:
        expected = _meta_shapes(lambda: model_from_config(metadata.method, dict(metadata.config)), budget)
    except _TooManyTensors:
        raise CheckpointError(
            f"{path.name}: the header's {metadata.method} config describes a model with more tensors "
            f"than the {len(stored)} the file stores"
        ) from None
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError, AssertionError) as error:
        raise _fail("config", f"does not describe a valid {metadata.method} model: {error}") from None
    _compare_shapes(path, "model", expected, stored)


def _check_encoder_source(path: Path, metadata: CheckpointMetadata, stored: dict[str, tuple[int, ...]]) -> EncoderSpec:
    """Where the encoder's weights may come from: the file itself, the package, or a public tag.

    A header never makes the loader read another file on disk: ``file`` and
    ``random`` encoders must be embedded, ``bundled:`` names must resolve inside
    the package's weights folder, and a tag must be a public open_clip tag.
    """
    from napari_textsr.prompts import bundled_weights_path, is_known_architecture, is_public_tag

    spec = EncoderSpec.parse(metadata.encoder_spec)
    identity = metadata.encoder
    if spec.arch != identity.arch or spec.kind != identity.source:
        raise _fail("encoder", f"({identity.arch}, {identity.source}) does not agree with encoder_spec {str(spec)!r}")
    if not is_known_architecture(spec.arch):
        raise _fail("encoder_spec", f"names an unknown open_clip architecture {spec.arch!r}")
    if stored:
        budget = 2 * len(stored) + 64
        try:
            expected = _meta_shapes(lambda: _meta_open_clip(spec.arch), budget)
        except _TooManyTensors:
            raise CheckpointError(f"{path.name}: the embedded encoder weights do not fit {spec.arch}") from None
        _compare_shapes(path, f"{spec.arch} encoder", expected, stored)
        return spec
    if spec.kind in ("random", "file"):
        raise _fail(
            "encoder_spec",
            f"is {str(spec)!r}, but the file embeds no encoder weights: a checkpoint's encoder must be embedded, "
            "bundled with napari-textsr or a public open_clip tag (a header never points at other files)",
        )
    if spec.kind == "bundled":
        try:
            bundled_weights_path(spec)
        except ValueError as error:
            raise _fail("encoder_spec", str(error)) from None
    elif not is_public_tag(spec):
        raise _fail("encoder_spec", f"is {str(spec)!r}, which is not a public open_clip pretrained tag")
    return spec


def _meta_open_clip(arch: str) -> torch.nn.Module:
    from napari_textsr.prompts import register_encoder_configs

    register_encoder_configs()
    import open_clip

    from napari_textsr.prompts import _weights_loaded_afterwards

    with _weights_loaded_afterwards():
        return open_clip.create_model(arch, pretrained=None, device="meta")


# ------------------------------------------------------------------ loading
def load_checkpoint(
    path: str | os.PathLike,
    *,
    encoder: PromptEncoder | None = None,
    device: torch.device | str = "cpu",
    allow_download: bool = False,
) -> LoadedCheckpoint:
    """Load a model and its prompt encoder from an untrusted file.

    With ``encoder`` given, it must be the encoder the model was trained with
    (same architecture and tag, or same weights fingerprint); otherwise
    :class:`EncoderMismatchError` says what was expected. Without it, the
    encoder is rebuilt from the checkpoint: its embedded weights, the bundled
    weights, or a public pretrained tag from the local cache. A tag not yet
    cached is downloaded only with ``allow_download=True`` (the user asked for
    it); otherwise :class:`CheckpointError` says how to get it.

    Checks, in order, all before the weights are read: header size, the typed
    metadata schema, scale against config, the encoder's source, the stored
    tensor shapes against the model the header describes (built on ``meta``);
    then the checksum, finite weights, and the encoder identity.
    Raises :class:`CheckpointError` (a ValueError) for anything wrong.
    """
    from safetensors.torch import load_file

    path = Path(path)
    header = _read_header(path)
    metadata = _metadata_of(path, header)
    shapes = {name: shape for name, (_dtype, shape) in header["tensors"].items()}
    model_shapes = {k[6:]: v for k, v in shapes.items() if k.startswith("model.")}
    encoder_shapes = {k[8:]: v for k, v in shapes.items() if k.startswith("encoder.")}
    strays = sorted(k for k in shapes if not k.startswith(("model.", "encoder.")))
    if strays:
        raise CheckpointError(f"{path.name}: unexpected tensor {strays[0]!r} (expected model.* and encoder.* only)")
    _check_model_shapes(path, metadata, model_shapes)
    spec = _check_encoder_source(path, metadata, encoder_shapes)

    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path} could not be read (corrupt or truncated?): {error}") from error
    if header["metadata"].get("sha256") != _checksum(tensors):
        raise CheckpointError(f"{path} is corrupt: its weights do not match the checksum written when it was saved")
    not_finite = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointError(
            f"{path.name} holds NaN or infinite weights ({len(not_finite)} tensor(s), e.g. {not_finite[0]}): "
            "the model it was saved from had diverged"
        )

    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    encoder_state = {
        k[8:]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("encoder.")
    }

    if encoder is None:
        try:
            if encoder_state:
                encoder = PromptEncoder.from_state_dict(spec, encoder_state, device=device)
            else:
                encoder = PromptEncoder.from_spec(spec, device=device, download=allow_download)
        except (ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path.name}: cannot build its prompt encoder {spec}: {error}") from error
    expected = metadata.encoder
    if not expected.matches(encoder.identity()):
        raise EncoderMismatchError(
            f"{path.name} was trained with prompt encoder {expected.describe()}, "
            f"but the encoder given is {encoder.identity().describe()}. "
            "Use the checkpoint's own encoder (pass no encoder) or retrain with this one."
        )
    try:
        model = model_from_config(metadata.method, dict(metadata.config))
        model.load_state_dict(model_state)
    except (ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path} does not fit the {metadata.method} model it describes: {error}") from error
    model.to(device).eval()
    return LoadedCheckpoint(model=model, encoder=encoder.to(device), metadata=metadata, path=path)
