"""One-file checkpoints: safetensors weights plus JSON metadata in the header.

A checkpoint holds the SR model's weights (``model.*``), the method, its config
and scale, exactly which prompt encoder it was trained with, and the encoder's
own weights (``encoder.*``) when they cannot be fetched by name (random init or
a local file). Loading verifies a checksum over all tensors, so a truncated or
corrupt file is refused, and refuses an encoder that is not the one recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_textsr.models import TextSRModel, model_from_config
from napari_textsr.prompts import EncoderIdentity, EncoderSpec, PromptEncoder

__all__ = [
    "CheckpointError",
    "EncoderMismatchError",
    "CheckpointMetadata",
    "TrainingRecord",
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
        values = json.loads(text)
        if values.pop("format", None) != FORMAT_NAME:
            raise CheckpointError("metadata does not come from napari-textsr")
        version = values.pop("version", None)
        if version != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format version {version} is not supported (expected {FORMAT_VERSION})")
        values["encoder"] = EncoderIdentity.from_dict(values["encoder"])
        if values.get("training") is not None:
            values["training"] = TrainingRecord(**values["training"])
        return cls(**values)

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

    The write goes to a temporary file first and is renamed into place, so an
    interrupted save never leaves a broken checkpoint where a good one was.
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
            tensors[f"encoder.{k}"] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().clone()
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"textsr": metadata.to_json(), "sha256": _checksum(tensors)})
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> CheckpointMetadata:
    """Read only the header (fast; no weights loaded)."""
    header = _read_header(Path(path))
    return CheckpointMetadata.from_json(header["textsr"])


def _read_header(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from error
    if "textsr" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a napari-textsr checkpoint")
    return header


def load_checkpoint(
    path: str | os.PathLike,
    *,
    encoder: PromptEncoder | None = None,
    device: torch.device | str = "cpu",
) -> LoadedCheckpoint:
    """Load a model and its prompt encoder.

    With ``encoder`` given, it must be the encoder the model was trained with
    (same architecture and tag, or same weights fingerprint); otherwise
    :class:`EncoderMismatchError` says what was expected. Without it, the
    encoder is rebuilt from the checkpoint (its embedded weights, the bundled
    weights, or the pretrained tag).
    """
    from safetensors.torch import load_file

    path = Path(path)
    header = _read_header(path)
    metadata = CheckpointMetadata.from_json(header["textsr"])
    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path} could not be read (corrupt or truncated?): {error}") from error
    if header.get("sha256") != _checksum(tensors):
        raise CheckpointError(f"{path} is corrupt: its weights do not match the checksum written when it was saved")

    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    encoder_state = {k[8:]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("encoder.")}
    spec = EncoderSpec.parse(metadata.encoder_spec)

    if encoder is None:
        if encoder_state:
            encoder = PromptEncoder.from_state_dict(spec, encoder_state, device=device)
        else:
            encoder = PromptEncoder.from_spec(spec, device=device)
    expected = metadata.encoder
    if not expected.matches(encoder.identity()):
        raise EncoderMismatchError(
            f"{path.name} was trained with prompt encoder {expected.describe()}, "
            f"but the encoder given is {encoder.identity().describe()}. "
            "Use the checkpoint's own encoder (pass no encoder) or retrain with this one."
        )
    try:
        model = model_from_config(metadata.method, metadata.config)
        model.load_state_dict(model_state)
    except (ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path} does not fit the {metadata.method} model it describes: {error}") from error
    model.to(device).eval()
    return LoadedCheckpoint(model=model, encoder=encoder.to(device), metadata=metadata, path=path)
