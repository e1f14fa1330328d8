"""The training losses of TGSR, CLIP-SR and PDN, as their papers define them.

Each method has a dataclass of loss weights (:class:`TGSRLossWeights`,
:class:`CLIPSRLossWeights`, :class:`PDNLossWeights`) whose defaults are the
papers' values, and a criterion module built from it by :func:`build_criterion`
that the trainer calls without knowing which method it trains:

* ``generator_loss(output, hr, prompt, captions) -> (total, terms)``
* ``discriminator_loss(output, hr, prompt, captions) -> (total, terms)`` when
  the criterion has a ``discriminator`` (adversarial terms switched on)
* ``schedule(model, step, steps_per_epoch)`` for per-step rules (PDN's kernel
  temperature annealing).

Every term is switchable: a weight of 0 removes it (and its cost). The
adversarial terms are additionally gated by ``adversarial`` (default False):
a discriminator needs thousands of steps before its gradient carries more
signal than noise, it doubles the cost of a step (a second network, plus a
frozen CLIP forward/backward for CLIP-SR), and it trades PSNR for texture. The
fine-tuning this project targets is minutes to hours on a CPU with a live PSNR
read-out, where those terms cost time and lower the number being watched. Turn
them on (``adversarial=True``, CLI ``--adversarial``) for long GPU runs.
TGSR's text-image consistency (TIC) term is gated the same way by
``consistency`` for a measured reason given in :class:`TGSRLossWeights`.
CLI ``--paper-losses`` switches on every gated term of the method.

| method  | term | default | paper |
|---------|------|---------|-------|
| TGSR    | ``l2_coarse``: L2 of the coarse image I_G to a Gaussian low-passed target | 1.0 | lambda_L2 = 1 |
|         | ``tar``: L2 weighted by the top-5 word attention maps | 1.0 | lambda_TAR = 1 |
|         | ``tic``: DAMSM text-image consistency on I_G and I (if ``consistency``; open_clip image tower, never with a random-init encoder) | 0.5 | lambda_TIC = 0.5 |
|         | ``cgan``: text-conditional GAN on I_G and I (if ``adversarial``) | 0.1 | lambda_cGAN = 0.1 |
|         | ``kl``: KL of the conditioning augmentation (AttnGAN) | 1.0 | AttnGAN code |
| CLIP-SR | ``l1`` | 1.0 | 1 |
|         | ``perceptual``: VGG19, 5 ReLU layers (needs cached weights) | 1.0 | 1 |
|         | ``adversarial_weight``: GALIP CLIP discriminator + alpha * sim (if ``adversarial``) | 0.01 | 0.01, alpha 4 |
| PDN     | ``l1`` | 1.0 | 1 |
|         | ``l2``: mean squared error, for a PSNR-oriented last stage | 0 | (not in the paper) |
|         | kernel temperature 34, divided by 3 every 10 epochs | | |
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Sequence, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr.methods import get_method
from napari_textsr.models.base import SROutput
from napari_textsr.prompts import SENTENCE_TOKEN, PromptEmbedding, PromptEncoder
from napari_textsr.training.degradations import gaussian_blur

__all__ = [
    "LossWeights",
    "TGSRLossWeights",
    "CLIPSRLossWeights",
    "PDNLossWeights",
    "default_loss_weights",
    "paper_loss_weights",
    "loss_weights_from_dict",
    "parse_loss_overrides",
    "build_criterion",
    "SRCriterion",
    "CLIPImageFeatures",
    "damsm_loss",
    "vgg19_weights_path",
]

LossTerms = dict[str, torch.Tensor]


# --------------------------------------------------------------------- weights
@dataclass
class LossWeights:
    """Base of the per-method loss settings; subclasses set ``method`` and add terms.

    Methods with adversarial terms (TGSR, CLIP-SR) have an ``adversarial``
    switch, off by default (see the module docstring for why).
    """

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "LossWeights":
        """A copy with some fields changed; unknown names raise ValueError listing the valid ones."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"{self.method} has no loss setting {unknown}; choose from {sorted(known)}")
        converted = {name: _convert(value, str(known[name].type), name) for name, value in changes.items()}
        return dataclasses.replace(self, **converted)

    def generator_betas(self) -> tuple[float, float]:
        """Adam (beta1, beta2) for the SR network."""
        return (0.9, 0.999)

    def discriminator_betas(self) -> tuple[float, float]:
        return (0.0, 0.9)


def _convert(value: Any, type_name: str, name: str) -> Any:
    """Convert a CLI/JSON value to a loss setting's declared type (``float``, ``int | None`` ...)."""
    optional = "None" in type_name
    if optional and (value is None or str(value).strip().lower() in ("", "none", "null")):
        return None
    base = type_name.replace("| None", "").strip()
    try:
        if base == "bool":
            return _to_bool(value)
        if base == "int":
            return int(value)
        if base == "float":
            return float(value)
        if base.startswith("tuple"):
            items = value.split(":") if isinstance(value, str) else value
            return tuple(float(v) for v in items)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"loss setting {name}={value!r} is not a valid {base}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


@dataclass
class TGSRLossWeights(LossWeights):
    """TGSR (paper 000, section 3.4, eq. 3-10): L = L_global + L_fine.

    L_global = l2_coarse * L2(I_G, lowpass(GT)) + cgan * L_cGAN(I_G) + tic * L_TIC(I_G)
    L_fine   = tar * L_TAR(I, GT)              + cgan * L_cGAN(I)   + tic * L_TIC(I)
    plus ``kl`` times the conditioning augmentation's KL term (AttnGAN; only if
    the model reports ``ca_mu``/``ca_logvar``).

    The cGAN terms need ``adversarial=True`` and the TIC terms
    ``consistency=True``; both are off by default. TIC at the paper's weight
    has a gradient about 140 times that of the reconstruction terms (TGSR
    default preset, the bundled encoder, batch 16) and in a short run it
    optimises CLIP matching instead of fidelity: 80 steps of TGSR-small on
    synthetic scenes reached 22.3 dB validation PSNR with it and 24.8 dB
    without (bicubic 25.8 dB). Switch both on for long runs that aim at the
    paper's perceptual and text-matching quality.

    ``lowpass_sigma``: Gaussian sigma of the low-pass filter in HR pixels per
    unit of scale (sigma = lowpass_sigma * scale); 0.5 keeps roughly the band
    the LR image holds (response 0.3 at the LR Nyquist frequency), which is
    what the paper asks of the global branch ("complete semantic information
    but few high-frequency textures"). ``tar_top_k``: number of word maps.
    ``damsm_gamma1/2/3``: AttnGAN's DAMSM smoothing factors (4, 5, 10).
    """

    method: ClassVar[str] = "tgsr"
    adversarial: bool = False
    consistency: bool = False
    l2_coarse: float = 1.0
    tar: float = 1.0
    tic: float = 0.5
    cgan: float = 0.1
    kl: float = 1.0
    lowpass_sigma: float = 0.5
    tar_top_k: int = 5
    damsm_gamma1: float = 4.0
    damsm_gamma2: float = 5.0
    damsm_gamma3: float = 10.0
    discriminator_lr_ratio: float = 1.0  # AttnGAN: same learning rate for G and D

    def discriminator_betas(self) -> tuple[float, float]:
        return (0.5, 0.999)  # AttnGAN


@dataclass
class CLIPSRLossWeights(LossWeights):
    """CLIP-SR (paper 002, section III.C, eq. 2-5): L = l1 + perceptual + adversarial_weight * L_adv.

    ``perceptual``: VGG19 features at relu1_2, relu2_2, relu3_4, relu4_4,
    relu5_4 compared with L1, layer weights ``perceptual_layer_weights`` (the
    paper leaves sigma_i open; these are pix2pixHD's). VGG19 ImageNet weights
    are looked up in ``vgg_weights`` (a path) or torchvision's file in the
    torch hub cache; without either the term is switched off with a one-time
    warning (this project has no network at run time; get the file once with
    ``python -c "import torchvision; torchvision.models.vgg19(weights='DEFAULT')"``).
    ``adversarial_weight`` (lambda_adv = 0.01) and ``similarity_alpha`` (alpha =
    4, GALIP) weight the text-constrained adversarial loss (eq. 4) when
    ``adversarial`` is on; ``gradient_penalty`` is GALIP's matching-aware
    gradient penalty (k = 2, p = 6) on the discriminator; the discriminator
    learns ``discriminator_lr_ratio`` times faster (GALIP: 4e-4 vs 1e-4).
    Adam betas are (0, 0.9) when ``adversarial`` is on (paper), else (0.9, 0.999).
    """

    method: ClassVar[str] = "clipsr"
    adversarial: bool = False
    l1: float = 1.0
    perceptual: float = 1.0
    perceptual_layer_weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    vgg_weights: str | None = None
    adversarial_weight: float = 0.01
    similarity_alpha: float = 4.0
    gradient_penalty: float = 2.0
    gradient_penalty_power: float = 6.0
    discriminator_lr_ratio: float = 4.0

    def generator_betas(self) -> tuple[float, float]:
        return (0.0, 0.9) if self.adversarial and self.adversarial_weight > 0 else (0.9, 0.999)


@dataclass
class PDNLossWeights(LossWeights):
    """PDN (paper 004, eq. 1 and section 4.1): L1, plus the DCM kernel-temperature schedule.

    ``l2`` (0, off: not in the paper) adds the mean squared error, the loss
    whose minimum is the highest PSNR; ``l1=0,l2=1`` makes a last,
    PSNR-oriented fine-tuning stage (Lim et al., EDSR, CVPRW 2017, section
    4.2, compare the two; L1 trains faster, L2 is what PSNR scores).

    The softmax temperature of every DCM's kernel attention starts at
    ``kernel_temperature``, by default (``None``) the model's own value when
    training starts: 34 for a new model (``PDNConfig.temperature``, the
    paper's value), the annealed value of a checkpoint being fine-tuned (so
    fine-tuning does not undo the annealing). It is
    divided by ``kernel_temperature_decay`` (3) every
    ``kernel_temperature_every`` (10) epochs. An *epoch* for our random patch
    sampler is the number of steps that draws as many LR pixels as the
    training split holds: ceil(sum over images of (H/s * W/s) / (batch * patch^2)),
    unless ``epoch_steps`` fixes it.
    """

    method: ClassVar[str] = "pdn"
    l1: float = 1.0
    l2: float = 0.0
    kernel_temperature: float | None = None
    kernel_temperature_decay: float = 3.0
    kernel_temperature_every: int = 10
    epoch_steps: int | None = None

    def __post_init__(self) -> None:
        """ValueError for a negative weight, or for l1 and l2 both 0 (nothing would be trained)."""
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"PDN's loss weights must be >= 0, got l1={self.l1}, l2={self.l2}")
        if self.l1 == 0 and self.l2 == 0:
            raise ValueError("PDN's loss weights switch every term off: give l1 or l2 a weight above 0")


def default_loss_weights(method: str) -> LossWeights:
    """The paper defaults of ``method`` (adversarial terms off, see module docstring).

    The weights class comes from the method table (:data:`napari_textsr.methods.METHODS`);
    UnknownMethodError (a ValueError) for a method not in it.
    """
    return get_method(method).loss_weights_class()()


def loss_weights_from_dict(method: str, values: dict[str, Any]) -> LossWeights:
    return default_loss_weights(method).replace(**values)


def paper_loss_weights(method: str) -> LossWeights:
    """The papers' full objective: the defaults with every gated term switched on."""
    weights = default_loss_weights(method)
    gates = {name: True for name in ("adversarial", "consistency") if hasattr(weights, name)}
    return weights.replace(**gates) if gates else weights


def parse_loss_overrides(text: str) -> dict[str, str]:
    """``"tic=0,cgan=0.2,adversarial=true"`` -> ``{"tic": "0", ...}`` (converted by :meth:`LossWeights.replace`)."""
    overrides: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"loss weight {part!r} is not NAME=VALUE")
        overrides[name.strip()] = value.strip()
    return overrides


# ------------------------------------------------------------------- helpers
def _same_caption_matrix(captions: Sequence[str], device: torch.device) -> torch.Tensor:
    """(B, B) bool, True off the diagonal where two samples carry the same caption.

    Such pairs are not negatives (AttnGAN masks same-class pairs for the same reason).
    """
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    labels = torch.tensor([ids[c] for c in captions], device=device)
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(len(captions), dtype=torch.bool, device=device)


def _mismatched_order(captions: Sequence[str]) -> tuple[list[int], list[bool]]:
    """Index of a caption for each sample taken from another sample (a roll by 1), and
    whether it really differs (identical captions are not mismatches)."""
    n = len(captions)
    order = [(i + 1) % n for i in range(n)]
    valid = [n > 1 and captions[j] != captions[i] for i, j in enumerate(order)]
    return order, valid


class CLIPImageFeatures(nn.Module):
    """The prompt encoder's open_clip image tower, differentiable with respect to the image.

    forward(images (B, 3, H, W) float in [0, 1]) -> (pooled (B, D), regions (B, R, D))
    in the joint text-image space (not normalised). Regions are the ViT's patch
    tokens passed through the tower's output projection (so each lies in the
    space of word features); towers without patch tokens give one region, the
    pooled vector. The weights are frozen; gradients flow to the image.
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers: the tower's input normalisation
    std: torch.Tensor

    def __init__(self, encoder: PromptEncoder) -> None:
        super().__init__()
        self.visual = encoder.clip.visual
        self.visual.requires_grad_(False)
        self.image_size = encoder.image_size
        mean = getattr(self.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(self.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None], persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        visual = self.visual
        if hasattr(visual, "_embeds") and hasattr(visual, "_pool") and hasattr(visual, "transformer"):
            h = visual.transformer(visual._embeds(x))
            pooled, tokens = visual._pool(h)
            if visual.proj is not None:
                pooled = pooled @ visual.proj
                if tokens.shape[-1] == visual.proj.shape[0]:
                    tokens = tokens @ visual.proj
            if tokens.dim() == 3 and tokens.shape[-1] == pooled.shape[-1] and tokens.shape[1] > 0:
                return pooled, tokens
            return pooled, pooled[:, None]
        pooled = visual(x)
        if isinstance(pooled, tuple):
            pooled = pooled[0]
        return pooled, pooled[:, None]


def damsm_loss(
    regions: torch.Tensor,
    image_global: torch.Tensor,
    prompt: PromptEmbedding,
    captions: Sequence[str],
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> torch.Tensor:
    """AttnGAN's DAMSM loss (TGSR eq. 6-9): word-level + sentence-level, both directions.

    regions: (B, R, D) image sub-region features; image_global: (B, D);
    prompt.tokens (B, T, D) word features with prompt.mask; prompt.pooled the
    sentence vectors. For every image/caption pair the words attend over the
    regions (eq. 6-7), the relevance of each word to its context is the cosine
    R(c_i, e_i) and the pair's score is log(sum_i exp(gamma2 R_i)) / gamma2
    (eq. 8); the loss is the cross-entropy of the matching caption among the
    batch's captions and vice versa (eq. 9), scaled by gamma3. Samples that
    share a caption are not counted as negatives. A scalar; 0 for batch 1.
    """
    batch = regions.shape[0]
    if batch < 2:
        return regions.new_zeros(())
    words = prompt.tokens.to(regions.dtype)  # (B, T, D)
    mask = prompt.mask  # (B, T)
    # s[i, j, t, r]: word t of caption i against region r of image j.
    s = torch.einsum("itd,jrd->ijtr", words, regions)
    s = s.masked_fill(~mask[:, None, :, None], float("-inf"))
    s = torch.softmax(s, dim=2)  # normalise over words (eq. 6)
    s = s.masked_fill(~mask[:, None, :, None], 0.0)
    attn = torch.softmax(gamma1 * s, dim=3)  # over regions (eq. 7)
    context = torch.einsum("ijtr,jrd->ijtd", attn, regions)
    relevance = F.cosine_similarity(context, words[:, None], dim=-1)  # (B, B, T)
    relevance = (gamma2 * relevance).masked_fill(~mask[:, None, :], float("-inf"))
    word_scores = torch.logsumexp(relevance, dim=2) / gamma2  # (caption i, image j)
    sentence_scores = F.normalize(prompt.pooled.to(regions.dtype), dim=-1) @ F.normalize(image_global, dim=-1).t()

    same = _same_caption_matrix(captions, regions.device)
    labels = torch.arange(batch, device=regions.device)
    total = regions.new_zeros(())
    for scores in (word_scores, sentence_scores):
        logits = (gamma3 * scores).masked_fill(same, float("-inf"))
        total = total + F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)
    return total


# ------------------------------------------------------------- discriminators
class TextConditionedDiscriminator(nn.Module):
    """A small AttnGAN-style discriminator with conditional and unconditional logits.

    forward(image (B, 3, H, W), sentence (B, D)) -> (cond (B,), uncond (B,)).
    Four stride-2 4x4 convolutions (LeakyReLU) give a feature map; the
    unconditional logit is a 1x1 conv on it, the conditional one a 3x3 conv on
    [feature, projected sentence tiled over the map] then a 1x1 conv, both
    averaged over positions (so any patch size works).
    """

    def __init__(self, text_dim: int, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(depth):
            out = width * min(2**i, 8)
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.text_proj = nn.Linear(text_dim, width)
        self.uncond = nn.Conv2d(channels, 1, 1)
        self.cond = nn.Sequential(
            nn.Conv2d(channels + width, channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, image: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(image * 2 - 1)
        t = self.text_proj(sentence.to(f.dtype))[:, :, None, None].expand(-1, -1, *f.shape[-2:])
        cond = self.cond(torch.cat([f, t], dim=1)).mean((1, 2, 3))
        uncond = self.uncond(f).mean((1, 2, 3))
        return cond, uncond


class CLIPDiscriminatorHead(nn.Module):
    """GALIP's discriminator head on frozen CLIP image features, conditioned on the sentence.

    forward(regions (B, R, D), pooled (B, D), sentence (B, D)) -> logits (B,).
    The patch tokens are laid out on their grid (a single region becomes a
    1x1 map), two 3x3 convs (LeakyReLU) process them, the sentence is tiled
    over the map and a conv + global mean gives the logit. The CLIP tower
    itself lives in :class:`CLIPImageFeatures` and is never trained.
    """

    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(2 * dim, width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.joint = nn.Sequential(
            nn.Conv2d(width + dim, width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, regions: torch.Tensor, pooled: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        batch, count, dim = regions.shape
        side = int(round(math.sqrt(count)))
        if side * side != count:
            regions = regions.mean(1, keepdim=True)
            side = 1
        grid = regions.transpose(1, 2).reshape(batch, dim, side, side)
        # The pooled (class) feature sits beside every patch, as GALIP stacks global and local CLIP features.
        grid = torch.cat([grid, pooled[:, :, None, None].expand(-1, -1, side, side)], dim=1)
        f = self.image(grid)
        t = sentence.to(f.dtype)[:, :, None, None].expand(-1, -1, side, side)
        return self.joint(torch.cat([f, t], dim=1)).mean((1, 2, 3))


# ---------------------------------------------------------------- VGG19
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's IMAGENET1K_V1 weights
_VGG_LAYERS = (3, 8, 17, 26, 35)  # relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 in vgg19.features
_warned: set[str] = set()


def vgg19_weights_path(explicit: str | None = None) -> Path | None:
    """The VGG19 weights file to use: ``explicit`` if given (must exist), else torchvision's
    file in the torch hub cache if present, else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ValueError(f"VGG19 weights file not found: {path}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    return cached if cached.is_file() else None


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class VGGPerceptual(nn.Module):
    """Frozen VGG19 features at five ReLU layers; forward(sr, hr) -> weighted L1 sum (scalar)."""

    mean: torch.Tensor  # (1, 3, 1, 1) buffers: ImageNet normalisation
    std: torch.Tensor

    def __init__(self, weights_path: Path, layer_weights: Sequence[float]) -> None:
        super().__init__()
        from napari_textsr._torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        from torchvision.models.vgg import cfgs, make_layers

        # Only the convolutional part is needed; the classifier (120M parameters) is never built.
        features = make_layers(cfgs["E"], batch_norm=False)[: _VGG_LAYERS[-1] + 1]
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[0]) <= _VGG_LAYERS[-1]}
        try:
            features.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{weights_path} does not hold torchvision VGG19 weights: {error}") from error
        self.features = features.eval().requires_grad_(False)
        if len(layer_weights) != len(_VGG_LAYERS):
            raise ValueError(f"perceptual_layer_weights needs {len(_VGG_LAYERS)} values, got {len(layer_weights)}")
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None], persistent=False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_LAYERS:
                out.append(x)
        return out

    def train(self, mode: bool = True) -> "VGGPerceptual":
        super().train(mode)
        self.features.eval()  # no dropout/BN in vgg.features, but stay frozen anyway
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self._features(hr.float())
        total = sr.new_zeros((), dtype=torch.float32)
        for w, f, t in zip(self.layer_weights, self._features(sr.float()), targets):
            if w:
                total = total + w * F.l1_loss(f, t)
        return total


# ---------------------------------------------------------------- criteria
Weights = TypeVar("Weights", bound=LossWeights)


class SRCriterion(nn.Module, Generic[Weights]):
    """Base: a method's losses, for its loss-weights class ``Weights``. ``discriminator`` is None unless adversarial terms are on."""

    def __init__(self, weights: Weights) -> None:
        super().__init__()
        self.weights: Weights = weights
        self.discriminator: nn.Module | None = None
        self.notes: list[str] = []  # what was switched off and why (recorded in checkpoints)

    @classmethod
    def build(cls, weights: Weights, encoder: PromptEncoder, scale: int) -> SRCriterion[Weights]:
        """The criterion for ``weights``; every method's is built this way (:func:`build_criterion`).

        A subclass whose losses need the prompt encoder (CLIP features) or the
        scale overrides this; the base takes the weights only.
        """
        return cls(weights)

    def generator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:  # pragma: no cover - abstract
        raise NotImplementedError

    def discriminator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        raise RuntimeError(f"{type(self).__name__} has no discriminator (adversarial terms are off)")

    def prepare(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) model before the first step of a new run."""

    def schedule(self, model: nn.Module, step: int, steps_per_epoch: int) -> dict[str, float]:
        """Per-step training rules before ``step`` runs; returns values worth reporting."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state a resumed run needs (saved in train_state.pt)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def train(self, mode: bool = True) -> "SRCriterion":
        # Frozen feature networks (CLIP, VGG) stay in eval mode whatever the trainer does.
        super().train(mode)
        for module in self.modules():
            if isinstance(module, (CLIPImageFeatures, VGGPerceptual)):
                module.eval()
        return self


class TGSRCriterion(SRCriterion[TGSRLossWeights]):
    """TGSR's L_global + L_fine (see :class:`TGSRLossWeights`)."""

    @classmethod
    def build(cls, weights: TGSRLossWeights, encoder: PromptEncoder, scale: int) -> TGSRCriterion:
        return cls(weights, encoder, scale)

    def __init__(self, weights: TGSRLossWeights, encoder: PromptEncoder, scale: int) -> None:
        super().__init__(weights)
        self.scale = scale
        self.clip_features = None
        if not weights.consistency or weights.tic <= 0:
            pass
        elif encoder.spec.kind == "random":
            # DAMSM needs an image tower aligned with the text tower (the paper's
            # encoders are pretrained and frozen); a random one only adds noise.
            note = (
                f"text-image consistency loss (tic) off: the prompt encoder {encoder.spec} is randomly "
                "initialised, so its image and text features are not aligned"
            )
            self.notes.append(note)
            _warn_once("tic-random", note)
        else:
            self.clip_features = CLIPImageFeatures(encoder)
        if weights.adversarial and weights.cgan > 0:
            # One discriminator per output, as AttnGAN has one per scale: the coarse
            # image's "real" counterpart is the low-passed target, not the sharp one.
            self.discriminator = nn.ModuleDict(
                {
                    "coarse": TextConditionedDiscriminator(encoder.embed_dim),
                    "fine": TextConditionedDiscriminator(encoder.embed_dim),
                }
            )

    def lowpass(self, hr: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(hr, self.weights.lowpass_sigma * self.scale)

    def tar_weights(self, output: SROutput, prompt: PromptEmbedding) -> torch.Tensor | None:
        """(B, 1, H, W) pixel weights from the top-k word attention maps, mean 1 per image.

        A word's map is the sum of the maps of its BPE pieces; the k words with
        the largest total attention are kept (all words if fewer). Each kept
        map is divided by its mean so that the keywords count equally and a
        uniform attention gives plain L2. The maps are detached: they weight
        pixels, and letting this loss move attention towards low-error regions
        would teach the attention to hide errors. A map with no attention at
        all counts as uniform. The end-of-text token is not a word and is
        skipped unless it is the only token (empty caption).
        """
        attention = output.aux.get("word_attention")
        if attention is None:
            return None
        attention = attention.detach().float()
        weights = []
        for b in range(attention.shape[0]):
            groups = [positions for word, positions in prompt.whole_words(b) if word != SENTENCE_TOKEN]
            if not groups:
                groups = [[t for t, real in enumerate(prompt.mask[b].tolist()) if real]]
            maps = torch.stack([attention[b, positions].sum(0) for positions in groups])  # (W, H, W)
            k = min(self.weights.tar_top_k, maps.shape[0])
            top = maps.sum((1, 2)).topk(k).indices
            chosen = maps[top]
            mean = chosen.mean((1, 2), keepdim=True)
            # A map without any attention (degenerate) weights every pixel alike.
            chosen = torch.where(mean > 1e-12, chosen / mean.clamp_min(1e-12), torch.ones_like(chosen))
            weights.append(chosen.mean(0, keepdim=True))
        return torch.stack(weights)

    def _tic(self, image: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]) -> torch.Tensor:
        assert self.clip_features is not None
        pooled, regions = self.clip_features(image)
        w = self.weights
        return damsm_loss(regions, pooled, prompt, captions, w.damsm_gamma1, w.damsm_gamma2, w.damsm_gamma3)

    def generator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        w = self.weights
        sr = output.image.float()
        coarse = output.aux.get("coarse")
        terms: LossTerms = {}
        if w.l2_coarse > 0 and coarse is not None:
            terms["l2_coarse"] = w.l2_coarse * F.mse_loss(coarse.float(), self.lowpass(hr))
        if w.tar > 0:
            pixel_weights = self.tar_weights(output, prompt)
            squared = (sr - hr).pow(2)
            terms["tar"] = w.tar * (squared.mean() if pixel_weights is None else (pixel_weights * squared).mean())
        if self.clip_features is not None:
            tic = self._tic(sr, prompt, captions)
            if coarse is not None:
                tic = tic + self._tic(coarse.float(), prompt, captions)
            terms["tic"] = w.tic * tic
        if w.kl > 0 and "ca_mu" in output.aux:
            mu, logvar = output.aux["ca_mu"].float(), output.aux["ca_logvar"].float()
            terms["kl"] = w.kl * torch.mean(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()))
        if self.discriminator is not None:
            sentence = prompt.pooled.float()
            g = sr.new_zeros(())
            for name, image in (("fine", sr), ("coarse", coarse)):
                if image is None:
                    continue
                cond, uncond = self.discriminator.get_submodule(name)(image.float(), sentence)
                ones = torch.ones_like(cond)
                g = (
                    g
                    + F.binary_cross_entropy_with_logits(cond, ones)
                    + F.binary_cross_entropy_with_logits(uncond, ones)
                )
            terms["cgan"] = w.cgan * g
        total = sum(terms.values(), sr.new_zeros(()))
        return total, terms

    def discriminator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        if self.discriminator is None:
            return super().discriminator_loss(output, hr, prompt, captions)
        sentence = prompt.pooled.float()
        order, valid = _mismatched_order(captions)
        valid_t = torch.tensor(valid, device=hr.device)
        total = hr.new_zeros(())
        terms: LossTerms = {}
        coarse = output.aux.get("coarse")
        for name, fake, real in (
            ("fine", output.image, hr),
            ("coarse", coarse, self.lowpass(hr) if coarse is not None else None),
        ):
            if fake is None:
                continue
            d = self.discriminator.get_submodule(name)
            real_cond, real_uncond = d(real, sentence)
            fake_cond, fake_uncond = d(fake.detach().float(), sentence)
            ones, zeros = torch.ones_like(real_cond), torch.zeros_like(real_cond)
            bce = F.binary_cross_entropy_with_logits
            # AttnGAN: (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3
            loss = (bce(real_uncond, ones) + bce(real_cond, ones)) / 2
            wrong = bce(d(real, sentence[order])[0], zeros, reduction="none")
            wrong = (wrong * valid_t).sum() / valid_t.sum().clamp_min(1)
            loss = loss + (bce(fake_uncond, zeros) + bce(fake_cond, zeros) + wrong) / 3
            terms[f"d_{name}"] = loss
            total = total + loss
        return total, terms


class CLIPSRCriterion(SRCriterion[CLIPSRLossWeights]):
    """CLIP-SR's L_rec + L_per + lambda_adv * L_adv (see :class:`CLIPSRLossWeights`)."""

    @classmethod
    def build(cls, weights: CLIPSRLossWeights, encoder: PromptEncoder, scale: int) -> CLIPSRCriterion:
        return cls(weights, encoder)

    def __init__(self, weights: CLIPSRLossWeights, encoder: PromptEncoder) -> None:
        super().__init__(weights)
        self.perceptual: VGGPerceptual | None = None
        if weights.perceptual > 0:
            path = vgg19_weights_path(weights.vgg_weights)
            if path is None:
                note = (
                    "perceptual loss off: VGG19 weights are not in the torch hub cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints' / VGG19_FILE}); give a file with "
                    "loss setting vgg_weights=PATH or fetch them once with "
                    "python -c \"import torchvision; torchvision.models.vgg19(weights='DEFAULT')\""
                )
                self.notes.append(note)
                _warn_once("vgg19", note)
            else:
                self.perceptual = VGGPerceptual(path, weights.perceptual_layer_weights)
        self.clip_features: CLIPImageFeatures | None = None
        if weights.adversarial and weights.adversarial_weight > 0:
            self.clip_features = CLIPImageFeatures(encoder)
            self.discriminator = CLIPDiscriminatorHead(encoder.embed_dim)

    def generator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        w = self.weights
        sr = output.image.float()
        terms: LossTerms = {}
        if w.l1 > 0:
            terms["l1"] = w.l1 * F.l1_loss(sr, hr)
        if self.perceptual is not None:
            terms["perceptual"] = w.perceptual * self.perceptual(sr, hr)
        if self.discriminator is not None:
            assert self.clip_features is not None
            sentence = prompt.pooled.float()
            pooled, regions = self.clip_features(sr)
            adversarial = -self.discriminator(regions, pooled, sentence).mean()
            similarity = F.cosine_similarity(pooled, sentence, dim=-1).mean()
            terms["adv"] = w.adversarial_weight * (adversarial - w.similarity_alpha * similarity)
        total = sum(terms.values(), sr.new_zeros(()))
        return total, terms

    def discriminator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        if self.discriminator is None:
            return super().discriminator_loss(output, hr, prompt, captions)
        assert self.clip_features is not None
        w = self.weights
        sentence = prompt.pooled.float()
        with torch.no_grad():
            real_pooled, real_regions = self.clip_features(hr)
            fake_pooled, fake_regions = self.clip_features(output.image.detach().float())
        order, valid = _mismatched_order(captions)
        valid_t = torch.tensor(valid, device=hr.device, dtype=torch.float32)
        # Hinge loss with matched real, fake and mismatched-text real (GALIP / DF-GAN).
        real_regions = real_regions.detach().requires_grad_(w.gradient_penalty > 0)
        real_sentence = sentence.detach().requires_grad_(w.gradient_penalty > 0)
        real_logits = self.discriminator(real_regions, real_pooled, real_sentence)
        fake_logits = self.discriminator(fake_regions, fake_pooled, sentence)
        wrong_logits = self.discriminator(real_regions.detach(), real_pooled, sentence[order])
        wrong = (F.relu(1 + wrong_logits) * valid_t).sum() / valid_t.sum().clamp_min(1)
        loss = F.relu(1 - real_logits).mean() + 0.5 * F.relu(1 + fake_logits).mean() + 0.5 * wrong
        terms: LossTerms = {"d_hinge": loss}
        if w.gradient_penalty > 0:
            # Matching-aware gradient penalty on (real image features, matching text).
            grads = torch.autograd.grad(real_logits.sum(), (real_regions, real_sentence), create_graph=True)
            squared = cast(torch.Tensor, sum(g.flatten(1).pow(2).sum(1) for g in grads))  # (B,)
            norm = torch.sqrt(squared + 1e-12)
            terms["d_gp"] = w.gradient_penalty * norm.pow(w.gradient_penalty_power).mean()
            loss = loss + terms["d_gp"]
        return loss, terms


class PDNCriterion(SRCriterion[PDNLossWeights]):
    """PDN's L1 (and optional L2) and its kernel-temperature schedule (see :class:`PDNLossWeights`)."""

    def __init__(self, weights: PDNLossWeights) -> None:
        super().__init__(weights)
        self.initial_temperature: float | None = weights.kernel_temperature

    def temperature_at(self, step: int, steps_per_epoch: int) -> float | None:
        """Kernel temperature for ``step`` (0-based): T0 / decay ** floor(epoch / every)."""
        w = self.weights
        if self.initial_temperature is None:
            return None
        epoch = step // max(1, w.epoch_steps or steps_per_epoch)
        return self.initial_temperature / w.kernel_temperature_decay ** (epoch // max(1, w.kernel_temperature_every))

    def prepare(self, model: nn.Module) -> None:
        if self.initial_temperature is None:
            dcms = getattr(model, "dcms", None)
            if dcms:
                self.initial_temperature = float(dcms[0].temperature)

    def schedule(self, model: nn.Module, step: int, steps_per_epoch: int) -> dict[str, float]:
        set_temperature = getattr(model, "set_kernel_temperature", None)
        value = self.temperature_at(step, steps_per_epoch)
        if set_temperature is None or value is None:
            return {}
        set_temperature(value)
        return {"kernel_temperature": value}

    def extra_state(self) -> dict[str, Any]:
        return {"initial_temperature": self.initial_temperature}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.initial_temperature = state.get("initial_temperature", self.initial_temperature)

    def generator_loss(
        self, output: SROutput, hr: torch.Tensor, prompt: PromptEmbedding, captions: Sequence[str]
    ) -> tuple[torch.Tensor, LossTerms]:
        w = self.weights
        sr = output.image.float()
        terms: LossTerms = {"l1": w.l1 * F.l1_loss(sr, hr)} if w.l1 > 0 else {}
        if w.l2 > 0:
            terms["l2"] = w.l2 * F.mse_loss(sr, hr)
        return sum(terms.values(), sr.new_zeros(())), terms


def build_criterion(weights: LossWeights, encoder: PromptEncoder, scale: int) -> SRCriterion[Any]:
    """The criterion of ``weights.method`` from the method table (frozen feature networks built from ``encoder``).

    ValueError when ``weights`` is not the table's loss-weights class of its method.
    """
    entry = get_method(weights.method)
    if not isinstance(weights, entry.loss_weights_class()):
        raise ValueError(f"no criterion for {type(weights).__name__}: {entry.name}'s weights are {entry.loss_weights}")
    return entry.criterion_class().build(weights, encoder, scale)
