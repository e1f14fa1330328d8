"""TGSR: Text-Guided Super-Resolution (seed papers 000/001, Ma et al. 2022).

A coarse-to-fine network with two branches, both a pyramid of log2(scale)
x2 stages (conv3x3 + ReLU, residual block, 6x6 stride-2 deconvolution + ReLU):

* the *global branch* fuses per-word text features into the image features
  with a Text Attention Module (TAM, AttnGAN) after every deconvolution and
  passes image feature + word context on to the next stage; a 3x3 conv on the
  last stage gives the coarse image ``I_G``;
* the *refine branch* upscales the LR image again with the same stages, takes
  the global branch's feature of the same scale in at every stage, and a 3x3
  conv gives the final image.

Adaptations to the paper, each for a reason given where it is made: a bicubic
skip on both outputs, the authors' conditioning augmentation of the sentence
vector as a per-image bias, no batch norm (tiles must be exact), a
``fusion_merge="add"`` option that merges the word context more cheaply than
widening the next convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr.models.base import ModelConfig, SROutput, TextSRModel, TilingInfo
from napari_textsr.models.blocks import ResBlock, bicubic_upsample, conv3x3
from napari_textsr.prompts import PromptEmbedding

FUSION_MERGES = ("concat", "add")


@dataclass
class TGSRConfig(ModelConfig):
    """TGSR hyper-parameters.

    ``n_feats``: filters of every conv/deconv (64 in the paper).
    ``fusion_merge``: how a stage's word context joins its image feature.
    ``"concat"`` is the paper: [feature, context] is concatenated and the next
    stage's 3x3 conv (and the refine branch) read 2 * n_feats channels.
    ``"add"`` is concatenation followed by a 1x1 merge conv whose image half is
    the identity, computed cheaply (see :class:`TextAttentionModule`). Fixing
    the image half to the identity loses nothing: every consumer of the merged
    map is a conv, which absorbs any invertible 1x1 map on it. What "add" gives
    up is a separate 3x3 kernel for the context. It is the ``default`` because
    "concat" makes text fusion cost 1.44x the text-free baseline's CPU time
    (x4, 512x512 LR, 1 thread; benchmarks/fusion_cost.py --method tgsr) against ~1.1x
    for "add", and needs 4.3 GB instead of 2.5 GB.
    ``conditioning_augmentation``: the authors' CA net on the sentence vector
    (``ca_dim`` wide), injected as a per-image bias of the first global conv.
    ``bicubic_skip``: both outputs learn a residual over bicubic upsampling.
    """

    n_feats: int = 32
    fusion_merge: str = "add"
    conditioning_augmentation: bool = True
    ca_dim: int = 16
    bicubic_skip: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(n_feats=4, ca_dim=4),
        "small": dict(n_feats=16, ca_dim=8),
        "default": dict(n_feats=32, ca_dim=16, fusion_merge="add"),
        # Section 3.3: 64 filters, context concatenated into the next conv; CA width of AttnGAN.
        "paper": dict(n_feats=64, ca_dim=100, fusion_merge="concat", bicubic_skip=False),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fusion_merge not in FUSION_MERGES:
            raise ValueError(f"fusion_merge must be one of {FUSION_MERGES}, got {self.fusion_merge!r}")
        if self.n_feats <= 0 or self.ca_dim <= 0:
            raise ValueError("n_feats and ca_dim must be positive")


class TextAttentionModule(nn.Module):
    """AttnGAN's word attention: each pixel attends over the caption's words.

    forward(feature (B, C, h, w), words (B, T, D), mask (B, T) bool)
    -> (context (B, C, h, w), attention (B, T, h, w)).

    Words are projected to the image width (AttnGAN's 1x1 conv on words),
    scores are the per-pixel dot products with the image feature (scaled by
    1/sqrt(C) so the softmax is not saturated at initialisation), the softmax
    runs over the words with masked tokens excluded (their attention is exactly
    0), and the context is the attention-weighted sum of the projected words.

    With ``value_projection`` the context is additionally passed through a
    linear map ``W_c`` that is applied to the T projected words rather than to
    the h*w context vectors; ``W_c (sum_t a_t e_t) = sum_t a_t (W_c e_t)``, so
    this is exactly the context half of a 1x1 conv on [feature, context] at a
    cost of T*C*C per image instead of C*C per pixel.
    """

    def __init__(self, channels: int, word_dim: int, value_projection: bool) -> None:
        super().__init__()
        self.word_proj = nn.Linear(word_dim, channels, bias=False)
        self.value_proj = nn.Linear(channels, channels, bias=False) if value_projection else None
        self.score_scale = channels**-0.5

    def forward(
        self, feature: torch.Tensor, words: torch.Tensor, mask: torch.Tensor, residual: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual=True`` returns ``feature + context`` instead of the context.

        Without autograd on the CPU, ``residual=True`` adds the context into
        ``feature``'s memory (TGSR never reads the feature again).
        """
        batch, channels, height, width = feature.shape
        keys = self.word_proj(words.to(feature.dtype))  # (B, T, C)
        values = keys if self.value_proj is None else self.value_proj(keys)
        keys = keys * self.score_scale
        # Masked tokens get an additive -max score, folded into the score
        # matmul; batch-1 inference never pads, so usually there is none.
        score_bias = None
        if not bool(mask.all()):
            score_bias = torch.zeros(mask.shape, dtype=keys.dtype, device=keys.device)
            score_bias = score_bias.masked_fill(~mask, torch.finfo(keys.dtype).min)[:, :, None]
        # Pixel-major (B, h*w, C) is a free view of a channels-last feature;
        # attention is word-major (B, T, h*w), i.e. contiguous per-word maps.
        pixels = feature.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        if feature.device.type == "cpu" and not torch.is_grad_enabled():
            context, attention = _attend_in_chunks(pixels, keys, values, score_bias, residual)
        else:
            pixels_t = pixels.transpose(1, 2)
            scores = torch.bmm(keys, pixels_t)
            if score_bias is not None:
                scores = scores + score_bias
            attention = torch.softmax(scores, dim=1)  # (B, T, h*w)
            weights = attention.transpose(1, 2)
            context = torch.baddbmm(pixels, weights, values) if residual else torch.bmm(weights, values)
        return (
            context.reshape(batch, height, width, channels).permute(0, 3, 1, 2),  # channels-last view
            attention.reshape(batch, -1, height, width),
        )


def _attend_in_chunks(
    pixels: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    score_bias: torch.Tensor | None,
    residual: bool,
    chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The TAM's attention over pixel chunks, for CPU inference (no autograd).

    The same values as the autograd path, but the (T, h*w) scores never exist
    at full size (each chunk's stay in cache) and ``residual`` adds into
    ``pixels`` in place instead of allocating a new feature map. At the x4
    output scale of a 512x512 input (2048x2048, 12 tokens, 32 channels) this
    takes the TAM from ~1.0 s to ~0.45 s CPU time (1 thread).
    pixels (B, N, C), keys (B, T, C) already scaled, values (B, T, C),
    score_bias (B, T, 1) -> context (B, N, C), attention (B, T, N).
    """
    batch, n, _ = pixels.shape
    attention = pixels.new_empty(batch, keys.shape[1], n)
    context = pixels if residual else pixels.new_empty(batch, n, values.shape[2])
    for b in range(batch):
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            p = pixels[b, rows]
            scores = keys[b] @ p.t() if score_bias is None else torch.addmm(score_bias[b], keys[b], p.t())
            weights = attention[b, :, rows]
            # Softmax over the words (dim 0) runs vectorised along the pixels.
            weights.copy_(torch.softmax(scores, dim=0))
            if residual:
                p.addmm_(weights.t(), values[b])
            else:
                torch.mm(weights.t(), values[b], out=context[b, rows])
    return context, attention


class ConditioningAugmentation(nn.Module):
    """StackGAN/AttnGAN CA net: sentence (B, D) -> code (B, ca_dim), mu, logvar.

    Training draws ``mu + eps * exp(logvar / 2)`` (the paper's smoothing of the
    text manifold; the KL term on mu/logvar belongs in the loss); eval returns
    ``mu`` so inference is deterministic and tiles agree.
    """

    def __init__(self, sentence_dim: int, ca_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(sentence_dim, 4 * ca_dim)
        self.ca_dim = ca_dim

    def forward(self, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = F.glu(self.fc(sentence), dim=-1)
        mu, logvar = hidden[:, : self.ca_dim], hidden[:, self.ca_dim :]
        if self.training:
            code = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            code = mu
        return code, mu, logvar


class UpStage(nn.Module):
    """One pyramid stage: conv3x3 + ReLU, residual block, 6x6/2 deconv + ReLU.

    forward(x (B, in, h, w), bias (B, C) or None) -> (B, C, 2h, 2w). Kernel 6,
    stride 2, padding 2 gives exactly twice the size for any h, w.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, channels)
        self.res = ResBlock(channels)
        self.deconv = nn.ConvTranspose2d(channels, channels, 6, stride=2, padding=2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(x)
        if bias is not None:
            x = x + bias[:, :, None, None]
        # In place: these maps are fresh conv outputs, and at the output scale
        # a new allocation per ReLU costs as much as the ReLU itself.
        x = self.res(F.relu(x, inplace=True))
        return F.relu(self.deconv(x), inplace=True)


def conv_on_concat(conv: nn.Conv2d, parts: list[torch.Tensor]) -> torch.Tensor:
    """``conv(torch.cat(parts, dim=1))`` as a sum of convs over the weight's channel slices.

    For the 3-channel output convs at the output scale this is ~2x faster on
    CPU than building the (B, 2C, s*h, s*w) concatenation, and saves its memory.
    """
    out = None
    start = 0
    for part in parts:
        weight = conv.weight[:, start : start + part.shape[1]]
        start += part.shape[1]
        partial = F.conv2d(part, weight, None, conv.stride, conv.padding)
        out = partial if out is None else out + partial
    assert out is not None and start == conv.in_channels
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def unique_names(words: list[str]) -> list[str]:
    """["i", "x", "i"] -> ["i", "x", "i (2)"]: attention maps need distinct names."""
    seen: dict[str, int] = {}
    names = []
    for word in words:
        word = word or "?"
        seen[word] = seen.get(word, 0) + 1
        names.append(word if seen[word] == 1 else f"{word} ({seen[word]})")
    return names


class TGSR(TextSRModel):
    """Global (text-attention) branch + refine branch.

    forward(lr (B, 3, h, w) float in [0, 1], prompt) -> SROutput with

    * image: (B, 3, s*h, s*w) from the refine branch;
    * attention: one (B, 1, s*h, s*w) map per word of the first caption
      (the last TAM's word attention, summed over a word's BPE pieces), named
      by the word and made unique ("i", "i (2)"), in caption order;
    * aux: ``coarse`` (B, 3, s*h, s*w) the global branch's I_G;
      ``word_attention`` (B, T, s*h, s*w), 0 at masked tokens; ``ca_mu`` /
      ``ca_logvar`` (B, ca_dim) for the conditioning-augmentation KL term.
      Without text fusion only ``coarse``.
    """

    method = "tgsr"
    config_class = TGSRConfig

    def __init__(self, config: TGSRConfig) -> None:
        super().__init__(config)
        c = config.n_feats
        self.n_stages = int(math.log2(config.scale))
        fuse = config.text_fusion
        # Width of the global feature handed to the next stage and to the refine branch.
        global_width = 2 * c if fuse and config.fusion_merge == "concat" else c
        self.global_stages = nn.ModuleList(
            UpStage(config.in_channels if i == 0 else global_width, c) for i in range(self.n_stages)
        )
        if fuse:
            self.tams = nn.ModuleList(
                TextAttentionModule(c, config.prompt_dim, value_projection=config.fusion_merge == "add")
                for _ in range(self.n_stages)
            )
            if config.conditioning_augmentation:
                self.text_ca = ConditioningAugmentation(config.prompt_dim, config.ca_dim)
                self.text_sentence_bias = nn.Linear(config.ca_dim, c)
        self.global_out = conv3x3(global_width, config.in_channels)
        self.refine_stages = nn.ModuleList(
            UpStage(config.in_channels if i == 0 else c + global_width, c) for i in range(self.n_stages)
        )
        self.refine_out = conv3x3(c + global_width, config.in_channels)

    def forward(self, lr: torch.Tensor, prompt: PromptEmbedding) -> SROutput:
        config: TGSRConfig = self.config  # type: ignore[assignment]
        fuse = config.text_fusion
        # Channels-last: the 6x6 deconvolutions run ~2.5x faster on CPU
        # (oneDNN) and the TAM reads pixels as (h*w, C) rows without a copy.
        x = (lr - 0.5).contiguous(memory_format=torch.channels_last)
        aux: dict[str, torch.Tensor] = {}

        sentence_bias = None
        if fuse and config.conditioning_augmentation:
            code, mu, logvar = self.text_ca(prompt.pooled.to(x.dtype))
            sentence_bias = self.text_sentence_bias(code)
            aux["ca_mu"], aux["ca_logvar"] = mu, logvar

        # Each scale's global feature as the list of maps that would be
        # concatenated ([feature, context] for "concat"), so the output convs
        # can skip building the concatenation.
        global_features: list[list[torch.Tensor]] = []
        stage_input = x
        word_attention = None
        for i, stage in enumerate(self.global_stages):
            feature = stage(stage_input, sentence_bias if i == 0 else None)
            parts = [feature]
            if fuse:
                add = config.fusion_merge == "add"
                context, word_attention = self.tams[i](feature, prompt.tokens, prompt.mask, residual=add)
                parts = [context] if add else [feature, context]
            global_features.append(parts)
            stage_input = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

        # Bicubic skip: trained for minutes on a CPU, a network that must also
        # learn the identity upsampling from scratch stays blurry and off in
        # colour; a residual over bicubic starts from a sensible image and
        # spends its capacity on details (both outputs, so I_G is comparable).
        base = bicubic_upsample(lr, config.scale) if config.bicubic_skip else 0.5
        coarse = conv_on_concat(self.global_out, global_features[-1]) + base

        refined = x
        for i, stage in enumerate(self.refine_stages):
            refined = stage(refined if i == 0 else torch.cat([refined, *global_features[i - 1]], dim=1))
        image = conv_on_concat(self.refine_out, [refined, *global_features[-1]]) + base

        aux["coarse"] = coarse.contiguous()
        attention: dict[str, torch.Tensor] = {}
        if fuse:
            assert word_attention is not None
            aux["word_attention"] = word_attention
            # One map per word of the first caption: a word split into BPE
            # pieces ("mit" + "osis") gets the sum of its pieces' attention,
            # i.e. the share of each pixel's attention that went to the word.
            words = prompt.whole_words(0)
            names = unique_names([word for word, _ in words])
            attention = {
                name: word_attention[:, positions].sum(1, keepdim=True)
                if len(positions) > 1
                else word_attention[:, positions[0] : positions[0] + 1]
                for name, (_, positions) in zip(names, words)
            }
        return SROutput(image=image.contiguous(), attention=attention, aux=aux)

    def tiling_info(self) -> TilingInfo:
        config: TGSRConfig = self.config  # type: ignore[assignment]
        # Stage i works at 2^i times the LR resolution: conv (1 px) + residual
        # block (2 px) + deconvolution (an output pixel reads input pixels
        # within 1.5 px, counted as 2): 5 px there = 5 / 2^i LR px. The refine
        # branch reads the global feature of the same scale, so its reach is
        # the same; the output conv adds 1 px at the output scale, the bicubic
        # skip 2 LR px (added, not maxed: generous). TAM and the sentence bias
        # act per pixel.
        reach = sum(5 / 2**i for i in range(self.n_stages)) + 1 / config.scale
        receptive_field = math.ceil(reach) + 2
        c, s = config.n_feats, config.scale
        global_width = 2 * c if config.text_fusion and config.fusion_merge == "concat" else c
        # Live float32 maps at the output scale dominate: the global feature
        # (and context), the refine feature, deconv and attention temporaries
        # (~16 tokens), images; the previous scale adds a quarter. Generous:
        # "default" x4 estimates 20 KB/LR px; its measured peak on a 512x512
        # input is 2.45 GB RSS (CPU, inference_mode), i.e. ~8 KB/LR px.
        per_output_px = 2 * global_width + 3 * c + (c + global_width) + (16 if config.text_fusion else 0) + 12
        bytes_per_lr_pixel = int(4 * s * s * per_output_px * 1.25)
        return TilingInfo(receptive_field=receptive_field, min_size=1, bytes_per_lr_pixel=bytes_per_lr_pixel)
