"""napari-textsr: text-guided super-resolution for napari, Python and the command line.

The core library (models, prompt encoding, checkpoints, inference and training
engines) has no Qt dependency; the napari widgets live in ``napari_textsr.napari``.
"""

from __future__ import annotations

from napari_textsr._version import __version__

from napari_textsr.models import available_methods, create_model

# The inference engine is imported on first use (module __getattr__), so
# ``import napari_textsr`` stays cheap and never pulls in open_clip.
_LAZY_INFERENCE = (
    "load_model",
    "Upscaler",
    "UpscaleResult",
    "UpscaleProgress",
    "UpscaleCancelled",
    "ModelDescription",
    "ModelSpec",
    "ModelSpecError",
    "list_models",
)

__all__ = ["__version__", "available_methods", "create_model", *_LAZY_INFERENCE]


def __getattr__(name: str):
    if name in _LAZY_INFERENCE:
        from napari_textsr import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'napari_textsr' has no attribute {name!r}")
