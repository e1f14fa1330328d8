"""napari-textsr: text-guided super-resolution for napari, Python and the command line.

The core library (models, prompt encoding, checkpoints, inference and training
engines) has no Qt dependency; the napari widgets live in ``napari_textsr.napari``.
"""

from __future__ import annotations

from napari_textsr._version import __version__

# Everything is imported on first use (module __getattr__), so ``import napari_textsr``
# (and the ``textsr`` command line's start) imports neither torch nor open_clip.
_LAZY = {
    "available_methods": "napari_textsr.models",
    "create_model": "napari_textsr.models",
    "load_model": "napari_textsr.inference",
    "Upscaler": "napari_textsr.inference",
    "UpscaleResult": "napari_textsr.inference",
    "UpscaleProgress": "napari_textsr.inference",
    "UpscaleCancelled": "napari_textsr.inference",
    "ModelDescription": "napari_textsr.loading",
    "ModelSpec": "napari_textsr.loading",
    "ModelSpecError": "napari_textsr.loading",
    "list_models": "napari_textsr.loading",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_textsr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
