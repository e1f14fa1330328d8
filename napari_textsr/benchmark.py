"""How much a model gains over bicubic, and how much of that the caption adds.

For every captioned image: the HR image is degraded by one of the named
pipelines of :data:`~napari_textsr.training.degradations.NAMED_DEGRADATIONS`
(default antialiased bicubic, the benchmark convention; noise seeded by the
image's name) and quantised to 8 bits, then upscaled six ways (:data:`VARIANTS`):
bicubic; the model with the image's own caption, an empty caption, and the
caption of a different image; and the image's caption with degradation words in
a phrasing training never used (:data:`~napari_textsr.training.captions.HELD_OUT_TEMPLATE`),
once with the right words for the degradation and once with wrong ones ("sharp
and clean" for a blurred, noisy or compressed image; "soft and out of focus"
for a clean one). Each output is scored against the HR image (PSNR/SSIM on Y
and RGB, border of ``scale`` pixels cropped) and against the image's true
caption with the model's own prompt encoder (cosine similarity of image and
text embeddings: the role TGSR's TIM score plays).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_textsr.metrics import QualityScores, quality_scores

if TYPE_CHECKING:
    from napari_textsr.inference import Upscaler
    from napari_textsr.training.data import CaptionedImage
    from napari_textsr.training.degradations import Degradation

VARIANTS = ("bicubic", "true_caption", "empty_caption", "other_caption", "right_words", "wrong_words")
CAPTION_VARIANTS = ("true_caption", "empty_caption", "other_caption")


@dataclass
class VariantResult:
    scores: QualityScores
    text_image_similarity: float


@dataclass
class ImageResult:
    name: str
    caption: str
    other_caption: str
    right_words: str
    wrong_words: str
    lr_shape: tuple[int, int]
    variants: dict[str, VariantResult]
    seconds: float  # one model pass (true caption), wall clock
    megapixels_per_second: float  # output megapixels per second of that pass
    model: str = ""  # the model that upscaled it (reports before routing: the report's model)


@dataclass
class BenchReport:
    model: dict
    dataset: str
    scale: int
    images: list[ImageResult]
    degradation: str = "bicubic-aa"
    machine: str = field(default_factory=lambda: machine_description())
    date: str = field(default_factory=lambda: _dt.date.today().isoformat())
    command: str = ""
    consistency: str = ""  # run_benchmark's consistency ("": none)

    def mean(self, variant: str, metric: str) -> float:
        """Mean of ``metric`` (a QualityScores field or ``text_image_similarity``) over images."""
        values = []
        for image in self.images:
            result = image.variants[variant]
            values.append(
                getattr(result.scores, metric) if metric != "text_image_similarity" else result.text_image_similarity
            )
        return float(np.mean(values))

    def worst_gain(self, variants: Sequence[str] = CAPTION_VARIANTS) -> tuple[float, str]:
        """The lowest PSNR-Y gain over bicubic of any image with any of ``variants``: (dB, "image / variant")."""
        worst = (float("inf"), "")
        for image in self.images:
            base = image.variants["bicubic"].scores.psnr_y
            for v in variants:
                gain = image.variants[v].scores.psnr_y - base
                if gain < worst[0]:
                    worst = (gain, f"{image.name} / {v}")
        return worst

    def summary(self) -> dict[str, dict[str, float]]:
        metrics = [f.name for f in dataclasses.fields(QualityScores)] + ["text_image_similarity"]
        table = {variant: {m: self.mean(variant, m) for m in metrics} for variant in VARIANTS}
        table["timing"] = {
            "seconds_per_image": float(np.mean([i.seconds for i in self.images])),
            "megapixels_per_second": float(np.mean([i.megapixels_per_second for i in self.images])),
        }
        return table

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "scale": self.scale,
            "degradation": self.degradation,
            "machine": self.machine,
            "date": self.date,
            "command": self.command,
            **({"consistency": self.consistency} if self.consistency else {}),
            "summary": self.summary(),
            "images": [dataclasses.asdict(i) for i in self.images],
        }

    @classmethod
    def from_dict(cls, values: dict) -> "BenchReport":
        """The report :meth:`to_dict` wrote (``textsr bench --json``); the summary is recomputed from the images.

        Raises:
            ValueError: ``values`` is not such a report, or one written before the right/wrong-words
                variants existed (it lacks fields this version scores).
        """
        try:
            images = [
                ImageResult(
                    **{
                        **{k: v for k, v in image.items() if k != "variants"},
                        "lr_shape": tuple(image["lr_shape"]),
                        "variants": {
                            name: VariantResult(QualityScores(**variant["scores"]), variant["text_image_similarity"])
                            for name, variant in image["variants"].items()
                        },
                    }
                )
                for image in values["images"]
            ]
            missing = [v for image in images for v in VARIANTS if v not in image.variants]
            if missing:
                raise KeyError(f"variant {missing[0]}")
            return cls(
                model=values["model"],
                dataset=values["dataset"],
                scale=values["scale"],
                images=images,
                degradation=values["degradation"],
                machine=values["machine"],
                date=values["date"],
                command=values["command"],
                consistency=values.get("consistency", ""),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"not a bench report of this version (an older `textsr bench --json` lacks fields): {error}"
            ) from error

    def markdown(self) -> str:
        """The summary as a Markdown table (what README shows)."""
        summary = self.summary()
        lines = [
            f"{self.dataset}, x{self.scale}, degradation {self.degradation}, {len(self.images)} images"
            + (f", back-projected ({self.consistency})" if self.consistency else ""),
            "",
            "| output | PSNR Y (dB) | SSIM Y | PSNR RGB (dB) | SSIM RGB | text-image similarity |",
            "|---|---|---|---|---|---|",
        ]
        for variant in VARIANTS:
            s = summary[variant]
            lines.append(
                f"| {variant.replace('_', ' ')} | {s['psnr_y']:.2f} | {s['ssim_y']:.4f} | "
                f"{s['psnr_rgb']:.2f} | {s['ssim_rgb']:.4f} | {s['text_image_similarity']:.4f} |"
            )
        t = summary["timing"]
        worst, where = self.worst_gain()
        lines += [
            "",
            f"{t['seconds_per_image']:.2f} s per image, {t['megapixels_per_second']:.3f} output MP/s; "
            f"worst image against bicubic (true, empty or other caption): {worst:+.2f} dB ({where})",
        ]
        routed = routed_note([self])
        if routed:
            lines.append(routed)
        groups = self.psnr_y_by_group()
        if len(groups) > 1:
            lines += [
                "",
                "| PSNR Y (dB) by kind | images | "
                + " | ".join(v.replace("_", " ") for v in VARIANTS)
                + " | true - other |",
                "|---" * (len(VARIANTS) + 3) + "|",
            ]
            for group, (count, means) in groups.items():
                cells = " | ".join(f"{means[v]:.2f}" for v in VARIANTS)
                lines.append(f"| {group} | {count} | {cells} | {means['true_caption'] - means['other_caption']:+.2f} |")
        return "\n".join(lines)

    def psnr_y_by_group(self) -> dict[str, tuple[int, dict[str, float]]]:
        """Mean PSNR-Y per variant for each kind of synthetic scene (``{kind: (count, {variant: dB})}``);
        one group, "all", for anything else."""
        grouped: dict[str, list[ImageResult]] = {}
        for image in self.images:
            grouped.setdefault(_scene_kind(image.name), []).append(image)
        return {
            group: (len(images), {v: float(np.mean([i.variants[v].scores.psnr_y for i in images])) for v in VARIANTS})
            for group, images in grouped.items()
        }


def _scene_kind(name: str) -> str:
    """``synthetic-<seed>-<index>-<kind>-...`` -> kind (see synthetic.iter_synthetic); else "all"."""
    parts = name.split("-")
    return parts[3] if len(parts) > 3 and parts[0] == "synthetic" else "all"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {threads} torch threads{gpu}, torch {torch.__version__}"


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float/uint8 -> float32 (1, 3, H, W) in [0, 1]."""
    x = torch.from_numpy(np.array(image))  # a copy: inputs may be read-only (e.g. decoded files)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.permute(2, 0, 1)[None]


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (h, w, 3) -> float32 (s*h, s*w, 3) in [0, 1], MATLAB-style bicubic (a = -0.5)."""
    up = F.interpolate(_to_tensor(lr), scale_factor=scale, mode="bicubic", antialias=True, align_corners=False)
    return up[0].permute(1, 2, 0).clamp(0, 1).numpy()


def text_image_similarity(upscaler: "Upscaler", image: np.ndarray, caption: str) -> float:
    """Cosine similarity of the encoder's image embedding of ``image`` (H, W, 3) in [0, 1] and ``caption``."""
    image_embedding = upscaler.encoder.encode_images(_to_tensor(image)).pooled
    text_embedding = upscaler.encoder.encode(caption).pooled
    return float((image_embedding * text_embedding).sum())


def degradation_words(degradation: "Degradation") -> tuple[str, str]:
    """(right, wrong) degradation words for a pipeline, in the held-out phrasing's vocabulary.

    Right: the held-out phrase of its first property (blur, noise, JPEG, or
    clean). Wrong: "sharp and clean" for a degraded pipeline, the blur phrase
    for a clean one.
    """
    from napari_textsr.training.captions import HELD_OUT_PHRASES, degradation_properties

    prop = next((p for p in degradation_properties(degradation) if p in HELD_OUT_PHRASES), "clean")
    right = HELD_OUT_PHRASES[prop]
    wrong = HELD_OUT_PHRASES["clean"] if prop != "clean" else HELD_OUT_PHRASES["blur"]
    return right, wrong


def degrade_to_uint8(hr: np.ndarray, degradation: "Degradation", seed_name: str) -> np.ndarray:
    """HR float32 (H, W, 3) in [0, 1] (H, W multiples of the scale) -> the 8-bit LR (h, w, 3) uint8.

    Noise is seeded by ``seed_name`` (an image's name), so a benchmark is repeatable.
    """
    import hashlib

    seed = int.from_bytes(hashlib.sha256(seed_name.encode()).digest()[:7], "big")
    with torch.no_grad():
        lr = degradation(_to_tensor(hr), generator=torch.Generator().manual_seed(seed))
    return np.round(lr[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)


def run_benchmark(
    upscaler: "Upscaler",
    items: Sequence["CaptionedImage"],
    *,
    dataset: str,
    degradation: str = "bicubic-aa",
    caption_index: int = 0,
    progress: Callable[[int, int], None] | None = None,
    jpeg_upscaler: "Upscaler | None" = None,
    consistency: str = "",
) -> BenchReport:
    """Score ``upscaler`` on ``items`` (HR images with captions); see the module docstring.

    ``degradation``: a name of :data:`~napari_textsr.training.degradations.NAMED_DEGRADATIONS`.
    ``jpeg_upscaler``: the model for LR images whose pixels show JPEG
    compression of quality <= 60 (:func:`napari_textsr.imageio.jpeg_quality_from_pixels`),
    as ``textsr upscale`` routes the default
    (:func:`napari_textsr.loading.default_for_input`); each image records
    the model that upscaled it.
    ``consistency``: "" (none), or back-project every model output
    (:mod:`napari_textsr.consistency`) with a kernel of
    :data:`~napari_textsr.consistency.CONSISTENCY_KERNELS` (``auto``: from
    each caption's words), or ``matched``: with the resize the degradation
    used, as a user who knows how the image was made small would say.
    Raises ValueError for fewer than two images, an unknown degradation or
    an unknown consistency kernel.
    """
    from napari_textsr.consistency import resolve_kernel
    from napari_textsr.imageio import jpeg_quality_from_pixels
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY, held_out_caption
    from napari_textsr.training.degradations import named_degradation

    if len(items) < 2:
        raise ValueError("a benchmark needs at least two captioned images (one lends the other its caption)")
    scale = upscaler.scale
    if jpeg_upscaler is not None and jpeg_upscaler.scale != scale:
        raise ValueError(f"the JPEG model is x{jpeg_upscaler.scale}, the model x{scale}")
    general = upscaler
    degrade = named_degradation(degradation, scale)
    right_words, wrong_words = degradation_words(degrade)
    kernel: str | bool = False
    if consistency == "matched":
        kernel = degrade.resize
    elif consistency:
        resolve_kernel(consistency)  # ValueError for an unknown name, before any work; "auto" stays per caption
        kernel = consistency
    results = []
    for index, item in enumerate(items):
        h, w = (item.image.shape[0] // scale) * scale, (item.image.shape[1] // scale) * scale
        hr = np.ascontiguousarray(item.image[:h, :w, :3], dtype=np.float32)
        lr = degrade_to_uint8(hr, degrade, item.name)
        caption = item.captions[min(caption_index, len(item.captions) - 1)]
        other = _other_caption(items, index, caption, caption_index)
        right, wrong = held_out_caption(caption, right_words), held_out_caption(caption, wrong_words)
        upscaler = general
        if jpeg_upscaler is not None:
            quality = jpeg_quality_from_pixels(lr)
            if quality is not None and quality <= FILE_WORDS_MAX_JPEG_QUALITY:
                upscaler = jpeg_upscaler

        outputs: dict[str, np.ndarray] = {"bicubic": bicubic_upscale(lr, scale)}
        start = time.perf_counter()
        outputs["true_caption"] = upscaler.upscale(lr, caption, consistency=kernel).image.astype(np.float32) / 255.0
        seconds = time.perf_counter() - start
        outputs["empty_caption"] = upscaler.upscale(lr, "", consistency=kernel).image.astype(np.float32) / 255.0
        outputs["other_caption"] = upscaler.upscale(lr, other, consistency=kernel).image.astype(np.float32) / 255.0
        outputs["right_words"] = upscaler.upscale(lr, right, consistency=kernel).image.astype(np.float32) / 255.0
        outputs["wrong_words"] = upscaler.upscale(lr, wrong, consistency=kernel).image.astype(np.float32) / 255.0

        variants = {
            name: VariantResult(
                scores=quality_scores(out, hr, border=scale),
                text_image_similarity=text_image_similarity(upscaler, out, caption),
            )
            for name, out in outputs.items()
        }
        results.append(
            ImageResult(
                name=item.name,
                caption=caption,
                other_caption=other,
                right_words=right,
                wrong_words=wrong,
                lr_shape=(lr.shape[0], lr.shape[1]),
                variants=variants,
                seconds=seconds,
                megapixels_per_second=h * w / 1e6 / seconds,
                model=upscaler.description.name,
            )
        )
        if progress is not None:
            progress(index + 1, len(items))
    return BenchReport(
        model=general.description.to_dict(),
        dataset=dataset,
        scale=scale,
        images=results,
        degradation=degradation,
        consistency=consistency,
    )


def routed_note(reports: Sequence[BenchReport]) -> str:
    """The line saying how many of the reports' images another model than the report's upscaled.

    Those are the images :func:`run_benchmark` gave its ``jpeg_upscaler``:
    "N of M images (pixels showing JPEG quality <= 60) upscaled by NAME";
    "" when there are none.
    """
    from napari_textsr.training.captions import FILE_WORDS_MAX_JPEG_QUALITY

    images = [i for r in reports for i in r.images]
    routed = [i for r in reports for i in r.images if i.model and i.model != r.model.get("name", "")]
    if not routed:
        return ""
    return (
        f"{len(routed)} of {len(images)} images (pixels showing JPEG quality <= {FILE_WORDS_MAX_JPEG_QUALITY}) "
        f"upscaled by {', '.join(sorted({i.model for i in routed}))}"
    )


def degradation_table(reports: Sequence[BenchReport]) -> str:
    """One Markdown row per degradation, pooling the reports' images (e.g. both held-out folders).

    Columns: mean PSNR-Y of bicubic and each caption variant, the gains of the
    true and the empty caption over bicubic, right minus wrong degradation
    words, and the worst image against bicubic with the true, empty or other caption.
    """
    by_degradation: dict[str, list[ImageResult]] = {}
    for report in reports:
        by_degradation.setdefault(report.degradation, []).extend(report.images)
    scale = reports[0].scale if reports else 0
    head = ["degradation", "images"] + [v.replace("_", " ") for v in VARIANTS]
    head += ["true - bicubic", "empty - bicubic", "right - wrong words", "worst image vs bicubic"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, images in by_degradation.items():
        pooled = BenchReport(reports[0].model, "pooled", scale, images, degradation=name)
        m = {v: pooled.mean(v, "psnr_y") for v in VARIANTS}
        worst, _ = pooled.worst_gain()
        cells = [name, str(len(images))] + [f"{m[v]:.2f}" for v in VARIANTS]
        cells += [
            f"{m['true_caption'] - m['bicubic']:+.2f}",
            f"{m['empty_caption'] - m['bicubic']:+.2f}",
            f"{m['right_words'] - m['wrong_words']:+.2f}",
            f"{worst:+.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _other_caption(items: Sequence["CaptionedImage"], index: int, caption: str, caption_index: int) -> str:
    """The caption of the next image whose caption differs (a deterministic mismatch)."""
    for step in range(1, len(items)):
        candidate = items[(index + step) % len(items)]
        text = candidate.captions[min(caption_index, len(candidate.captions) - 1)]
        if text != caption:
            return text
    raise ValueError("all images share one caption; a mismatched caption cannot be chosen")
