"""Training captions that say how the image was taken, and caption dropout.

A training sample's caption is made from its content caption (what the image
shows, from ``captions.csv`` or a layer) and the degradation drawn for it
(:class:`~napari_textsr.training.degradations.Degradation`): a plain-English
description of the degradation ("out of focus", "grainy", "JPEG-compressed",
"sharp") is joined to the content caption in varied phrasings. With the rates
of :class:`CaptionPolicy` the sample gets the content caption plus the
degradation words, the content caption alone, the degradation words alone, or
the empty caption (caption dropout, as in classifier-free guidance: Ho &
Salimans 2022), so the empty caption is a true unconditional prompt and no
caption damages an image.

With rate ``p_degradation_as_content`` a sample whose degradation would be put
into words (blur, noise, JPEG) is instead captioned as clean and its target
keeps the degradation (:meth:`~napari_textsr.training.degradations.Degradation.content_target`):
the blur and noise are then part of the scene. ``as_content_kinds`` limits
which parts may be called content (``("blur",)``: a blurred and noisy sample
is then captioned "grainy", its target blurred and free of noise). So the words, not only the
pixels, decide whether grain and softness are removed ("grainy", "out of
focus") or kept as detail ("sharp", "clean"), as a noise-level input does in
FFDNet (Zhang et al. 2018). The empty caption and the content caption alone
still always train on the true target.

With rate ``p_other_content`` a sample that would carry its content caption
carries another training image's instead, its target still its own true HR:
a content caption can be wrong (a user's guess, a caption pasted onto the
wrong image), and a model that only ever saw true captions draws what the
caption says even where the pixels disagree. This is the text-side analogue
of the mismatched-text pairs of text-to-image GAN discriminators (Reed et al.
2016), used here as training data for the generator.

:data:`TRAIN_VOCABULARY` lists the words training uses for each property of a
degradation (:func:`degradation_properties`); :data:`HELD_OUT_TEMPLATE` and
:data:`HELD_OUT_PHRASES` are phrasings training never uses, for evaluating
whether the words, not memorised strings, carry the meaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from napari_textsr.training.degradations import CONTENT_KINDS, _check_content_kinds

if TYPE_CHECKING:  # pragma: no cover
    from napari_textsr.training.degradations import Degradation

__all__ = [
    "CaptionPolicy",
    "CaptionDraw",
    "TRAIN_VOCABULARY",
    "TRAIN_TEMPLATES",
    "DEGRADATION_ONLY_TEMPLATES",
    "HELD_OUT_TEMPLATE",
    "HELD_OUT_PHRASES",
    "BLUR_SIGMA_WORTH_SAYING",
    "degradation_properties",
    "describe_degradation",
    "compose_caption",
    "held_out_caption",
    "says_how_taken",
    "caption_names",
    "caption_with_file_words",
    "caption_without_file_words",
    "FILE_WORDS_MAX_JPEG_QUALITY",
    "JPEG_FILE_WORDS",
    "BINNED_FILE_WORDS",
]

# Thresholds above which a property of the drawn degradation is put into words.
BLUR_SIGMA_WORTH_SAYING = 1.0  # HR px (largest axis)
NOISE_SIGMA_WORTH_SAYING = 2.0 / 255  # Gaussian sigma, intensity units
POISSON_PEAK_WORTH_SAYING = 300.0  # photons at intensity 1 (fewer = noisier)
JPEG_QUALITY_WORTH_SAYING = 85

# Property -> words used in training (one is drawn per sample).
TRAIN_VOCABULARY: dict[str, tuple[str, ...]] = {
    "blur": ("blurry", "out of focus", "soft", "blurred", "defocused", "soft focus"),
    "noise": ("noisy", "grainy", "low light", "with sensor noise", "speckled with noise", "noisy low-light"),
    "jpeg": ("JPEG-compressed", "blocky", "a compressed video frame", "with compression artifacts", "low-quality JPEG"),
    "binned": ("binned", "pixelated", "coarse pixels"),
    "aliased": ("aliased", "jagged", "with jagged edges"),
    "clean": ("sharp", "clean", "crisp", "in focus", "sharp and clean"),
}
# Content + degradation words ({content} and {degradation} filled in).
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{content}, {degradation}",
    "{degradation}: {content}",
    "{content}. {degradation}.",
    "{content} ({degradation})",
)
DEGRADATION_ONLY_TEMPLATES: tuple[str, ...] = ("{degradation}", "a {degradation} image", "{degradation} photo")

# Never drawn in training: a template and word combinations of its own.
HELD_OUT_TEMPLATE = "{content}; the picture is {degradation}"
HELD_OUT_PHRASES: dict[str, str] = {
    "blur": "soft and out of focus",
    "noise": "grainy and noisy",
    "jpeg": "blocky and JPEG-compressed",
    "clean": "sharp and clean",
}


@dataclass(frozen=True)
class CaptionDraw:
    """One sample's caption, and whether its target keeps the degradation.

    kept: the kinds of degradation (of
    :data:`~napari_textsr.training.degradations.CONTENT_KINDS`) the caption
    calls part of the scene ("sharp", "clean"); the sample's HR target is then
    :meth:`~napari_textsr.training.degradations.Degradation.content_target`
    with these kinds (for an empty caption, only ever ``("blur",)``: see
    ``CaptionPolicy.p_empty_keeps_blur``). Empty: the target is the true HR.
    """

    caption: str
    kept: tuple[str, ...] = ()

    @property
    def degradation_in_target(self) -> bool:
        return bool(self.kept)


# The four caption forms (they sum to 1); p_degradation_as_content is a rate within the worded forms.
_FORM_RATES = ("p_content_and_degradation", "p_content", "p_degradation", "p_empty")
_RATES = (*_FORM_RATES, "p_degradation_as_content", "p_empty_keeps_blur", "p_other_content")
# Settings recorded only when set, so records made before they existed stay as they were.
_RECORDED_WHEN_SET = ("p_degradation_as_content", "p_empty_keeps_blur", "p_other_content")


@dataclass
class CaptionPolicy:
    """Rates at which a training sample's caption takes each form (the four forms sum to 1).

    p_content_and_degradation: content caption joined with degradation words.
    p_content: content caption alone.
    p_degradation: degradation words alone.
    p_empty: the empty caption (caption dropout).
    p_degradation_as_content: of the samples with degradation words whose
        degradation has blur, noise or JPEG worth saying, the fraction captioned
        as clean with that degradation kept in the target (see the module
        docstring); 0 (the default) never does.
    as_content_kinds: which kinds of degradation those samples keep, of
        :data:`~napari_textsr.training.degradations.CONTENT_KINDS` (default
        all; noise and JPEG only together); the others stay in the words and
        leave the target.
    p_empty_keeps_blur: of the empty-caption samples whose degradation blurs
        (any sigma), the fraction whose target keeps that blur. Without a
        caption, soft scene content (shallow depth of field, smooth petals)
        and optical blur look alike; at 0 (the default) the unconditional
        model sharpens both as far as the training mixture pays, which costs
        soft scenes on sharp inputs. Above 0 it sharpens less unless the
        caption says "out of focus".
    p_other_content: of the samples whose caption carries a content caption
        (content and degradation words, or content alone), the fraction that
        carries another training image's content caption instead, the target
        unchanged, so that a wrong content caption costs little (issue 9: no
        held-out image more than 0.3 dB below bicubic with another image's
        caption). 0 (the default) never does.
    Raises ValueError for rates outside [0, 1], forms not summing to 1 or
    unknown kinds.
    """

    p_content_and_degradation: float = 0.45
    p_content: float = 0.2
    p_degradation: float = 0.15
    p_empty: float = 0.2
    p_degradation_as_content: float = 0.0
    as_content_kinds: tuple[str, ...] = CONTENT_KINDS
    p_empty_keeps_blur: float = 0.0
    p_other_content: float = 0.0

    def __post_init__(self) -> None:
        self.as_content_kinds = _check_content_kinds(self.as_content_kinds)
        if not self.as_content_kinds:
            raise ValueError(f"as_content_kinds must name at least one of {', '.join(CONTENT_KINDS)}")
        rates = [float(getattr(self, name)) for name in _RATES]
        outside = [f"{name}={r}" for name, r in zip(_RATES, rates) if not 0.0 <= r <= 1.0]
        if outside:
            raise ValueError(f"caption rates must be in [0, 1], got {', '.join(outside)}")
        forms = [float(getattr(self, name)) for name in _FORM_RATES]
        if abs(sum(forms) - 1.0) > 1e-6:
            raise ValueError(f"caption rates must sum to 1, got {sum(forms):.4f} ({forms})")
        for name, r in zip(_RATES, rates):
            setattr(self, name, r)

    @property
    def form_rates(self) -> tuple[float, float, float, float]:
        """The four form rates in the order of ``--caption-rates`` (FULL, CONTENT, WORDS, EMPTY)."""
        return tuple(float(getattr(self, name)) for name in _FORM_RATES)  # type: ignore[return-value]

    def with_form_rates(self, rates: "tuple[float, float, float, float] | list[float]") -> "CaptionPolicy":
        """This policy with the four form rates (FULL, CONTENT, WORDS, EMPTY) replaced, its other settings kept.

        Raises ValueError for other than four rates, or rates this class refuses.
        """
        if len(rates) != len(_FORM_RATES):
            raise ValueError(f"expected {len(_FORM_RATES)} caption form rates ({', '.join(_FORM_RATES)}), got {rates}")
        full, content, words, empty = (float(r) for r in rates)
        return replace(self, p_content_and_degradation=full, p_content=content, p_degradation=words, p_empty=empty)

    @classmethod
    def content_only(cls) -> "CaptionPolicy":
        """Every sample keeps its content caption (how runs before the family were trained)."""
        return cls(p_content_and_degradation=0.0, p_content=1.0, p_degradation=0.0, p_empty=0.0)

    @property
    def uses_randomness(self) -> bool:
        return self.p_content < 1.0

    def draw(
        self,
        content: str,
        degradation: "Degradation",
        rng: np.random.Generator,
        others: Sequence[str] = (),
        own: Sequence[str] = (),
    ) -> str:
        """The caption of one sample (see :meth:`draw_sample`)."""
        return self.draw_sample(content, degradation, rng, others, own).caption

    def draw_sample(
        self,
        content: str,
        degradation: "Degradation",
        rng: np.random.Generator,
        others: Sequence[str] = (),
        own: Sequence[str] = (),
    ) -> CaptionDraw:
        """The caption of one sample and whether its target keeps the degradation.

        others: the content captions of the training images, from which
        ``p_other_content`` draws; own: every caption of this sample's image
        (an image may have several). ``content``, ``own`` and empty captions
        are skipped; with none left the sample keeps its own.

        Consumes draws from ``rng`` only when ``uses_randomness``, and the same
        number whatever ``p_degradation_as_content``, ``p_empty_keeps_blur``
        and ``p_other_content`` are (those choices and the words come from
        generators seeded by one draw), so runs resume exactly and a run
        without them draws what it drew before they existed.
        """
        if not self.uses_randomness:
            return CaptionDraw(content)
        u, template_u, words_seed = rng.random(), rng.random(), int(rng.integers(2**31))
        words_rng = np.random.default_rng(words_seed)
        if self.p_other_content > 0 and content:
            content = self._other_content(content, others, own, np.random.default_rng([words_seed, 1]))
        edges = np.cumsum([self.p_content_and_degradation, self.p_content, self.p_degradation])
        worded = (u < edges[0] and content) or (edges[1] <= u < edges[2])
        if not worded:
            if u < edges[2]:
                return CaptionDraw(content)
            keeps_blur = degradation.blur_sigma > 0 and words_rng.random() < self.p_empty_keeps_blur
            return CaptionDraw("", kept=("blur",) if keeps_blur else ())
        as_content = (
            self.p_degradation_as_content > 0
            and any(k in self.as_content_kinds for k in degradation_properties(degradation))
            and words_rng.random() < self.p_degradation_as_content
        )
        kept = self.as_content_kinds if as_content else ()
        phrase = describe_degradation(degradation.without(kept), words_rng)
        if u < edges[0]:
            caption = compose_caption(content, phrase, TRAIN_TEMPLATES[int(template_u * len(TRAIN_TEMPLATES))])
        else:
            template = DEGRADATION_ONLY_TEMPLATES[int(template_u * len(DEGRADATION_ONLY_TEMPLATES))]
            caption = template.format(degradation=phrase)
        return CaptionDraw(caption, kept=kept)

    def _other_content(self, content: str, others: Sequence[str], own: Sequence[str], rng: np.random.Generator) -> str:
        """``content``, or at rate ``p_other_content`` one of ``others`` not in ``own`` (uniformly)."""
        if rng.random() >= self.p_other_content:
            return content
        mine = {content, *own}
        candidates = [c for c in others if c and c not in mine]
        return candidates[int(rng.integers(len(candidates)))] if candidates else content

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = asdict(self)
        for name in _RECORDED_WHEN_SET:
            if not values[name]:  # records made before it existed stay as they were
                del values[name]
        if self.as_content_kinds == CONTENT_KINDS:
            del values["as_content_kinds"]
        else:
            values["as_content_kinds"] = list(self.as_content_kinds)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CaptionPolicy":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown caption policy setting(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if "as_content_kinds" in values:
            values["as_content_kinds"] = tuple(values["as_content_kinds"])
        return cls(**values)


def degradation_properties(degradation: "Degradation") -> list[str]:
    """Which words-worthy properties a pipeline has: keys of :data:`TRAIN_VOCABULARY`.

    ``clean`` when it has none of blur, noise and JPEG above the thresholds
    (it may still be ``binned`` or ``aliased``).
    """
    props = []
    if degradation.max_blur_sigma >= BLUR_SIGMA_WORTH_SAYING:
        props.append("blur")
    peak = degradation.noise_poisson_peak
    if degradation.noise_gaussian_sigma >= NOISE_SIGMA_WORTH_SAYING or (
        peak is not None and peak <= POISSON_PEAK_WORTH_SAYING
    ):
        props.append("noise")
    if degradation.jpeg_quality is not None and degradation.jpeg_quality <= JPEG_QUALITY_WORTH_SAYING:
        props.append("jpeg")
    if not props:
        props.append("clean")
    if degradation.scale > 1 and degradation.resize == "area":
        props.append("binned")
    elif degradation.scale > 1 and degradation.resize in ("bicubic", "bilinear"):
        props.append("aliased")
    return props


def _join(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe_degradation(degradation: "Degradation", rng: np.random.Generator) -> str:
    """Plain-English words for ``degradation``, one drawn per property, in random order."""
    props = degradation_properties(degradation)
    words = [TRAIN_VOCABULARY[p][int(rng.integers(len(TRAIN_VOCABULARY[p])))] for p in props]
    order = rng.permutation(len(words))
    return _join([words[i] for i in order])


def compose_caption(content: str, degradation_words: str, template: str = TRAIN_TEMPLATES[0]) -> str:
    """Content caption and degradation words in one caption (either may be empty)."""
    content = content.strip().rstrip(".")
    if not degradation_words:
        return content
    if not content:
        return degradation_words
    return template.format(content=content, degradation=degradation_words)


def held_out_caption(content: str, words: str) -> str:
    """``content`` with degradation ``words`` in the held-out phrasing (never used in training)."""
    return compose_caption(content, words, HELD_OUT_TEMPLATE)


# What a JPEG file's caption gains: the first training word for JPEG, so the models read it as in training.
JPEG_FILE_WORDS = TRAIN_VOCABULARY["jpeg"][0]
# What a file that records camera binning gains (caption_with_file_words): the first training word for it.
# Measured: "binned" alone +0.24 dB over the empty caption at x2 and +0.11 at x4 on binned held-out
# photographs (README, "Measurement consistency").
BINNED_FILE_WORDS = TRAIN_VOCABULARY["binned"][0]
# The highest JPEG quality at which saying so pays with every bundled PDN, with the empty caption and with
# a content caption (README "JPEG inputs say so themselves": at 65-75 the empty caption loses at x8 and x16;
# at 85 and 95 both captions lose at every scale).
FILE_WORDS_MAX_JPEG_QUALITY = 60
_HOW_TAKEN_WORDS = tuple(
    sorted(
        {w.lower() for words in TRAIN_VOCABULARY.values() for w in words}
        | {"jpeg", "jpg", "compressed", "compression", "artifacts", "artefacts", "low-quality", "low quality"}
    )
)


def says_how_taken(caption: str) -> bool:
    """Whether ``caption`` already uses a word of :data:`TRAIN_VOCABULARY` (or "JPEG", "jpg", "compressed", ...).

    Whole words, case-insensitive, a hyphen counting as a word's end: "a
    soft toy" and "a soft-toy" count (the user's words are never
    second-guessed), "software" does not.
    """
    return caption_names(caption, _HOW_TAKEN_WORDS)


def caption_names(caption: str, words: Iterable[str]) -> bool:
    """Whether ``caption`` contains one of ``words`` as whole words (case-insensitive; a hyphen ends a word)."""
    text = caption.lower()
    return any(re.search(rf"(?<!\w){re.escape(w.lower())}(?!\w)", text) for w in words)


def _file_words(jpeg_quality: int | None, binning: int | None) -> str:
    """The words an input's file gives (see :func:`caption_with_file_words`), "" for none."""
    words = []
    if binning is not None and binning >= 2:
        words.append(BINNED_FILE_WORDS)
    if jpeg_quality is not None and jpeg_quality <= FILE_WORDS_MAX_JPEG_QUALITY:
        words.append(JPEG_FILE_WORDS)
    return _join(words) if words else ""


def caption_with_file_words(caption: str, jpeg_quality: int | None, binning: int | None = None) -> str:
    """``caption`` plus what the input says about how the image was made.

    An input JPEG-compressed at quality ``jpeg_quality`` <= :data:`FILE_WORDS_MAX_JPEG_QUALITY`
    (60: where the words were measured to pay; training says them up to 85) gets
    :data:`JPEG_FILE_WORDS` ("JPEG-compressed"), one whose file records camera
    ``binning`` of 2 or more (an OME-TIFF's ``DetectorSettings``,
    :attr:`napari_textsr.imageio.ImageFile.binning`) gets
    :data:`BINNED_FILE_WORDS` ("binned"; both: "binned and JPEG-compressed"),
    joined as in training (``"{content}, {degradation}"``; alone for an empty
    caption), unless the caption already says how the image was taken
    (:func:`says_how_taken`). Anything else (``jpeg_quality`` None: no JPEG
    compression known; higher quality; no binning) returns ``caption``
    unchanged. ``jpeg_quality`` comes from
    :func:`napari_textsr.imageio.jpeg_evidence` (a JPEG file's header, else
    the 8x8 blocks of an 8-bit image's pixels).
    """
    words = _file_words(jpeg_quality, binning)
    if not words or says_how_taken(caption):
        return caption
    return compose_caption(caption.strip().rstrip(",;:").strip(), words)  # "a cat, " -> "a cat, JPEG-..."


def caption_without_file_words(caption: str) -> str:
    """``caption`` less the words :func:`caption_with_file_words` joins to it.

    For the caption of an output, which is no JPEG and not binned however its
    input was made: "a cat, JPEG-compressed" -> "a cat", "binned" -> "",
    "nuclei, binned and JPEG-compressed" -> "nuclei"; anything else is
    returned unchanged.
    """
    for words in (_join([BINNED_FILE_WORDS, JPEG_FILE_WORDS]), JPEG_FILE_WORDS, BINNED_FILE_WORDS):  # longest first
        if caption.strip() == words:
            return ""
        joined = TRAIN_TEMPLATES[0].format(content="", degradation=words)  # ", JPEG-compressed"
        if caption.endswith(joined):
            return caption[: -len(joined)]
    return caption
