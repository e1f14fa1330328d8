"""Evidence reports: what went in, what came out, and everything that decided it.

A report (``textsr upscale ... --report REPORT.json``, or
:func:`build_report` from Python and the napari widget) records, as JSON:

* SHA-256 of the input file, of the written output file and of the output
  array (:func:`sha256_array`: dtype, shape and C-order bytes, so it does not
  depend on the file format or its metadata);
* the model: its file and that file's SHA-256 (bundled models and
  checkpoints), SHA-256 of the SR model's and prompt encoder's weights as
  loaded (:func:`sha256_module`; also for untrained ``random:`` models), its
  description;
* every parameter of the call, the seed, device, precision and the
  deterministic-mode settings (:func:`determinism`);
* software and library versions (:func:`environment`);
* the consistency and text-effect statistics and the region captions.

Reruns on the same machine give the same output hashes: the forward pass draws
no random numbers, untrained models are built with ``torch.manual_seed(0)``,
and on the CPU PyTorch's kernels are deterministic for a fixed thread count
(recorded). On CUDA, cuDNN may pick different convolution algorithms from run
to run; :func:`enable_deterministic` (``--deterministic``) asks for
deterministic ones (``torch.use_deterministic_algorithms``, cuDNN
benchmark off, ``CUBLAS_WORKSPACE_CONFIG``), which makes reruns bit-identical
on the same GPU, driver and library versions; another GPU model, driver,
CUDA/cuDNN version, float16 autocast versus float32, or another thread count
on the CPU gives slightly different floats, so the same output hash is only
expected from the same machine and settings.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from importlib import metadata as _metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

    from napari_textsr.inference import Upscaler, UpscaleResult

__all__ = [
    "REPORT_FORMAT",
    "build_report",
    "determinism",
    "enable_deterministic",
    "environment",
    "map_statistics",
    "sha256_array",
    "sha256_file",
    "sha256_module",
    "write_report",
]

REPORT_FORMAT = "napari-textsr evidence report 1"
# Libraries whose versions can change the numbers (or the files) and are recorded.
LIBRARIES = (
    "napari-textsr",
    "torch",
    "numpy",
    "open-clip-torch",
    "safetensors",
    "tifffile",
    "imagecodecs",
    "pillow",
    "scipy",
    "scikit-image",
    "napari",
)
_CHUNK = 1 << 24


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 16 MiB chunks). FileNotFoundError if missing."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array: Any) -> str:
    """Hex SHA-256 of an array: ``"<dtype.str> <shape>\\n"`` then its C-order bytes.

    The dtype string includes the byte order (``<u2``), so equal hashes mean
    equal values, dtype and shape. Lazy arrays (dask, zarr) are read one
    leading-axis slice at a time.
    """
    shape = tuple(int(n) for n in array.shape)
    dtype = np.dtype(array.dtype)
    digest = hashlib.sha256(f"{dtype.str} {shape}\n".encode())
    if len(shape) > 2 and not isinstance(array, np.ndarray):
        for i in range(shape[0]):
            digest.update(np.ascontiguousarray(np.asarray(array[i]), dtype=dtype).tobytes())
    else:
        digest.update(np.ascontiguousarray(np.asarray(array), dtype=dtype).tobytes())
    return digest.hexdigest()


def sha256_module(module: "torch.nn.Module") -> str:
    """Hex SHA-256 of a module's state dict: for each entry in name order, name, dtype, shape and bytes."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {values.dtype} {tuple(values.shape)}\n".encode())
        if values.dtype == torch.bfloat16:
            values = values.view(torch.int16)
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def map_statistics(values: np.ndarray | None) -> dict[str, float] | None:
    """mean, 99th percentile and maximum of |values| over finite entries (None for None)."""
    if values is None:
        return None
    from napari_textsr.regions import effect_statistics

    return effect_statistics(values)


def _version(distribution: str) -> str | None:
    try:
        return _metadata.version(distribution)
    except _metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Python, OS, CPU and library versions; CUDA/cuDNN and the GPU name when CUDA is available."""
    import torch

    from napari_textsr._version import __version__

    versions = {name: _version(name) for name in LIBRARIES}
    versions["napari-textsr"] = __version__
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "libraries": versions,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def enable_deterministic() -> None:
    """Ask PyTorch for deterministic kernels (process-wide): what ``--deterministic`` does.

    Sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (if unset; needed by cuBLAS before
    CUDA starts), ``torch.use_deterministic_algorithms(True)`` (an op without a
    deterministic implementation then raises RuntimeError instead of varying),
    cuDNN deterministic and benchmark off. The CPU path is deterministic anyway.
    """
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def determinism() -> dict[str, Any]:
    """The settings that decide whether reruns are bit-identical."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_threads": torch.get_num_threads(),
    }


def model_file(source: str) -> Path | None:
    """The checkpoint file a model description's ``source`` names (None for random/in-memory models)."""
    from napari_textsr import loading
    from napari_textsr.checkpoints import SUFFIX

    if source.startswith("bundled:"):
        return loading.WEIGHTS_DIR / f"{source[len('bundled:') :]}{SUFFIX}"
    if source in ("", "random", "memory"):
        return None
    path = Path(source)
    return path if path.is_file() else None


def build_report(
    result: "UpscaleResult",
    upscaler: "Upscaler",
    *,
    parameters: Mapping[str, Any],
    input_path: str | os.PathLike | None = None,
    input_array: Any | None = None,
    output_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The evidence report of one upscaling run, as a JSON-ready dict.

    parameters: every setting of the call (CLI arguments, widget options),
    recorded as given (paths as strings). input_path / output_path: the files
    read and written (hashed when given); input_array: the array upscaled
    (hashed when given, e.g. a napari layer's data).
    """
    description = upscaler.description
    checkpoint = model_file(description.source)
    record: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "file": str(input_path) if input_path is not None else None,
            "file_sha256": sha256_file(input_path) if input_path is not None else None,
            "array_sha256": sha256_array(input_array) if input_array is not None else None,
        },
        "output": {
            "file": str(output_path) if output_path is not None else None,
            "file_sha256": sha256_file(output_path) if output_path is not None else None,
            "array_sha256": sha256_array(result.image),
            "shape": list(result.image.shape),
            "dtype": str(result.image.dtype),
        },
        "model": {
            "name": description.name,
            "source": description.source,
            "file": str(checkpoint) if checkpoint is not None else None,
            "file_sha256": sha256_file(checkpoint) if checkpoint is not None else None,
            "weights_sha256": sha256_module(upscaler.model),
            "encoder_weights_sha256": sha256_module(upscaler.encoder),
            "description": description.to_dict(),
        },
        "parameters": _jsonable(dict(parameters)),
        # The forward pass draws no random numbers; untrained random: models
        # are built after torch.manual_seed(0).
        "seed": 0 if description.source == "random" else None,
        "device": description.device,
        "precision": str(upscaler.autocast_dtype).replace("torch.", "") if upscaler.autocast_dtype else "float32",
        "determinism": determinism(),
        "environment": environment(),
        "provenance": result.provenance(),
        "statistics": {
            "consistency_error": result.consistency_error,
            "consistency_map": map_statistics(result.consistency_map),
            "text_effect": result.text_effect_stats,
        },
    }
    if result.text_effect is not None:
        record["output"]["text_effect_array_sha256"] = sha256_array(result.text_effect)
    return record


def write_report(path: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented JSON (keys in insertion order). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(dict(report)), indent=2) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
