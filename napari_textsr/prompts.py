"""Prompt encoding on open_clip: captions (and reference images) to prompt features.

One :class:`PromptEncoder` wraps any open_clip model: a pretrained one by
architecture and tag (downloaded into the cache on users' machines), a local
weights file, the project's bundled encoder, or random initialisation
(``none``, used by tests). It turns captions into per-token features, a mask and
a pooled vector (:class:`PromptEmbedding`) and caches them per caption.

Empty caption: it is encoded as the empty string, i.e. only CLIP's end-of-text
token, which is the conventional *unconditional* prompt of text-conditioned
models. Its pooled vector is the EOT feature and its single token is named
``<sentence>``; models treat it like any other caption, so an empty caption
never crashes and gives the model's caption-free behaviour.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr._assets import WEIGHTS_DIR  # bundled encoder weights; public name: loading.WEIGHTS_DIR
from napari_textsr._torchvision_compat import ensure_torchvision_importable

__all__ = [
    "EncoderSpec",
    "EncoderIdentity",
    "PromptEmbedding",
    "PromptEncoder",
    "cache_dir",
    "state_dict_fingerprint",
]

SENTENCE_TOKEN = "<sentence>"
# An open_clip model (CLIP, CustomTextCLIP, CoCa...): its towers and attributes
# differ by architecture and open_clip ships no type information, so it is Any.
OpenClipModel = Any
_CONFIG_DIR = Path(__file__).parent / "encoder_configs"
_register_lock = threading.Lock()
_registered = False


def register_encoder_configs() -> None:
    """Make the project's small open_clip architectures known to open_clip.

    ``textsr-tiny`` is for tests; ``textsr-clip-s`` is the encoder this project
    pretrains on captioned images. Both load with ``open_clip.create_model``.
    """
    global _registered
    with _register_lock:
        if _registered:
            return
        ensure_torchvision_importable()
        import open_clip

        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _weights_loaded_afterwards():
    """open_clip warns that a model built without a tag is "initialized randomly";
    where we load the weights ourselves right after, that warning is false."""
    root = logging.getLogger()
    drop = _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def is_known_architecture(arch: str) -> bool:
    """Whether open_clip can build ``arch``; this project's own architectures are answered without importing open_clip."""
    if (_CONFIG_DIR / f"{arch}.json").is_file():
        return True
    register_encoder_configs()
    import open_clip

    return arch in open_clip.list_models()


@dataclass
class _LazyWeights:
    """An encoder's weights before its open_clip model is built, and what can be known from them alone."""

    state: dict[str, torch.Tensor]
    embed_dim: int
    fingerprint: str

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "_LazyWeights | None":
        """None when the embedding width cannot be read off the weights (then the model is built at once)."""
        projection = state.get("text_projection")
        if projection is None or projection.ndim != 2:
            return None
        return cls(state=state, embed_dim=int(projection.shape[1]), fingerprint=state_dict_fingerprint(state))


EMBEDDING_CACHE_ENV = "NAPARI_TEXTSR_EMBEDDING_CACHE"


def embedding_cache_dir() -> Path | None:
    """Where encoded captions are kept between sessions, or None when that is off.

    ``$NAPARI_TEXTSR_EMBEDDING_CACHE``: a folder, or ``0``/``off`` to turn it
    off; by default ``embeddings/`` in :func:`cache_dir`. One small
    safetensors file per encoder (weights fingerprint or tag), device type and
    caption, so a caption seen before is encoded without building the
    open_clip model (a command's start drops by the open_clip import).
    """
    value = os.environ.get(EMBEDDING_CACHE_ENV, "")
    if value.strip().lower() in ("0", "off", "no", "false"):
        return None
    return Path(value) if value else cache_dir() / "embeddings"


def _embedding_file_name(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:40] + ".safetensors"


def _write_embedding(path: Path, caption: str, entry: tuple, fit: "CaptionFit") -> None:
    import json

    from safetensors.torch import save_file

    from napari_textsr.durable import atomic_write

    tokens, _mask, pooled, words, word_ids = entry
    metadata = {
        "caption": caption,
        "words": json.dumps(words),
        "word_ids": json.dumps(word_ids),
        "fit": json.dumps([fit.caption, fit.encoded, fit.tokens_used, fit.tokens_total]),
    }
    with atomic_write(path) as tmp:
        save_file({"tokens": tokens.contiguous(), "pooled": pooled.contiguous()}, str(tmp), metadata=metadata)


def _read_embedding(path: Path, caption: str) -> tuple | None:
    """A cached entry, or None if absent, unreadable or not this caption's (a hash collision)."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("caption") != caption:
                return None
            tokens, pooled = handle.get_tensor("tokens"), handle.get_tensor("pooled")
        words, word_ids, fit = json.loads(meta["words"]), json.loads(meta["word_ids"]), json.loads(meta["fit"])
        if tokens.ndim != 2 or pooled.shape != tokens.shape[1:] or len(words) != tokens.shape[0]:
            return None
        return (tokens, torch.ones(tokens.shape[0], dtype=torch.bool), pooled, words, word_ids, CaptionFit(*fit))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError):
        return None


def cache_dir() -> Path:
    """Where downloaded CLIP weights go: ``$NAPARI_TEXTSR_CACHE`` or ``~/.cache/napari-textsr``."""
    env = os.environ.get("NAPARI_TEXTSR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "napari-textsr"


@dataclass(frozen=True)
class EncoderSpec:
    """Which open_clip model encodes prompts.

    ``arch`` is an open_clip architecture name (``ViT-B-32``, ``textsr-tiny``).
    ``pretrained`` is one of: an open_clip pretrained tag (``openai``,
    ``laion2b_s34b_b79k``), ``bundled:<name>`` for weights shipped in this
    package, a path to a weights file, or ``none`` for a deterministic random
    initialisation. The string form is ``arch:pretrained``.
    """

    arch: str
    pretrained: str = "none"

    @classmethod
    def parse(cls, text: str) -> "EncoderSpec":
        text = text.strip()
        if not text:
            raise ValueError("empty encoder spec; expected 'ARCH:PRETRAINED', e.g. 'ViT-B-32:openai'")
        arch, sep, pretrained = text.partition(":")
        return cls(arch=arch, pretrained=pretrained if sep else "none")

    def __str__(self) -> str:
        return f"{self.arch}:{self.pretrained}"

    @property
    def kind(self) -> str:
        """``random``, ``bundled``, ``tag`` or ``file``."""
        if self.pretrained in ("", "none", None):
            return "random"
        if self.pretrained.startswith("bundled:"):
            return "bundled"
        if os.sep in self.pretrained or self.pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            return "file"
        return "tag"


@dataclass(frozen=True)
class EncoderIdentity:
    """What a checkpoint records about its prompt encoder, and what must match.

    Public pretrained tags are identified by (arch, tag); every other source by
    (arch, fingerprint of the weights), so a renamed or retrained file is caught.
    """

    arch: str
    source: str  # random | bundled | tag | file
    pretrained: str
    embed_dim: int
    fingerprint: str

    def matches(self, other: "EncoderIdentity") -> bool:
        if self.arch != other.arch or self.embed_dim != other.embed_dim:
            return False
        if self.source == "tag" and other.source == "tag":
            return self.pretrained == other.pretrained
        return self.fingerprint == other.fingerprint

    def describe(self) -> str:
        if self.source == "tag":
            return f"{self.arch} with pretrained weights '{self.pretrained}' (embed dim {self.embed_dim})"
        return (
            f"{self.arch} from {self.source} weights '{self.pretrained}' "
            f"(embed dim {self.embed_dim}, fingerprint {self.fingerprint})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "source": self.source,
            "pretrained": self.pretrained,
            "embed_dim": self.embed_dim,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EncoderIdentity":
        return cls(
            arch=str(values["arch"]),
            source=str(values["source"]),
            pretrained=str(values["pretrained"]),
            embed_dim=int(values["embed_dim"]),
            fingerprint=str(values["fingerprint"]),
        )


def state_dict_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 over names, shapes and float32 values of a state dict."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class PromptEmbedding:
    """Encoded prompts for a batch.

    Attributes
    ----------
    tokens: float32 (B, T, D) per-token features in the joint embedding space.
    mask: bool (B, T), True where ``tokens`` holds a real token (words and the
        end-of-text token; never all False).
    pooled: float32 (B, D), L2-normalised sentence (or image) embedding.
    words: B lists of T strings naming each token ("" where masked out).
        Tokens are BPE pieces ("fil", "am", "ents").
    word_ids: B lists of T ints: the index of the whole word each token belongs
        to (-1 where masked out), so per-token maps can be merged per word
        (see :meth:`whole_words`). None when the tokenizer cannot tell.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    words: list[list[str]]
    word_ids: list[list[int]] | None = None

    def __post_init__(self) -> None:
        b, t, d = self.tokens.shape
        if self.mask.shape != (b, t) or self.pooled.shape != (b, d) or len(self.words) != b:
            raise ValueError(
                f"inconsistent prompt shapes: tokens {tuple(self.tokens.shape)}, mask "
                f"{tuple(self.mask.shape)}, pooled {tuple(self.pooled.shape)}, {len(self.words)} word lists"
            )

    def whole_words(self, item: int = 0) -> list[tuple[str, list[int]]]:
        """(word, token positions) for batch item ``item``, in order, for real tokens.

        BPE pieces are joined ("fil"+"am"+"ents" -> "filaments"); without
        ``word_ids`` every token is its own word.
        """
        groups: dict[int, tuple[str, list[int]]] = {}
        for position, real in enumerate(self.mask[item].tolist()):
            if not real:
                continue
            word_id = self.word_ids[item][position] if self.word_ids is not None else position
            text, positions = groups.get(word_id, ("", []))
            groups[word_id] = (text + self.words[item][position], positions + [position])
        return list(groups.values())

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "PromptEmbedding":
        return PromptEmbedding(
            tokens=self.tokens.to(device=device, dtype=dtype or self.tokens.dtype),
            mask=self.mask.to(device),
            pooled=self.pooled.to(device=device, dtype=dtype or self.pooled.dtype),
            words=self.words,
            word_ids=self.word_ids,
        )

    def repeat(self, n: int) -> "PromptEmbedding":
        """The same prompt for each of ``n`` images (batch must be 1)."""
        if self.batch_size != 1:
            raise ValueError("repeat() needs a single prompt")
        return PromptEmbedding(
            tokens=self.tokens.expand(n, -1, -1),
            mask=self.mask.expand(n, -1),
            pooled=self.pooled.expand(n, -1),
            words=self.words * n,
            word_ids=self.word_ids * n if self.word_ids is not None else None,
        )

    @classmethod
    def cat(cls, prompts: Sequence["PromptEmbedding"]) -> "PromptEmbedding":
        """Stack prompts of different token counts into one batch (padding masked out)."""
        t = max(p.tokens.shape[1] for p in prompts)

        def pad(x: torch.Tensor, value: float | bool) -> torch.Tensor:
            extra = t - x.shape[1]
            if extra == 0:
                return x
            shape = list(x.shape)
            shape[1] = extra
            return torch.cat([x, x.new_full(shape, value)], dim=1)

        return cls(
            tokens=torch.cat([pad(p.tokens, 0.0) for p in prompts]),
            mask=torch.cat([pad(p.mask, False) for p in prompts]),
            pooled=torch.cat([p.pooled for p in prompts]),
            words=[w + [""] * (t - len(w)) for p in prompts for w in p.words],
            word_ids=(
                [ids + [-1] * (t - len(ids)) for p in prompts for ids in p.word_ids]  # type: ignore[union-attr]
                if all(p.word_ids is not None for p in prompts)
                else None
            ),
        )


class PromptEncoder(nn.Module):
    """A frozen open_clip model that encodes captions and reference images.

    Build one with :meth:`from_spec`. ``encode(captions)`` returns a
    :class:`PromptEmbedding` on the encoder's device; results are cached per
    caption (on the CPU, at most ``cache_size`` captions).
    """

    def __init__(
        self,
        clip_model: OpenClipModel | None,
        tokenizer,
        spec: EncoderSpec,
        cache_size: int = 1024,
        *,
        lazy: "_LazyWeights | None" = None,
    ) -> None:
        super().__init__()
        if (clip_model is None) == (lazy is None):
            raise ValueError("give either an open_clip model or lazy weights")
        if clip_model is not None:
            self.clip: OpenClipModel = clip_model.eval().requires_grad_(False)
            self.tokenizer = tokenizer
        # Bundled weights build the open_clip model on first need (see _materialise).
        self._lazy = lazy
        self._build_lock = threading.Lock()
        self._device = torch.device("cpu")
        self._fits: dict[str, CaptionFit] = {}
        self.spec = spec
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[int]]] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._identity: EncoderIdentity | None = None

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_spec(
        cls, spec: EncoderSpec | str, device: torch.device | str = "cpu", seed: int = 0, download: bool = True
    ) -> "PromptEncoder":
        """Create the open_clip model a spec names.

        ``none`` gives a random initialisation seeded by ``seed`` (same spec,
        same weights). A tag downloads into :func:`cache_dir` on first use;
        with ``download=False`` (the spec came from a file, not from the user)
        a tag not already cached raises ValueError instead. A ``bundled:``
        spec reads its weights now and builds the open_clip model on first
        need (``clip``, ``tokenizer``, a caption not in the on-disk cache), so
        a session whose captions are all cached never imports open_clip.
        Raises ValueError for an unknown architecture or a missing file.
        """
        spec = EncoderSpec.parse(spec) if isinstance(spec, str) else spec
        if not is_known_architecture(spec.arch):
            raise ValueError(
                f"unknown open_clip architecture {spec.arch!r}; e.g. 'ViT-B-32', 'textsr-tiny', 'textsr-clip-s'"
            )
        kind = spec.kind
        if kind == "bundled":
            lazy = _LazyWeights.from_state(load_encoder_state(_resolve_weights_path(spec)))
            if lazy is not None:
                return cls(None, None, spec, lazy=lazy).to(device)
        register_encoder_configs()
        import open_clip

        if kind == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = open_clip.create_model(spec.arch, pretrained=None)
        elif kind == "tag":
            if not download and not pretrained_tag_is_cached(spec):
                raise ValueError(
                    f"the prompt encoder {spec} is not downloaded yet and nothing asked to download it; "
                    f"ask for it explicitly (PromptEncoder.from_spec({str(spec)!r}), allow_download=True, "
                    f"or --encoder {spec})"
                )
            model = open_clip.create_model(spec.arch, pretrained=spec.pretrained, cache_dir=str(cache_dir()))
        else:
            path = _resolve_weights_path(spec)
            with _weights_loaded_afterwards():
                model = open_clip.create_model(spec.arch, pretrained=None)
            state = load_encoder_state(path)
            model.load_state_dict(state)
        tokenizer = open_clip.get_tokenizer(spec.arch)
        return cls(model, tokenizer, spec).to(device)

    @classmethod
    def from_state_dict(
        cls, spec: EncoderSpec, state: dict[str, torch.Tensor], device: torch.device | str = "cpu"
    ) -> "PromptEncoder":
        """Rebuild an encoder whose weights travelled inside a checkpoint."""
        register_encoder_configs()
        import open_clip

        with _weights_loaded_afterwards():
            model = open_clip.create_model(spec.arch, pretrained=None)
        model.load_state_dict(state)
        return cls(model, open_clip.get_tokenizer(spec.arch), spec).to(device)

    # ------------------------------------------------------------ lazy model
    def __getattr__(self, name: str) -> Any:
        # ``clip`` and ``tokenizer`` of an encoder whose model is not built yet: build it now.
        if name in ("clip", "tokenizer") and self.__dict__.get("_lazy") is not None:
            self._materialise()
            return getattr(self, name)
        return super().__getattr__(name)

    @property
    def is_built(self) -> bool:
        """Whether the open_clip model exists (a bundled encoder builds it on the first caption not on disk)."""
        return self._lazy is None

    def _materialise(self) -> None:
        """Build the open_clip model from the lazy weights (imports open_clip: about 1-4 s on a CPU)."""
        with self._build_lock:
            lazy = self._lazy
            if lazy is None:
                return
            register_encoder_configs()
            import open_clip

            with _weights_loaded_afterwards():
                model = open_clip.create_model(self.spec.arch, pretrained=None)
            model.load_state_dict(lazy.state)
            self.clip = model.eval().requires_grad_(False).to(self._device)
            self.tokenizer = open_clip.get_tokenizer(self.spec.arch)
            self._lazy = None

    def to(self, *args: Any, **kwargs: Any) -> "PromptEncoder":
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None:
            self._materialise()
        if device is not None:
            self._device = torch.device(device)
        return super().to(*args, **kwargs)

    # -------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        if self._lazy is not None:
            return self._device
        return next(self.clip.parameters()).device

    @property
    def embed_dim(self) -> int:
        if self._lazy is not None:
            return self._lazy.embed_dim
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if isinstance(proj, torch.Tensor):
            return proj.shape[1]
        return int(self.clip.encode_text(self.tokenize([""])).shape[-1])

    @property
    def image_size(self) -> int:
        size = getattr(self.clip.visual, "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            kind = self.spec.kind
            if self._lazy is not None:
                fingerprint = self._lazy.fingerprint
            else:
                fingerprint = "" if kind == "tag" else state_dict_fingerprint(self.clip.state_dict())
            self._identity = EncoderIdentity(
                arch=self.spec.arch,
                source=kind,
                pretrained=str(self.spec.pretrained),
                embed_dim=self.embed_dim,
                fingerprint=fingerprint,
            )
        return self._identity

    # ---------------------------------------------------------------- encoding
    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(captions)).to(self.device)

    def fit_caption(self, caption: str) -> CaptionFit:
        """What of ``caption`` fits the text encoder's context (CLIP: 77 tokens with start and end).

        The encoder silently keeps the first ``context_length - 2`` BPE tokens;
        this says how many the caption has and gives the text actually encoded
        (the tokenizer's decoding of the kept tokens: lower case, normalised
        spaces) so callers can warn and record it. Tokenizers that cannot tell
        report the caption unchanged.
        """
        text = " ".join(caption.split())
        known = self._fits.get(text)
        if known is None:
            stored = self._disk_entries([text]).get(text)
            if stored is not None:  # the embedding came with it: encode() then needs no second read
                known = stored[5]
                self._remember(text, stored[:5])
        if known is None:
            known = self._fit_uncached(text)
            self._fits[text] = known
        return known

    def _fit_uncached(self, text: str) -> CaptionFit:
        context = int(getattr(self.tokenizer, "context_length", 0) or 0)
        encode = getattr(self.tokenizer, "encode", None)
        decode = getattr(self.tokenizer, "decode", None)
        if not text or context < 3 or encode is None or decode is None:
            return CaptionFit(text, text, 0, 0)
        ids = list(encode(text))
        room = context - 2  # start- and end-of-text tokens
        if len(ids) <= room:
            return CaptionFit(text, text, len(ids), len(ids))
        return CaptionFit(text, str(decode(ids[:room])).strip(), room, len(ids))

    # no_grad, not inference_mode: cached features feed training graphs, and
    # inference tensors cannot be saved for backward.
    @torch.no_grad()
    def encode(self, captions: Sequence[str] | str, *, cache: bool = True) -> PromptEmbedding:
        """Captions -> PromptEmbedding (tokens (B, T, D), mask (B, T), pooled (B, D)).

        Whitespace-only captions count as empty (the unconditional prompt).
        ``cache=False`` neither reads nor writes this encoder's in-memory cache
        or the on-disk caption cache (:func:`embedding_cache_dir`): the distinct
        captions are encoded in one batch, so the result depends only on
        ``captions`` and not on what was encoded before (training's composed
        captions: a resumed run must get the same numbers as an uninterrupted
        one, and batched encoding differs from one-by-one in the last bits).
        """
        if isinstance(captions, str):
            captions = [captions]
        captions = [" ".join(c.split()) for c in captions]
        found: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[int]]] = {}
        if cache:
            with self._cache_lock:
                for c in dict.fromkeys(captions):
                    if c in self._cache:
                        self._cache.move_to_end(c)
                        found[c] = self._cache[c]
        missing = [c for c in dict.fromkeys(captions) if c not in found]
        if missing and cache:
            for caption, entry in self._disk_entries(missing).items():
                found[caption] = entry[:5]
                self._remember(caption, entry[:5])
            missing = [c for c in missing if c not in found]
        if missing:
            encoded = self._encode_uncached(missing, remember=cache)
            found.update(encoded)
            if cache:
                self._store_on_disk(encoded)
        entries = [found[c] for c in captions]
        prompts = [
            PromptEmbedding(tokens=t[None], mask=m[None], pooled=p[None], words=[w], word_ids=[ids])
            for t, m, p, w, ids in entries
        ]
        return PromptEmbedding.cat(prompts).to(self.device)

    def _encode_uncached(self, captions: list[str], remember: bool = True) -> dict[str, tuple]:
        text = self.tokenize(captions)
        encoded = {}
        tokens, pooled = self._text_features(text)
        pooled = F.normalize(pooled.float(), dim=-1)
        lengths = _token_lengths(text, self.tokenizer)
        for i, caption in enumerate(captions):
            n = lengths[i]  # words + EOT, SOT dropped
            ids = text[i, 1 : 1 + n].tolist()
            words = [_decode_token(self.tokenizer, t) for t in ids[:-1]] + [SENTENCE_TOKEN]
            entry = (
                tokens[i, 1 : 1 + n].float().cpu(),
                torch.ones(n, dtype=torch.bool),
                pooled[i].cpu(),
                words,
                _word_ids(self.tokenizer, ids[:-1]) + [-2],  # EOT is its own "word"
            )
            encoded[caption] = entry
            if remember:
                self._remember(caption, entry)
        return encoded

    def _remember(self, caption: str, entry: tuple) -> None:
        with self._cache_lock:
            self._cache[caption] = entry
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    # ------------------------------------------------- on-disk caption cache
    def _disk_folder(self) -> Path | None:
        """This encoder's folder of cached caption embeddings, or None (random weights, or the cache is off)."""
        root = embedding_cache_dir()
        if root is None or self.spec.kind == "random":
            return None
        identity = self.identity()
        name = f"{identity.arch}-{identity.fingerprint or identity.pretrained}-{self.device.type}"
        return root / re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def _disk_entries(self, captions: Sequence[str]) -> dict[str, tuple]:
        """Cached (tokens, mask, pooled, words, word_ids, fit) of those ``captions`` found on disk."""
        folder = self._disk_folder()
        if folder is None or not folder.is_dir():
            return {}
        found = {}
        for caption in captions:
            entry = _read_embedding(folder / _embedding_file_name(caption), caption)
            if entry is not None:
                found[caption] = entry
                self._fits.setdefault(caption, entry[5])
        return found

    def _store_on_disk(self, encoded: dict[str, tuple]) -> None:
        folder = self._disk_folder()
        if folder is None:
            return
        for caption, entry in encoded.items():
            fit = self._fits.get(caption) or self._fit_uncached(caption)
            self._fits[caption] = fit
            try:
                _write_embedding(folder / _embedding_file_name(caption), caption, entry, fit)
            except OSError:  # a read-only or full cache costs speed, never a result
                return

    def _text_features(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) token ids -> token features (B, L, D) and pooled (B, D), both projected."""
        clip = self.clip
        if hasattr(clip, "token_embedding") and hasattr(clip, "transformer"):
            # open_clip.CLIP keeps the text tower inline; replay encode_text without its pooling.
            cast = clip.transformer.get_cast_dtype()
            x = clip.token_embedding(text).to(cast) + clip.positional_embedding.to(cast)
            x = clip.transformer(x, attn_mask=clip.attn_mask)
            x = clip.ln_final(x)
            return _project(x, clip.text_projection), _pool_like_encode_text(clip, x, text)
        text_tower = getattr(clip, "text", None)
        if text_tower is not None and hasattr(text_tower, "output_tokens"):
            previous = text_tower.output_tokens
            text_tower.output_tokens = True
            try:
                pooled, x = text_tower(text)
            finally:
                text_tower.output_tokens = previous
            return _project(x, getattr(text_tower, "text_projection", None)), pooled
        # Towers without token outputs (e.g. HF text models): the sentence is the only token.
        pooled = clip.encode_text(text)
        return pooled[:, None].expand(-1, text.shape[1], -1), pooled

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> PromptEmbedding:
        """Reference images as prompts (PDN's image prompts).

        images: float (B, 3, H, W) in [0, 1], any size (resized to the encoder's
        input). Returns one ``<image>`` token per item.
        """
        x = images.to(self.device, torch.float32)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True)
        mean = torch.tensor(getattr(self.clip.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        std = torch.tensor(getattr(self.clip.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
        x = (x.clamp(0, 1) - mean.to(x)[:, None, None]) / std.to(x)[:, None, None]
        pooled = F.normalize(self.clip.encode_image(x).float(), dim=-1)
        return PromptEmbedding(
            tokens=pooled[:, None],
            mask=torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device),
            pooled=pooled,
            words=[["<image>"] for _ in range(pooled.shape[0])],
        )

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()


def _pool_like_encode_text(clip: OpenClipModel, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """open_clip ``CLIP.encode_text``'s pooling and projection of the final token features ``x`` (B, L, W):
    the same numbers as ``clip.encode_text(text)`` without running the text tower a second time."""
    pool_type = getattr(clip, "text_pool_type", None)
    if pool_type is None:  # an open_clip without text_global_pool: let it pool itself
        return clip.encode_text(text)
    from open_clip.transformer import text_global_pool

    pooled = text_global_pool(x, text, pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    projection = clip.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, nn.Module) else pooled @ projection


@dataclass(frozen=True)
class CaptionFit:
    """A caption and the part of it the text encoder used (see :meth:`PromptEncoder.fit_caption`)."""

    caption: str  # whitespace-normalised
    encoded: str  # the text of the tokens kept
    tokens_used: int
    tokens_total: int

    @property
    def truncated(self) -> bool:
        return self.tokens_total > self.tokens_used

    def message(self) -> str:
        return (
            f"the caption has {self.tokens_total} tokens but the text encoder reads {self.tokens_used}; "
            f"only this part was used: {self.encoded!r}"
        )


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Module):
        return projection(x)
    return x @ projection


def _token_lengths(text: torch.Tensor, tokenizer) -> list[int]:
    """Number of tokens after SOT up to and including EOT, per row."""
    eot = getattr(tokenizer, "eot_token_id", None)
    lengths = []
    for row in text.tolist():
        if eot is not None and eot in row[1:]:
            end = row.index(eot, 1)
        else:  # CLIP's EOT is the largest id; also covers truncated captions
            end = max(range(len(row)), key=lambda j: row[j])
        lengths.append(max(end, 1))
    return lengths


def _word_ids(tokenizer, token_ids: list[int]) -> list[int]:
    """Index of the whole word each BPE token belongs to.

    CLIP's BPE marks the last piece of a word with ``</w>``; tokenizers without
    that vocabulary get one word per token.
    """
    decoder = getattr(tokenizer, "decoder", None)
    word, ids = 0, []
    for token_id in token_ids:
        ids.append(word)
        piece = decoder.get(token_id, "</w>") if isinstance(decoder, dict) else "</w>"
        if piece.endswith("</w>"):
            word += 1
    return ids


def _decode_token(tokenizer, token_id: int) -> str:
    try:
        return tokenizer.decode([token_id]).strip() or "?"
    except Exception:  # tokenizers without per-token decode
        return f"token{token_id}"


_BUNDLED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def bundled_weights_path(spec: EncoderSpec) -> Path:
    """The file a ``bundled:<name>`` spec names: ``<name>.safetensors`` in :data:`WEIGHTS_DIR`, nowhere else.

    Raises ValueError for a name that is not a plain file name (``..``, a
    path, an absolute path) or whose file does not exist.
    """
    name = spec.pretrained.split(":", 1)[1] if spec.kind == "bundled" else ""
    if not _BUNDLED_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"bundled encoder name {name!r} is not a plain name of weights shipped with napari-textsr "
            "(letters, digits, '_', '-', '.'; no paths)"
        )
    folder = WEIGHTS_DIR.resolve()
    path = (WEIGHTS_DIR / f"{name}.safetensors").resolve()
    if path.parent != folder or not path.is_file():
        shipped = sorted(
            f.name[: -len(".safetensors")] for f in folder.glob("*.safetensors") if f.suffixes == [".safetensors"]
        )
        raise ValueError(
            f"no bundled prompt encoder weights named {name!r} in {folder} (this version ships: "
            f"{', '.join(shipped) or 'none'}); to load a checkpoint made with an encoder an earlier version "
            f"shipped, copy that version's {name}.safetensors into this folder (docs/training.md)"
        )
    return path


def is_public_tag(spec: EncoderSpec) -> bool:
    """Whether ``spec`` is a pretrained tag open_clip itself lists for that architecture."""
    register_encoder_configs()
    import open_clip

    return spec.kind == "tag" and bool(open_clip.pretrained.is_pretrained_cfg(spec.arch, spec.pretrained))


def pretrained_tag_is_cached(spec: EncoderSpec) -> bool:
    """Whether a public tag's weights are already in :func:`cache_dir` (so loading it needs no download)."""
    if not is_public_tag(spec):
        return False
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
    folder = cache_dir()
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip then uses the URL
            hub = ""
        else:
            repo, filename = os.path.split(hub)
            names = [filename or "open_clip_pytorch_model.bin"]
            names += [n[: n.rfind(".")] + ".safetensors" for n in names if n.endswith((".bin", ".pth"))]
            names.append("open_clip_model.safetensors")
            for name in names:
                found = try_to_load_from_cache(repo, name, cache_dir=str(folder))
                if isinstance(found, str) and os.path.isfile(found):
                    return True
    url = cfg.get("url", "")
    return bool(url) and (folder / os.path.basename(url)).is_file()


def _resolve_weights_path(spec: EncoderSpec) -> Path:
    if spec.kind == "bundled":
        return bundled_weights_path(spec)
    path = Path(spec.pretrained).expanduser()
    if not path.is_file():
        raise ValueError(f"prompt encoder weights not found: {path}")
    return path


def load_encoder_state(path: Path | str) -> dict[str, torch.Tensor]:
    """An open_clip state dict from .safetensors or a torch file (open_clip's own format)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(str(path)).items()}
    register_encoder_configs()
    from open_clip.factory import load_state_dict

    return load_state_dict(str(path))


def save_encoder_state(encoder: PromptEncoder | nn.Module, path: Path | str, half: bool = False) -> Path:
    """Save an open_clip model's weights so ``EncoderSpec(arch, path)`` loads them."""
    from safetensors.torch import save_file

    clip = encoder.clip if isinstance(encoder, PromptEncoder) else encoder
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in clip.state_dict().items()}
    from napari_textsr.durable import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(state, str(tmp))
    return path
