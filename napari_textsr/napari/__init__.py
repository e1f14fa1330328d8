"""The napari plugin layer: dock widgets, workers, layer construction and sample data.

Only this subpackage imports Qt and napari; the rest of ``napari_textsr`` never does.

Scripted use, without a widget::

    import napari
    from napari_textsr.napari import upscale_layer

    viewer = napari.Viewer()
    viewer.open_sample("napari-textsr", "fluorescence")
    layers = upscale_layer(viewer, "nuclei (low-res)", "oval blue nuclei", model="random:pdn:4:tiny")
"""

from __future__ import annotations

# torch before Qt: importing PyQt first makes torch crash on some platforms.
import torch  # noqa: F401

from napari_textsr.napari.model_store import MODEL_STORE, ModelChoice, ModelStore
from napari_textsr.napari.scripting import upscale_layer

__all__ = ["MODEL_STORE", "ModelChoice", "ModelStore", "upscale_layer"]
