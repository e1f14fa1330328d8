"""Which caption helps? Mean PSNR-Y gain over bicubic of one model for several captions.

    python benchmarks/bench_caption_sweep.py --scale 2 --degradation noise --data ../shared/data/train/bsd200 \
        "{c}" "" "{c}, noisy" "{c}, clean" "{c}; the picture is grainy and noisy"
    python benchmarks/bench_caption_sweep.py --scale 8 --degradation jpeg --image 271031.png "{c}" "" "at sunset"
    python benchmarks/bench_caption_sweep.py --scale 2 --jpeg-quality 75 --data ../shared/data/train/bsd200 \
        --data ../shared/data/train/t91 "" "JPEG-compressed" "{c}" "{c}, JPEG-compressed"
    python benchmarks/bench_caption_sweep.py --scale 2 --degradation jpeg --file-words --data ../shared/data/train/bsd200 \
        --data ../shared/data/train/t91 "" "{c}"

For the held-out photographs of a folder (the split of ``textsr bench --split
val``), each degraded the way ``textsr bench --degradation NAME`` degrades it,
prints for each caption template the mean PSNR-Y (dB, BT.601 luma, a border of
``scale`` pixels left out) of the model's output minus bicubic's, and the mean
absolute difference (8-bit grey levels) of its output from the first
template's, and the lowest gain of any image. ``{c}`` is the image's own caption, so ``"{c}, noisy"`` is its
caption plus a training word and ``""`` the empty caption. docs/training.md
uses it to see what saying "noisy" does. Not a test: it describes a model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class CaptionScore:
    """One caption template's means over the images."""

    template: str
    gain_db: float  # PSNR-Y minus bicubic's
    moved: float  # mean |output - first template's output|, 8-bit grey levels
    worst_db: float  # the lowest image's PSNR-Y minus bicubic's
    words_added: int = 0  # images whose caption got the JPEG words (file_words)


def sweep(
    upscaler,
    items: Sequence,
    degradation,
    templates: Sequence[str],
    file_words: bool = False,
    jpeg_upscaler=None,
) -> list[CaptionScore]:
    """Score ``upscaler`` on ``items`` (CaptionedImage, HR float32 in [0, 1]) with each caption template.

    ``degradation``: a name of ``napari_textsr.training.degradations.NAMED_DEGRADATIONS``
    or a ``Degradation`` of the upscaler's scale, seeded per image as in
    ``textsr bench``. ``file_words``: each caption gets the JPEG words the
    LR's pixels call for, as ``textsr upscale`` does for a PNG of that LR
    (``napari_textsr.imageio.jpeg_evidence``, ``caption_with_file_words``).
    ``jpeg_upscaler``: the model for LRs whose pixels show JPEG quality <= 60,
    as ``textsr upscale`` routes the default (``napari_textsr.loading.default_for_input``).
    Raises ValueError for no templates or no images.
    """
    from napari_textsr.benchmark import bicubic_upscale, degrade_to_uint8
    from napari_textsr.imageio import jpeg_evidence
    from napari_textsr.metrics import quality_scores
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY, caption_with_file_words
    from napari_textsr.training.degradations import named_degradation

    if not templates or not items:
        raise ValueError("give at least one caption template and one image")
    scale = upscaler.scale
    degrade = named_degradation(degradation, scale) if isinstance(degradation, str) else degradation
    gains: dict[str, list[float]] = {t: [] for t in templates}
    moved: dict[str, list[float]] = {t: [] for t in templates}
    added = dict.fromkeys(templates, 0)
    for item in items:
        h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
        hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
        lr = degrade_to_uint8(hr, degrade, item.name)
        bicubic = quality_scores(bicubic_upscale(lr, scale), hr, border=scale).psnr_y
        evidence = jpeg_evidence(None, lr) if file_words or jpeg_upscaler is not None else None
        quality = evidence.quality if evidence is not None else None
        model = upscaler
        if jpeg_upscaler is not None and quality is not None and quality <= FILE_WORDS_MAX_JPEG_QUALITY:
            model = jpeg_upscaler
        first = None
        for template in templates:
            caption = template.format(c=item.captions[0])
            said = caption_with_file_words(caption, quality) if file_words else caption
            added[template] += said != caption
            out = model.upscale(lr, said).image.astype(np.float32)
            first = out if first is None else first
            moved[template].append(float(np.abs(out - first).mean()))
            gains[template].append(quality_scores(out / 255.0, hr, border=scale).psnr_y - bicubic)
    return [
        CaptionScore(t, float(np.mean(gains[t])), float(np.mean(moved[t])), float(np.min(gains[t])), added[t])
        for t in templates
    ]


def select_images(items: Sequence, names: Sequence[str]) -> list:
    """The ``items`` (CaptionedImage) whose name is in ``names``, in their order.

    Raises ValueError naming any of ``names`` that no item has.
    """
    missing = sorted(set(names) - {item.name for item in items})
    if missing:
        raise ValueError(f"not among the held-out images: {', '.join(missing)}")
    return [item for item in items if item.name in names]


def main() -> None:
    import torch

    from napari_textsr.inference import load_model
    from napari_textsr.loading import default_for_input
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY
    from napari_textsr.training.data import load_captioned_folder, split_train_val
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS, Degradation

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("templates", nargs="+", help='caption templates; {c} is the image\'s caption ("" = empty)')
    parser.add_argument("--model", default="default")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--degradation", default="bicubic-aa", choices=list(NAMED_DEGRADATIONS))
    parser.add_argument(
        "--jpeg-quality",
        type=int,
        default=None,
        metavar="Q",
        help="instead of --degradation: antialiased bicubic, then JPEG at quality Q (Pillow)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=None,
        help="captioned folder (repeatable; default ../shared/data/train/bsd200)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N held-out images of each folder only")
    parser.add_argument(
        "--image", action="append", default=None, metavar="NAME", help="only this held-out image (repeatable)"
    )
    parser.add_argument(
        "--file-words",
        action="store_true",
        help="give each caption the JPEG words the LR's pixels call for, as textsr upscale does for a PNG of it",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    upscaler = load_model(args.model, scale=args.scale)
    jpeg_spec = default_for_input(args.model, args.scale, FILE_WORDS_MAX_JPEG_QUALITY)
    jpeg_upscaler = load_model(jpeg_spec, scale=args.scale) if str(jpeg_spec) != str(args.model) else None
    if jpeg_upscaler is not None:  # as textsr upscale routes the default
        print(f"LRs whose pixels show JPEG quality <= {FILE_WORDS_MAX_JPEG_QUALITY} are upscaled by {jpeg_spec}")
    folders = args.data or ["../shared/data/train/bsd200"]
    held_out = []
    for folder in folders:  # textsr bench's and training's split of each folder
        held_out += split_train_val(load_captioned_folder(folder))[1][: args.limit]
    degradation = args.degradation
    if args.jpeg_quality is not None:
        degradation = Degradation(scale=upscaler.scale, jpeg_quality=args.jpeg_quality)
    if args.image:
        try:
            held_out = select_images(held_out, args.image)
        except ValueError as error:
            parser.error(f"{error} ({', '.join(folders)})")
    what = (
        args.degradation if args.jpeg_quality is None else f"antialiased bicubic, then JPEG quality {args.jpeg_quality}"
    )
    print(
        f"{upscaler.description.name} x{upscaler.scale}, {what}, {len(held_out)} held-out images: "
        "PSNR-Y minus bicubic (dB), mean |output - first template's output| (grey levels), worst image (dB)"
    )
    scores = sweep(upscaler, held_out, degradation, args.templates, args.file_words, jpeg_upscaler)
    for score in scores:
        added = f"  (JPEG words added for {score.words_added} of {len(held_out)})" if args.file_words else ""
        print(f"  {score.gain_db:+.2f}  {score.moved:5.2f}  {score.worst_db:+.2f}  {score.template!r}{added}")


if __name__ == "__main__":
    main()
