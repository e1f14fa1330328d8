"""The models a napari session can use, and the loaded ones, shared by every widget.

One :data:`MODEL_STORE` per process:

* :meth:`ModelStore.choices` lists what the model picker offers: models bundled
  with the package, checkpoints registered in this session (by the training
  widget or the picker's file browser) and untrained ``random:<method>:<scale>:tiny``
  specs for trying the plumbing;
* :meth:`ModelStore.get` loads a model and its prompt encoder once per
  (spec, device) and hands the same :class:`~napari_textsr.inference.Upscaler`
  back afterwards; :meth:`ModelStore.using` also keeps other threads off it
  while one run uses it.

No Qt here: the store is also what the scripted :func:`~napari_textsr.napari.upscale_layer` uses.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from psygnal import Signal

from napari_textsr.loading import ModelSpec, ModelSpecError, list_models
from napari_textsr.methods import method_title  # re-exported: the widgets import it from here
from napari_textsr.models import SUPPORTED_SCALES, available_methods

if TYPE_CHECKING:
    from napari_textsr.inference import Upscaler

# Groups, in the order the picker shows them.
BUNDLED = "bundled"
TRAINED = "trained"
FILE = "file"
UNTRAINED = "untrained"
GROUP_TITLES = {
    BUNDLED: "Bundled models",
    TRAINED: "Trained in this session",
    FILE: "Checkpoint files",
    UNTRAINED: "Untrained (random weights, for trying the plumbing)",
}
UNTRAINED_PRESET = "tiny"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker: ``spec`` is what :func:`napari_textsr.load_model` takes."""

    spec: str
    label: str
    group: str
    tooltip: str = ""
    method: str | None = None
    scale: int | None = None


def untrained_spec(method: str, scale: int, preset: str = UNTRAINED_PRESET) -> str:
    """The spec text of an untrained model, ``random:<method>:<scale>:<preset>``."""
    return str(ModelSpec.random(method, scale, preset))


def untrained_choices() -> list[ModelChoice]:
    """``random:<method>:<scale>:tiny`` for every method and scale, labelled as untrained."""
    return [
        ModelChoice(
            spec=untrained_spec(method, scale),
            label=f"UNTRAINED {method_title(method)} x{scale}",
            group=UNTRAINED,
            tooltip="Random weights: the output is not a real super-resolution. "
            "Use it to try the widget, tiling and attention layers.",
            method=method,
            scale=scale,
        )
        for method in available_methods()
        for scale in SUPPORTED_SCALES
    ]


_BUNDLED_CACHE: dict[tuple, list[ModelChoice]] = {}


def bundled_choices() -> list[ModelChoice]:
    """Models shipped in ``napari_textsr/weights/``, their headers read once per file version.

    The pickers refill on every checkpoint a training run writes; reading every
    bundled header each time was disk work on the GUI thread.
    """
    from napari_textsr import loading

    folder = Path(loading.WEIGHTS_DIR)
    files = sorted(folder.glob(f"*{loading.SUFFIX}"))
    key = (str(folder), *((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    if key not in _BUNDLED_CACHE:
        _BUNDLED_CACHE.clear()
        _BUNDLED_CACHE[key] = _read_bundled_choices()
    return list(_BUNDLED_CACHE[key])


def _read_bundled_choices() -> list[ModelChoice]:
    return [
        ModelChoice(
            spec=model.name,
            label=f"{model.name} ({method_title(model.method)} x{model.scale})",
            group=BUNDLED,
            tooltip=model.description or str(model.path),
            method=model.method,
            scale=model.scale,
        )
        for model in list_models()
    ]


def default_model_name(scale: int | None = None) -> str | None:
    """Name of the bundled model ``load_model("default", scale=scale)`` loads (None if none is bundled)."""
    from napari_textsr.loading import pick_default

    try:
        return pick_default(scale).name
    except ModelSpecError:
        return None


class ModelStore:
    """Loaded models cached by (spec, device, file version) and checkpoints registered in this session.

    ``checkpoint_registered`` is emitted with the new :class:`ModelChoice` so every
    open model picker can add it at once. Register from the GUI thread.
    """

    checkpoint_registered = Signal(object)

    def __init__(self) -> None:
        self._registered: list[ModelChoice] = []
        self._cache: dict[tuple, Upscaler] = {}
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._run_locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the picker
    def choices(self) -> list[ModelChoice]:
        """Bundled, then registered (trained, files), then untrained choices."""
        registered = sorted(self._registered, key=lambda c: c.group != TRAINED)
        try:
            bundled = bundled_choices()
        except Exception as error:  # an unreadable weights folder must not break the pickers
            warnings.warn(f"could not list the bundled models: {error}", stacklevel=2)
            bundled = []
        return bundled + registered + untrained_choices()

    def register_checkpoint(
        self, path: str | os.PathLike, label: str | None = None, group: str = TRAINED
    ) -> ModelChoice:
        """Offer a checkpoint file in every model picker; returns its choice.

        Registering the same file again (e.g. a training run that wrote it
        anew) keeps one entry; the next :meth:`get` reloads it because the
        cache key includes the file's modification time.
        """
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise FileNotFoundError(f"checkpoint not found: {resolved}")
        spec = str(resolved)
        name = resolved.name.removesuffix(".safetensors").removesuffix(".textsr")
        if name == "model":  # the trainer's fixed file name: the run folder says more
            name = resolved.parent.name
        prefix = "trained: " if group == TRAINED else "file: "
        method = scale = None
        try:  # the header only: which method and scale (for the scale picker)
            from napari_textsr.checkpoints import read_metadata

            meta = read_metadata(resolved)
            method, scale = meta.method, meta.scale
        except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
            pass
        choice = ModelChoice(
            spec=spec, label=label or f"{prefix}{name}", group=group, tooltip=spec, method=method, scale=scale
        )
        existing = [c for c in self._registered if c.spec == spec]
        if existing:
            if group == TRAINED and existing[0].group != TRAINED:  # a file that turned out to be ours
                self._registered.remove(existing[0])
            else:
                return existing[0]
        self._registered.append(choice)
        self.checkpoint_registered.emit(choice)
        return choice

    # ------------------------------------------------------------------ loaded models
    @staticmethod
    def _key(spec: str, device: str, scale: int | None) -> tuple:
        from napari_textsr.devices import select_device

        resolved_device = str(select_device(device))
        try:
            path = ModelSpec.parse(spec).path
        except ModelSpecError:  # get() raises the same error from load_model
            path = None
        version = path.stat().st_mtime_ns if path is not None and path.is_file() else None
        return (spec, resolved_device, scale, version)

    def cached(self, spec: str, device: str = "auto", scale: int | None = None) -> Upscaler | None:
        """The loaded model for (spec, device) if it is loaded already, else None (never loads)."""
        return self._cache.get(self._key(spec, device, scale))

    def get(self, spec: str, device: str = "auto", scale: int | None = None) -> Upscaler:
        """Load ``spec`` on ``device`` once (thread-safe) and return the cached Upscaler afterwards.

        Raises whatever :func:`napari_textsr.load_model` raises (ValueError,
        FileNotFoundError, CheckpointError) for a model that cannot be loaded.
        """
        key = self._key(spec, device, scale)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two threads asking for the same model load it once
            if key not in self._cache:
                from napari_textsr.inference import load_model

                upscaler = load_model(spec, scale=scale, device=device)
                with self._lock:
                    self._cache[key] = upscaler
            return self._cache[key]

    @contextmanager
    def using(self, spec: str, device: str = "auto", scale: int | None = None) -> Iterator[Upscaler]:
        """``get`` plus exclusive use: an Upscaler serves one thread at a time."""
        upscaler = self.get(spec, device, scale)
        with self._lock:
            run_lock = self._run_locks.setdefault(id(upscaler), threading.Lock())
        with run_lock:
            yield upscaler

    def clear(self) -> None:
        """Forget every loaded model (registered checkpoints stay)."""
        with self._lock:
            self._cache.clear()
            self._key_locks.clear()
            self._run_locks.clear()


MODEL_STORE = ModelStore()
