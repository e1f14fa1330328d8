"""Contrastive pretraining of a small open_clip prompt encoder on captioned images.

Public CLIP weights cannot be fetched everywhere this project runs (and a
ViT-B is heavy on a laptop CPU), so the project trains its own small encoder
(``textsr-clip-s``) on the captioned photographs and the synthetic scenes, with
open_clip's own contrastive loss (``open_clip.loss.ClipLoss``). What matters
for super-resolution is that the *text* features separate what the captions
say ("vertical stripes" vs. "horizontal stripes", "filaments" vs. "puncta"); the
image tower is the teacher that makes them do so.

The saved file is an open_clip state dict in safetensors, loadable by
``PromptEncoder.from_spec(EncoderSpec(arch, path))`` and by
``open_clip.create_model(arch, pretrained=path)``. A JSON record with the
exact command, the data and the retrieval accuracies is written beside it.

With ``degradations`` (a family preset, e.g. ``realistic``), the encoder also
learns words for how an image was taken: each training crop is made small by
a degradation drawn from the family (at ``degradation_scale``) and brought back
to the encoder's size by bicubic interpolation, and its caption is the content
caption joined with words for that degradation ("out of focus", "grainy",
"JPEG-compressed", "sharp": :mod:`napari_textsr.training.captions`). Each image
appears twice in a batch, degraded two ways whose words differ, so only the
degradation words tell the pair apart and the text tower must separate them.
:func:`degradation_retrieval` measures it on held-out images degraded four
named ways, against captions in a phrasing training never uses.

The image tower cannot teach every word: noise is invisible on a 64-px view,
so a "noisy" and a "sharp" caption of the same picture fit it equally well and
the image-text loss pulls them together. ``word_loss`` adds
:func:`paraphrase_loss`, an InfoNCE (van den Oord et al. 2018) on the text
alone: each caption against a paraphrase of itself (same content and
degradation, other words and template), with the batch's other paraphrases,
among them the same content with other degradation words, as negatives.

Retrieval accuracy (image -> text top-1 on a held-out split): each validation
image is matched against every distinct caption of the validation set; a hit
is a best caption that belongs to the image (captions shared by several
synthetic scenes, e.g. "red circles on black", count for all of them).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_textsr._generators import drive
from napari_textsr.durable import atomic_write, load_torch_state, write_text_atomic
from napari_textsr.prompts import (
    EncoderSpec,
    OpenClipModel,
    PromptEncoder,
    register_encoder_configs,
    save_encoder_state,
    state_dict_fingerprint,
)
from napari_textsr.training.data import CaptionedImage, DataError, load_data_source, split_train_val
from napari_textsr.training.runlock import RunLock
from napari_textsr.training.schedule import cosine_factor

if TYPE_CHECKING:  # pragma: no cover
    from napari_textsr.training.degradations import DegradationFamily

__all__ = [
    "PretrainConfig",
    "RetrievalResult",
    "PretrainEvent",
    "PretrainSummary",
    "EncoderTrainingSet",
    "iter_pretrain",
    "pretrain_encoder",
    "retrieval_accuracy",
    "degradation_retrieval",
    "contrastive_loss",
    "paraphrase_loss",
    "encode_text",
    "train_state_path",
]

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class PretrainConfig:
    """Settings of one pretraining run.

    data: captioned folders, or ``synthetic:N[:SEED[:SIZE]]`` entries.
    synthetic: number of synthetic scenes added (seeded by ``seed``), of side ``synthetic_size``.
    image_size: the encoder's input size; fixed by the architecture (its
        positional embedding), so it may only be given to check it.
    init: an EncoderSpec string to start from (e.g. a previous run's file);
        default: random init of ``arch`` seeded by ``seed``.
    crop_min: smallest random crop, as a fraction of the image's short side.
    eval_every: steps between retrieval evaluations (0: only before and after).
    degradations: None, or a degradation family preset (``realistic``,
        ``microscopy``, ...): train on degraded crops with degradation words,
        each image twice per batch (see the module docstring).
    degradation_scale: the down-sampling factor of those degradations (the
        encoder sees 64-px images, so 2 keeps them recognisable).
    word_loss: weight of the paraphrase loss (:func:`paraphrase_loss`; needs
        ``degradations``): each caption against a paraphrase of it (same content,
        same degradation, other words and template), the other captions of the
        batch, among them the same content with other degradation words, as
        negatives. 0 (default): the image-text loss alone.
    resume: continue exactly from ``train_state_path(out)`` (written with every
        checkpoint: weights, optimizer, schedule, random states) if it exists.
    """

    arch: str = "textsr-clip-s"
    out: Path = Path("textsr-clip-s.safetensors")
    data: list[str] = field(default_factory=list)
    synthetic: int = 0
    synthetic_size: int = 256
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int | None = None
    val_fraction: float = 0.1
    crop_min: float = 0.35
    image_size: int | None = None
    init: str | None = None
    seed: int = 0
    num_threads: int | None = None
    checkpoint_every: int = 500
    eval_every: int = 0
    resume: bool = False
    command: str = ""
    degradations: str | None = None
    degradation_scale: int = 2
    word_loss: float = 0.0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.word_loss < 0 or (self.word_loss > 0 and self.degradations is None):
            raise ValueError(
                f"word_loss must be >= 0 and needs degradations (the words to paraphrase), got {self.word_loss} "
                f"with degradations={self.degradations}"
            )
        if self.degradations is not None:
            from napari_textsr.training.degradations import DEGRADATION_PRESETS

            if self.degradations not in DEGRADATION_PRESETS:
                raise ValueError(
                    f"unknown degradation preset {self.degradations!r}; choose from {sorted(DEGRADATION_PRESETS)}"
                )
            if self.batch_size < 4 or self.batch_size % 2:
                raise ValueError("with degradations, batch_size must be even and >= 4 (each image appears twice)")
            if self.degradation_scale not in (2, 4):
                raise ValueError(f"degradation_scale must be 2 or 4, got {self.degradation_scale}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (a contrastive batch needs negatives)")
        if not 0 < self.crop_min <= 1:
            raise ValueError(f"crop_min must be in (0, 1], got {self.crop_min}")


@dataclass
class RetrievalResult:
    """Image -> text top-1 accuracy of ``n_images`` images against ``n_captions`` candidate captions."""

    top1: float
    n_images: int
    n_captions: int
    chance: float
    text_cosine: float | None = None  # attribute groups: mean cosine between the alternative captions

    def __str__(self) -> str:
        text = f"{100 * self.top1:.1f}% top-1 over {self.n_images} images / {self.n_captions} captions (chance {100 * self.chance:.1f}%)"
        if self.text_cosine is not None:
            text += f", alternatives' text cosine {self.text_cosine:.3f}"
        return text


@dataclass
class PretrainEvent:
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    images_per_second: float
    retrieval: dict[str, RetrievalResult] | None = None  # group name ("all", folder, "synthetic") -> result
    checkpoint: Path | None = None


@dataclass
class PretrainSummary:
    out: Path
    steps: int  # steps completed
    final_loss: float
    retrieval_before: dict[str, RetrievalResult]
    retrieval_after: dict[str, RetrievalResult]
    n_train: int
    n_val: int
    seconds: float
    fingerprint: str
    retrieval_step: int = 0  # the step at which retrieval_after was measured


@dataclass
class _Entry:
    image: np.ndarray  # uint8 (H, W, 3): a quarter of float32's memory for a whole data set
    captions: list[str]
    name: str
    group: str


class EncoderTrainingSet:
    """Captioned images held compactly, with the random crops CLIP training uses.

    ``degradation``: a :class:`~napari_textsr.training.degradations.DegradationFamily`
    whose scale divides ``image_size``; then :meth:`random_batch` returns each
    crop twice, degraded two ways with different words in their captions.
    """

    def __init__(
        self,
        entries: Sequence[_Entry],
        image_size: int,
        crop_min: float,
        degradation: "DegradationFamily | None" = None,
    ) -> None:
        if not entries:
            raise DataError("no images to train the encoder on")
        if degradation is not None and image_size % degradation.scale:
            raise ValueError(f"image size {image_size} is not a multiple of the degradation scale {degradation.scale}")
        self.entries = list(entries)
        self.image_size = image_size
        self.crop_min = crop_min
        self.degradation = degradation

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_items(
        cls, items: Sequence[tuple[CaptionedImage, str]], image_size: int, crop_min: float
    ) -> "EncoderTrainingSet":
        return cls([_entry(item, group) for item, group in items], image_size, crop_min)

    def _resize(self, crop: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None] / 255.0
        size = self.image_size
        return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)

    def random_batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        """(B, 3, S, S) float crops in [0, 1] and one caption each; captions in a batch are distinct
        (a duplicate would be a false negative for the contrastive loss). B <= batch_size."""
        images, captions, _ = self._batch(batch_size, rng, paraphrase=False)
        return images, captions

    def random_batch_with_paraphrases(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, list[str], list[str]]:
        """:meth:`random_batch` plus, per caption, a paraphrase: the same content and
        degradation in other words and another template (needs ``degradation``).
        Raises ValueError without a degradation family."""
        if self.degradation is None:
            raise ValueError("paraphrases need a degradation family (their words are what is paraphrased)")
        return self._batch(batch_size, rng, paraphrase=True)

    def _batch(
        self, batch_size: int, rng: np.random.Generator, paraphrase: bool
    ) -> tuple[torch.Tensor, list[str], list[str]]:
        images, captions, paraphrases = [], [], []
        seen: set[str] = set()
        for index in rng.permutation(len(self.entries)):
            entry = self.entries[int(index)]
            caption = entry.captions[int(rng.integers(len(entry.captions)))]
            key = " ".join(caption.split()).lower()
            if key in seen:
                continue
            seen.add(key)
            h, w = entry.image.shape[:2]
            short = min(h, w)
            low = min(short, max(int(self.crop_min * short), self.image_size))
            side = int(rng.integers(low, short + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = self._resize(entry.image[y : y + side, x : x + side])
            if self.degradation is None:
                images.append(crop)
                captions.append(caption)
            else:
                for view, view_caption, degradation in self._degraded_pair(crop, caption, rng):
                    images.append(view)
                    captions.append(view_caption)
                    if paraphrase:
                        paraphrases.append(_paraphrase(caption, view_caption, degradation, rng))
            if len(images) >= batch_size:
                break
        return torch.cat(images), captions, paraphrases

    def _degraded_pair(self, crop: torch.Tensor, caption: str, rng: np.random.Generator):
        """Two views of ``crop`` (1, 3, S, S) made small two ways whose words differ: (view, caption, degradation)."""
        from napari_textsr.training.captions import TRAIN_TEMPLATES, compose_caption, describe_degradation

        assert self.degradation is not None
        first = self.degradation.draw(rng)
        second = self.degradation.draw(rng)
        for _ in range(20):  # the same kind of degradation twice would make two captions alike
            if _said(first) != _said(second):
                break
            second = self.degradation.draw(rng)
        for degradation in (first, second):
            generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            small = degradation(crop, generator=generator)
            view = F.interpolate(small, size=crop.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
            template = TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]
            yield view, compose_caption(caption, describe_degradation(degradation, rng), template), degradation

    def centre_crops(self) -> torch.Tensor:
        """(N, 3, S, S): each image's central square, resized (the validation view)."""
        crops = []
        for entry in self.entries:
            h, w = entry.image.shape[:2]
            side = min(h, w)
            y, x = (h - side) // 2, (w - side) // 2
            crops.append(self._resize(entry.image[y : y + side, x : x + side]))
        return torch.cat(crops)


def _paraphrase(content: str, caption: str, degradation, rng: np.random.Generator) -> str:
    """``content`` and ``degradation`` in words and a template drawn afresh, differing from ``caption``
    where the vocabulary allows (a few redraws)."""
    from napari_textsr.training.captions import TRAIN_TEMPLATES, compose_caption, describe_degradation

    words_rng = np.random.default_rng(int(rng.integers(2**62)))
    other = caption
    for _ in range(8):
        template = TRAIN_TEMPLATES[int(words_rng.integers(len(TRAIN_TEMPLATES)))]
        other = compose_caption(content, describe_degradation(degradation, words_rng), template)
        if other != caption:
            break
    return other


def _said(degradation) -> frozenset[str]:
    """The properties of a degradation that its words name (blur, noise, JPEG, or clean)."""
    from napari_textsr.training.captions import degradation_properties

    return frozenset(degradation_properties(degradation)) - {"binned", "aliased"}


def _open_clip():
    """open_clip, imported the way this package must (torchvision shim, project configs)."""
    register_encoder_configs()
    import open_clip

    return open_clip


def _clip_input(images: torch.Tensor, clip: OpenClipModel) -> torch.Tensor:
    """[0, 1] images at the model's size -> normalised as ``PromptEncoder.encode_images`` does."""
    mean = torch.tensor(getattr(clip.visual, "image_mean", None) or _OPENAI_MEAN, dtype=images.dtype)
    std = torch.tensor(getattr(clip.visual, "image_std", None) or _OPENAI_STD, dtype=images.dtype)
    return (images - mean[:, None, None]) / std[:, None, None]


def encode_text(clip: OpenClipModel, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``clip.encode_text`` on token ids (B, L), skipping the padding after the last real token.

    The text tower is causal and pools at the end-of-text token, so positions
    after it cannot change the result: running only up to the longest caption
    gives the same features (to float rounding) about 3x faster than all 77.
    Other towers fall back to ``encode_text``.
    """
    causal = getattr(clip, "attn_mask", None) is not None and hasattr(clip, "token_embedding")
    if not causal or getattr(clip, "text_pool_type", "argmax") not in ("argmax", "eos"):
        return clip.encode_text(text, normalize=normalize)
    from open_clip.transformer import text_global_pool

    used = (text != 0).int()
    length = int((used * torch.arange(1, text.shape[1] + 1)).max())
    text = text[:, :length]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(text).to(cast) + clip.positional_embedding[:length].to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = text_global_pool(x, text, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if clip.text_projection is not None:
        x = clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Module) else x @ clip.text_projection
    return F.normalize(x, dim=-1) if normalize else x


def contrastive_loss(
    clip: OpenClipModel, tokenizer, images: torch.Tensor, captions: Sequence[str], loss_fn=None
) -> torch.Tensor:
    """open_clip's symmetric InfoNCE (``ClipLoss``) for a batch of (B, 3, S, S) images in [0, 1] and B captions."""
    loss_fn = loss_fn or _open_clip().loss.ClipLoss()
    text = tokenizer([" ".join(c.split()) for c in captions])
    image_features = clip.encode_image(_clip_input(images, clip), normalize=True)
    text_features = encode_text(clip, text)
    return loss_fn(image_features, text_features, clip.logit_scale.exp())


PARAPHRASE_TEMPERATURE = 0.03  # sharper than the image-text loss (logit scale 17.6: 1/0.057), which it must outweigh


def paraphrase_loss(
    clip: OpenClipModel, tokenizer, captions: Sequence[str], paraphrases: Sequence[str]
) -> torch.Tensor:
    """Symmetric InfoNCE between B captions and their B paraphrases (text tower only).

    Caption i's positive is paraphrase i (same content and degradation, other
    words); every other paraphrase is a negative, among them the same content
    with another degradation's words, so the text embedding must move with the
    degradation words (a cosine of 0.99 between "..., grainy" and "..., sharp"
    cannot pay) and not with their phrasing. Temperature :data:`PARAPHRASE_TEMPERATURE`.
    Returns a scalar tensor.
    """
    if len(captions) != len(paraphrases) or len(captions) < 2:
        raise ValueError(f"need >= 2 captions and as many paraphrases, got {len(captions)} and {len(paraphrases)}")
    a = encode_text(clip, tokenizer([" ".join(c.split()) for c in captions]))
    b = encode_text(clip, tokenizer([" ".join(c.split()) for c in paraphrases]))
    logits = a @ b.T / PARAPHRASE_TEMPERATURE
    target = torch.arange(len(captions))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def retrieval_accuracy(
    clip: OpenClipModel, tokenizer, data: EncoderTrainingSet, chunk: int = 128, degradation_scale: int = 2
) -> dict[str, RetrievalResult]:
    """Image -> text top-1 on ``data`` (centre crops), overall ("all") and per group, plus
    ``attribute:<family>`` results for synthetic scenes (see :func:`_attribute_retrieval`)
    and ``degradation words`` (:func:`degradation_retrieval` at ``degradation_scale``)."""
    was_training = clip.training
    clip.eval()
    try:
        images = data.centre_crops()
        image_features = torch.cat(
            [
                clip.encode_image(_clip_input(images[i : i + chunk], clip), normalize=True)
                for i in range(0, len(images), chunk)
            ]
        )
        candidates = list(dict.fromkeys(" ".join(c.split()) for e in data.entries for c in e.captions))
        text_features = torch.cat(
            [encode_text(clip, tokenizer(candidates[i : i + chunk])) for i in range(0, len(candidates), chunk)]
        )
        attributes = _attribute_retrieval(clip, tokenizer, data, image_features)
    finally:
        clip.train(was_training)
    best = (image_features @ text_features.T).argmax(dim=1).tolist()
    hits, chance = [], []
    for entry, b in zip(data.entries, best):
        own = {" ".join(c.split()) for c in entry.captions}
        hits.append(candidates[b] in own)
        chance.append(len(own) / len(candidates))
    groups = {"all": list(range(len(data.entries)))}
    for i, entry in enumerate(data.entries):
        groups.setdefault(entry.group, []).append(i)
    results = {
        name: RetrievalResult(
            top1=float(np.mean([hits[i] for i in idx])),
            n_images=len(idx),
            n_captions=len(candidates),
            chance=float(np.mean([chance[i] for i in idx])),
        )
        for name, idx in groups.items()
    }
    results.update(attributes)
    results["degradation words"] = degradation_retrieval(clip, tokenizer, data, degradation_scale)
    return results


DEGRADATION_RETRIEVAL_WAYS = ("blur", "noise", "jpeg", "bicubic-aa")  # bicubic-aa: "sharp and clean"


@torch.no_grad()
def degradation_retrieval(clip: OpenClipModel, tokenizer, data: EncoderTrainingSet, scale: int = 2) -> RetrievalResult:
    """Can the encoder tell from words how an image was made small?

    Each held-out image's centre crop (the encoder's size) is made small ``scale``
    times in each of four named ways (:data:`~napari_textsr.training.degradations.NAMED_DEGRADATIONS`:
    blur sigma 1.3, noise sigma 5/255, JPEG quality 60, antialiased bicubic) and
    brought back by bicubic interpolation; each view is matched against its own
    content caption joined with the four held-out phrases
    (:data:`~napari_textsr.training.captions.HELD_OUT_PHRASES`: "soft and out of
    focus", "grainy and noisy", "blocky and JPEG-compressed", "sharp and clean",
    in a template training never uses). top1: share of views whose best caption
    names their degradation (chance 1/4); text_cosine: mean cosine between the
    four captions' text embeddings (1.0: the words change nothing).
    """
    from napari_textsr.training.captions import HELD_OUT_PHRASES, held_out_caption
    from napari_textsr.training.degradations import NAMED_DEGRADATIONS

    phrases = [HELD_OUT_PHRASES[w if w != "bicubic-aa" else "clean"] for w in DEGRADATION_RETRIEVAL_WAYS]
    was_training = clip.training
    clip.eval()
    try:
        crops = data.centre_crops()
        hits, cosines = [], []
        for index, (entry, crop) in enumerate(zip(data.entries, crops)):
            views = []
            for way in DEGRADATION_RETRIEVAL_WAYS:
                generator = torch.Generator().manual_seed(index)
                small = NAMED_DEGRADATIONS[way](scale)(crop[None], generator=generator)
                views.append(
                    F.interpolate(small, size=crop.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
                )
            image_features = clip.encode_image(_clip_input(torch.cat(views), clip), normalize=True)
            text = encode_text(clip, tokenizer([held_out_caption(entry.captions[0], p) for p in phrases]))
            hits += ((image_features @ text.T).argmax(dim=1) == torch.arange(len(phrases))).tolist()
            cosine = text @ text.T
            cosines.append(float(cosine[~torch.eye(len(phrases), dtype=torch.bool)].mean()))
    finally:
        clip.train(was_training)
    return RetrievalResult(
        top1=float(np.mean(hits)), n_images=len(hits), n_captions=len(phrases), chance=1 / len(phrases),
        text_cosine=float(np.mean(cosines)),
    )  # fmt: skip


@torch.no_grad()
def _attribute_retrieval(
    clip: OpenClipModel, tokenizer, data: EncoderTrainingSet, image_features: torch.Tensor
) -> dict[str, RetrievalResult]:
    """Synthetic scenes against their own caption with the identity swapped
    ("red circles" vs "red squares", ...): does the encoder know what x8 destroys?
    Keys ``attribute:<family>``; also the mean cosine between the alternatives'
    text embeddings (1.0 would mean the text tower ignores the identity word)."""
    from napari_textsr.synthetic import caption_alternatives

    by_family: dict[str, tuple[list[bool], list[float], int]] = {}
    for entry, feature in zip(data.entries, image_features):
        found = caption_alternatives(entry.captions[0]) if entry.group == "synthetic" else None
        if found is None:
            continue
        family, alternatives, index = found
        text = encode_text(clip, tokenizer(alternatives))
        cosine = text @ text.T
        off_diagonal = cosine[~torch.eye(len(alternatives), dtype=torch.bool)]
        hits, cosines, _ = by_family.setdefault(family, ([], [], len(alternatives)))
        hits.append(int((feature @ text.T).argmax()) == index)
        cosines.append(float(off_diagonal.mean()))
    return {
        f"attribute:{family}": RetrievalResult(
            top1=float(np.mean(hits)),
            n_images=len(hits),
            n_captions=n,
            chance=1.0 / n,
            text_cosine=float(np.mean(cosines)),
        )
        for family, (hits, cosines, n) in by_family.items()
    }


def _entry(item: CaptionedImage, group: str, name: str | None = None) -> _Entry:
    return _Entry(np.round(item.image * 255).astype(np.uint8), list(item.captions), name or item.name, group)


def _load_entries(config: PretrainConfig) -> list[_Entry]:
    """config.data and config.synthetic as compact entries, converted one image at a time."""
    from napari_textsr.synthetic import iter_synthetic

    entries: list[_Entry] = []
    for spec in config.data:
        if spec.startswith("synthetic:"):
            entries += [_entry(item, "synthetic") for item in load_data_source(spec)]
        else:
            group = Path(spec).name
            # The folder name keeps items of different folders apart (both might hold "1.png").
            entries += [_entry(item, group, f"{group}/{item.name}") for item in load_data_source(spec)]
    if config.synthetic:
        entries += [
            _entry(item, "synthetic") for item in iter_synthetic(config.synthetic, config.seed, config.synthetic_size)
        ]
    if not entries:
        raise DataError("no training data: give --data folders and/or --synthetic N")
    return entries


def _build_sets(
    config: PretrainConfig, items: Sequence[tuple[CaptionedImage, str]] | None, image_size: int
) -> tuple[EncoderTrainingSet, EncoderTrainingSet]:
    entries = [_entry(item, group) for item, group in items] if items is not None else _load_entries(config)
    train, val = split_train_val(entries, config.val_fraction, seed=config.seed)  # by name, as for SR training
    if not val:
        raise DataError("the validation split is empty: give more images or a larger val_fraction")
    degradation = None
    if config.degradations is not None:
        from napari_textsr.training.degradations import DegradationFamily

        degradation = DegradationFamily.preset_family(config.degradations, config.degradation_scale)
    return (
        EncoderTrainingSet(train, image_size, config.crop_min, degradation),
        EncoderTrainingSet(val, image_size, config.crop_min),
    )


def _optimizer(clip: OpenClipModel, config: PretrainConfig) -> torch.optim.Optimizer:
    # open_clip's rule: no weight decay on gains, biases, norms and the temperature.
    def exclude(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in clip.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": config.weight_decay},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
        foreach=True,  # one fused update over all tensors: noticeably faster on the CPU
    )


_PRETRAIN_STATE_KEYS = {
    "arch",
    "steps",
    "seed",
    "step",
    "loss",
    "model",
    "optimizer",
    "scheduler",
    "numpy_rng",
    "torch_rng",
    "retrieval_before",
    "retrieval",
    "retrieval_step",
}


def train_state_path(out: Path) -> Path:
    """Where a run writing ``out`` keeps what an exact resume needs."""
    return out.with_name(out.stem + ".train_state.pt")


def iter_pretrain(
    config: PretrainConfig,
    items: Sequence[tuple[CaptionedImage, str]] | None = None,
    stop: threading.Event | None = None,
) -> Generator[PretrainEvent, None, PretrainSummary]:
    """Train; yields an event per step (with retrieval results at the start, the end and
    every ``eval_every`` steps) and returns a :class:`PretrainSummary`.

    ``items``: (image, group name) pairs instead of ``config.data``/``synthetic``.
    The weights go to ``config.out`` (atomically, also every ``checkpoint_every``
    steps) and a JSON record to ``config.out`` with suffix ``.json``.
    ``stop``: once set, the current step finishes, a checkpoint (weights,
    record, train state) is written and the run ends (what SIGTERM does in the CLI).
    While it runs, ``<out>.lock`` names this process and a second run writing the
    same ``out`` is refused (:class:`~napari_textsr.training.runlock.RunLockedError`).
    """
    if config.out.is_dir():
        raise ValueError(f"--out {config.out} is a folder; give the weights file to write (.safetensors)")
    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    lock = RunLock(config.out.with_name(config.out.name + ".lock"), config.command)
    try:
        lock.acquire()
        return (yield from _pretrain(config, items, stop))
    finally:
        lock.release()
        torch.set_num_threads(previous_threads)


def _pretrain(
    config: PretrainConfig, items: Sequence[tuple[CaptionedImage, str]] | None, stop: threading.Event | None = None
) -> Generator[PretrainEvent, None, PretrainSummary]:
    open_clip = _open_clip()
    start = time.perf_counter()
    spec = EncoderSpec.parse(config.init) if config.init else EncoderSpec(config.arch, "none")
    if spec.arch != config.arch:
        raise ValueError(f"--init is a {spec.arch} encoder but --arch is {config.arch}")
    encoder = PromptEncoder.from_spec(spec, seed=config.seed)
    clip, tokenizer = encoder.clip, encoder.tokenizer
    image_size = encoder.image_size
    if config.image_size is not None and config.image_size != image_size:
        raise ValueError(
            f"{config.arch} takes {image_size}x{image_size} images (its positional embedding fixes the size, "
            f"and the saved weights must load as {config.arch}); got image_size={config.image_size}"
        )
    clip.requires_grad_(True).train()
    train_set, val_set = _build_sets(config, items, image_size)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    optimizer = _optimizer(clip, config)
    warmup = config.warmup_steps if config.warmup_steps is not None else max(1, config.steps // 20)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, config.steps, warmup))
    loss_fn = open_clip.loss.ClipLoss()
    state_path = train_state_path(config.out)
    first_step, loss_value = 1, float("nan")
    if config.resume and state_path.is_file():
        state = load_torch_state(state_path)
        if not isinstance(state, dict) or not _PRETRAIN_STATE_KEYS <= set(state):
            raise ValueError(f"{state_path} is not a pretrain-encoder training state")
        settings = (
            state.get("degradations"),
            state.get("degradation_scale", config.degradation_scale),
            state.get("word_loss", 0.0),
        )
        if (
            state["steps"] != config.steps or state["arch"] != config.arch or state["seed"] != config.seed
            or settings != (config.degradations, config.degradation_scale, config.word_loss)
        ):  # fmt: skip
            raise ValueError(
                f"{state_path} is from a run with steps={state['steps']}, arch={state['arch']}, seed={state['seed']}, "
                f"degradations={settings[0]} x{settings[1]}, word_loss={settings[2]}; "
                "resume with the same settings or start afresh without --resume"
            )
        clip.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        first_step, loss_value = state["step"] + 1, state["loss"]
        before = {k: RetrievalResult(**v) for k, v in state["retrieval_before"].items()}
        retrieval = {k: RetrievalResult(**v) for k, v in state["retrieval"].items()}
        retrieval_step = state["retrieval_step"]
    else:
        before = retrieval_accuracy(clip, tokenizer, val_set, degradation_scale=config.degradation_scale)
        retrieval, retrieval_step = before, 0
    yield PretrainEvent(
        first_step - 1, config.steps, loss_value, optimizer.param_groups[0]["lr"], 0.0, retrieval=before
    )

    config.out.parent.mkdir(parents=True, exist_ok=True)
    seen, tick = 0, time.perf_counter()

    def save_train_state(step: int) -> None:
        state = {
            "arch": config.arch,
            "steps": config.steps,
            "seed": config.seed,
            "step": step,
            "loss": loss_value,
            "model": clip.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "retrieval_before": {k: asdict(v) for k, v in before.items()},
            "retrieval": {k: asdict(v) for k, v in retrieval.items()},
            "retrieval_step": retrieval_step,
            "degradations": config.degradations,
            "degradation_scale": config.degradation_scale,
            "word_loss": config.word_loss,
        }
        with atomic_write(state_path) as tmp:
            torch.save(state, tmp)

    def summary(step: int) -> PretrainSummary:
        return PretrainSummary(
            out=config.out,
            steps=step,
            final_loss=loss_value,
            retrieval_before=before,
            retrieval_after=retrieval,
            n_train=len(train_set),
            n_val=len(val_set),
            seconds=time.perf_counter() - start,
            fingerprint=state_dict_fingerprint(clip.state_dict()),
            retrieval_step=retrieval_step,
        )

    for step in range(first_step, config.steps + 1):
        if config.word_loss > 0:
            images, captions, paraphrases = train_set.random_batch_with_paraphrases(config.batch_size, rng)
        else:
            (images, captions), paraphrases = train_set.random_batch(config.batch_size, rng), []
        loss = contrastive_loss(clip, tokenizer, images, captions, loss_fn)
        if paraphrases:
            loss = loss + config.word_loss * paraphrase_loss(clip, tokenizer, captions, paraphrases)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # CLIP's temperature cap (logit scale <= 100)
            clip.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss.detach())
        seen += len(captions)
        evaluate = step == config.steps or (config.eval_every and step % config.eval_every == 0)
        if evaluate:
            retrieval, retrieval_step = (
                retrieval_accuracy(clip, tokenizer, val_set, degradation_scale=config.degradation_scale),
                step,
            )
        checkpoint = None
        stopping = stop is not None and stop.is_set() and step < config.steps
        if stopping or step == config.steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
            # Weights and record together, so a run killed later still leaves a described checkpoint.
            save_encoder_state(clip, config.out)
            _write_record(config, summary(step))
            save_train_state(step)
            checkpoint = config.out
        elapsed = time.perf_counter() - tick
        yield PretrainEvent(
            step,
            config.steps,
            loss_value,
            optimizer.param_groups[0]["lr"],
            seen / elapsed if elapsed > 0 else 0.0,
            retrieval=retrieval if evaluate else None,
            checkpoint=checkpoint,
        )
        if stopping:
            return summary(step)
    return summary(config.steps)


def _write_record(config: PretrainConfig, summary: PretrainSummary) -> Path:
    record = {
        "arch": config.arch,
        "weights": str(summary.out),
        "fingerprint": summary.fingerprint,
        "command": config.command,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "n_train": summary.n_train,
        "n_val": summary.n_val,
        "steps": summary.steps,
        "finished": summary.steps == config.steps,
        "final_loss": summary.final_loss,
        "seconds": round(summary.seconds, 1),
        "retrieval_before": {k: asdict(v) for k, v in summary.retrieval_before.items()},
        "retrieval_after": {k: asdict(v) for k, v in summary.retrieval_after.items()},
        "retrieval_after_step": summary.retrieval_step,
    }
    return write_text_atomic(summary.out.with_suffix(".json"), json.dumps(record, indent=2))


def pretrain_encoder(
    config: PretrainConfig,
    items: Sequence[tuple[CaptionedImage, str]] | None = None,
    progress: bool = True,
    log=print,
    stop: threading.Event | None = None,
) -> PretrainSummary:
    """Run :func:`iter_pretrain` to the end (or until ``stop`` is set) with a tqdm progress bar; returns the summary."""
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, desc=f"pretrain {config.arch}", unit="step", disable=not progress)
    run = iter_pretrain(config, items, stop)
    try:
        first = next(run)  # the state before the first step: retrieval before training
        if first.step:
            log(f"resuming at step {first.step} of {first.total_steps}")
            bar.update(first.step)
        for name, result in (first.retrieval or {}).items():
            log(f"retrieval before ({name}): {result}")

        def show(event) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_second:.0f}")
            if event.retrieval and event.step < event.total_steps:
                bar.write(f"step {event.step}: retrieval {event.retrieval['all']}")

        summary: PretrainSummary = drive(run, show)
    finally:
        bar.close()
    for name, result in summary.retrieval_after.items():
        log(f"retrieval after ({name}): {result}")
    log(
        f"saved {summary.out} (+ {summary.out.with_suffix('.json').name}); load with EncoderSpec({config.arch!r}, {str(summary.out)!r})"
    )
    return summary
