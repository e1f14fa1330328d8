"""napari-textsr: text-guided super-resolution for napari, Python and the command line.

The core library (models, prompt encoding, checkpoints, inference and training
engines) has no Qt dependency; the napari widgets live in ``napari_textsr.napari``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from napari_textsr.models import available_methods, create_model

__all__ = ["__version__", "available_methods", "create_model"]
