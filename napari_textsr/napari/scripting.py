"""The scripted path: what the widget does, as one function call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from napari_textsr._generators import drive
from napari_textsr.napari.jobs import JobProgress, iter_job, make_job
from napari_textsr.napari.layers import add_result_layers, layer_binning, layer_jpeg_evidence
from napari_textsr.napari.model_store import MODEL_STORE
from napari_textsr.training.captions import caption_with_file_words

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


def upscale_layer(
    viewer: napari.components.ViewerModel,
    layer_or_name: Layer | str,
    caption: str | Sequence[str] = "",
    model: str = "default",
    *,
    device: str = "auto",
    scale: int | None = None,
    tile: int | None = None,
    consistency: bool | str = False,
    attention: bool = True,
    whole_stack: bool = True,
    file_words: bool = True,
    progress: Callable[[JobProgress], None] | None = None,
    **engine_kwargs: Any,
) -> list[Layer]:
    """Super-resolve an Image layer guided by a caption and add the results to ``viewer``.

    Adds exactly the layers the "Text-guided super-resolution" widget adds:
    the output ``"<input> x<k>"`` (same dtype, overlaying the input in world
    coordinates, provenance in ``metadata``), one layer per attention map and
    the consistency map if asked for. Runs in the calling thread and returns
    the new layers, output first.

    Parameters
    ----------
    viewer : the napari viewer (or ``ViewerModel``) holding the layer.
    layer_or_name : an Image layer or its name.
    caption : the caption; a sequence of captions compares them (one stack
        layer with a slice per caption, the captions in its metadata).
    model : a bundled model name, a ``.textsr.safetensors`` path, ``"default"``
        (the bundled model for ``scale``; for a layer JPEG-compressed at
        quality 60 or lower, the bundled model trained for such inputs where
        there is one: :func:`napari_textsr.loading.default_for_input`) or
        ``"random:<method>:<scale>[:<preset>]"`` (untrained). Loaded once per
        (model, device) and reused.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
    tile : tile side in input pixels; None = from free memory; 0 = no tiling.
    consistency : back-project so that downsampling the output gives the input;
        adds a consistency-map layer. True: with the resize the caption names
        (:meth:`napari_textsr.inference.Upscaler.iter_upscale`); or a kernel
        name (``"area"`` for binned data, ``"bicubic"``, ...).
    attention : add the model's attention maps as layers.
    whole_stack : for nD layers, every slice (True) or only the slice the
        viewer shows (False).
    file_words : add "JPEG-compressed" to each caption when the layer went
        through JPEG compression of quality 60 or lower (opened from such a
        JPEG file, or an 8-bit 2-D layer whose 8x8 blocks show it), and
        "binned" when it was opened from an OME-TIFF that records camera
        binning, as the CLI and the dock do
        (:func:`~napari_textsr.napari.layers.layer_jpeg_evidence`,
        :func:`~napari_textsr.napari.layers.layer_binning`,
        :func:`~napari_textsr.training.captions.caption_with_file_words`).
    progress : called with a :class:`~napari_textsr.napari.jobs.JobProgress` after each tile.
    **engine_kwargs : passed to :meth:`napari_textsr.Upscaler.iter_upscale`
        (e.g. ``reference=`` an image prompt, ``percentiles=``).

    Raises
    ------
    KeyError for an unknown layer name, TypeError for a layer that is not an
    Image layer, ValueError for an image the engine cannot take (e.g. 1x1),
    and whatever loading the model raises.
    """
    layer = viewer.layers[layer_or_name] if isinstance(layer_or_name, str) else layer_or_name
    evidence = layer_jpeg_evidence(layer)
    if file_words:
        quality = evidence.quality if evidence is not None else None
        binning = layer_binning(layer)
        if isinstance(caption, str):
            caption = caption_with_file_words(caption, quality, binning)
        else:
            caption = [caption_with_file_words(c, quality, binning) for c in caption]
    job = make_job(
        layer,
        caption,
        model,
        whole_stack=whole_stack,
        point=viewer.dims.point,
        device=device,
        scale=scale,
        tile=tile,
        consistency=consistency,
        attention=attention,
        jpeg=evidence,
        **engine_kwargs,
    )
    with MODEL_STORE.using(job.model, job.device, job.scale) as upscaler:
        results = drive(iter_job(job, upscaler), progress)
    return add_result_layers(viewer, job.source, results, offset=job.offset, compare=job.compare)
