"""CLIP-SR: text-image fusion blocks, a prompted CLIP-ViT and iterative refinement (seed papers 002/003).

Pipeline (all at LR resolution until the upsampler)::

    lr -> E_I (convs) -> TIFBlock -> + CLIP-ViT(fused, prompts)            # ViT output is ADDED
       -> n_iterations x [f + conv(TIFBlock(conv(f)))] -> conv + skip from E_I
       -> (conv3x3 + PixelShuffle(2)) x log2(s) -> conv -> + bicubic(lr)

Text enters as in the paper: through the channel-wise affines (gamma/beta
from the sentence vector) of the first TIFBlock and of the TIFBlock in every
refinement iteration, and through the prompt predictor's tokens that are
appended to the CLIP-ViT's visual tokens.

Adaptations to a tileable, any-size, any-scale model (the authors' code is
fixed to 64x64 -> 256x256 and, per DESIGN.md, discards the ViT output):

* The image encoder keeps LR resolution instead of pooling to an 8x8 map.
* The ViT attends inside non-overlapping windows of ``window x window``
  tokens aligned to absolute image coordinates (each token is a
  ``patch_size`` x ``patch_size`` LR patch). Each window carries its own class
  token and positional embedding, exactly as CLIP sees one image, so
  pretrained blocks apply unchanged, and tiles whose origins are multiples of
  the window (``window * patch_size`` LR pixels) reproduce the untiled result
  exactly.
* The ViT's tokens are mapped back to the LR feature grid (linear +
  PixelShuffle) and added to the features, so the branch reaches the image.

``text_fusion=False`` removes the affines (a TIFBlock becomes its ReLU) and the
prompt tokens; everything else, the ViT included, stays: the benchmark baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr.models.base import ModelConfig, SROutput, TextSRModel, TilingInfo
from napari_textsr.models.blocks import PixelShuffleUpsampler, ResBlock, bicubic_upsample, conv3x3
from napari_textsr.prompts import PromptEmbedding

if TYPE_CHECKING:
    from napari_textsr.prompts import PromptEncoder


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


@dataclass
class CLIPSRConfig(ModelConfig):
    n_feats: int = 32
    n_encoder_blocks: int = 1  # residual blocks of E_I after its first conv
    tif_hidden: int = 0  # hidden width of the affine MLPs; 0 -> n_feats (DF-GAN)
    vit_width: int = 128
    vit_heads: int = 4
    vit_layers: int = 4
    vit_mlp_ratio: float = 4.0
    # "gelu", or "quick_gelu" to match OpenAI's CLIP weights (open_clip's *-quickgelu models).
    vit_activation: str = "gelu"
    patch_size: int = 2  # LR pixels per ViT token side
    window: int = 8  # ViT attention window side, in tokens
    # One prompt token per prompted block, as GALIP's CLIP mapper does: token k
    # is appended before block first_prompt_block + k and dropped after it.
    n_prompts: int = 4
    first_prompt_block: int = 0
    n_iterations: int = 4
    vit_output_gain: float = 0.3  # init scale of the ViT -> features projection
    bicubic_skip: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # ViT matches textsr-tiny's visual tower (width 32, 2 heads, 1 block, 4x4 grid).
        "tiny": dict(
            n_feats=8, vit_width=32, vit_heads=2, vit_layers=1, window=4, patch_size=2, n_prompts=1, n_iterations=2
        ),
        "small": dict(
            n_feats=16, vit_width=32, vit_heads=2, vit_layers=1, window=4, patch_size=2, n_prompts=1, n_iterations=4
        ),
        # ViT matches textsr-clip-s (width 128, 4 heads, 4 blocks, 8x8 grid).
        "default": dict(
            n_feats=32, vit_width=128, vit_heads=4, vit_layers=4, window=8, patch_size=4, n_prompts=4, n_iterations=4
        ),
        # ViT-B/32: width 768, 12 heads, 12 blocks, 7x7 grid; 8 prompts before blocks 1-8 (GALIP).
        "paper": dict(
            n_feats=64,
            n_encoder_blocks=2,
            vit_width=768,
            vit_heads=12,
            vit_layers=12,
            window=7,
            patch_size=4,
            n_prompts=8,
            first_prompt_block=1,
            n_iterations=4,
        ),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_feats", "vit_width", "vit_heads", "vit_layers", "patch_size", "window", "n_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vit_width % self.vit_heads:
            raise ValueError(f"vit_width {self.vit_width} is not divisible by vit_heads {self.vit_heads}")
        if self.vit_activation not in _ACTIVATIONS:
            raise ValueError(f"vit_activation must be one of {sorted(_ACTIVATIONS)}, got {self.vit_activation!r}")
        if self.n_prompts < 0 or self.first_prompt_block < 0:
            raise ValueError("n_prompts and first_prompt_block must be >= 0")
        if self.first_prompt_block + self.n_prompts > self.vit_layers:
            raise ValueError(
                f"{self.n_prompts} prompt tokens from block {self.first_prompt_block} need "
                f"{self.first_prompt_block + self.n_prompts} ViT blocks, the ViT has {self.vit_layers}"
            )

    @property
    def window_pixels(self) -> int:
        """Side of one attention window in LR pixels (the tiling alignment)."""
        return self.window * self.patch_size


def reweight_text(pooled: torch.Tensor) -> torch.Tensor:
    """The paper's Softmax(F_T) re-weighting of the sentence vector, (B, D) -> (B, D).

    ``pooled`` is L2-normalised, so its entries are ~1/sqrt(D) and a plain
    softmax would be uniform to within a few percent (every entry ~1/D): the
    caption would barely reach the MLPs. Scaling by sqrt(D) gives unit-variance
    logits; multiplying the softmax by D makes the weights average 1.
    """
    d = pooled.shape[-1]
    return torch.softmax(pooled.float() * math.sqrt(d), dim=-1) * d


class TextAffine(nn.Module):
    """DF-GAN affine: gamma = MLP1(t), beta = MLP2(t); x -> gamma * x + beta per channel."""

    def __init__(self, channels: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        # Start near identity (gamma ~ 1, beta ~ 0) so the untrained fusion
        # leaves the backbone intact, yet not exactly at it: captions then
        # already differ slightly and the first layers receive gradients.
        for mlp, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.normal_(mlp[2].get_parameter("weight"), std=0.01)
            nn.init.constant_(mlp[2].get_parameter("bias"), bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w), text (B, D) re-weighted sentence vector -> (B, C, h, w)."""
        gamma = self.gamma(text).to(x.dtype)[:, :, None, None]
        beta = self.beta(text).to(x.dtype)[:, :, None, None]
        return torch.addcmul(beta, gamma, x)


class TIFBlock(nn.Module):
    """Text-Image Fusion Block: (channel-wise affine -> ReLU) twice, as DF-GAN's fusion block.

    forward(x (B, C, h, w), text (B, D)) -> (B, C, h, w).
    """

    def __init__(self, channels: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.affine1 = TextAffine(channels, text_dim, hidden)
        self.affine2 = TextAffine(channels, text_dim, hidden)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        # In-place ReLUs: the affine outputs are fresh tensors, and the
        # fusion's cost over the text-free block is mostly memory traffic.
        x = self.affine1(x, text).relu_()
        return self.affine2(x, text).relu_()


class PromptPredictor(nn.Module):
    """FC + self-attention: sentence vector (B, D) -> prompt tokens (B, n_prompts, width).

    The FC layer is GALIP's mapper (Linear(D -> n x width)); the residual
    pre-LN self-attention lets the prompt tokens condition on each other
    (the paper's "text-driven attention").
    """

    def __init__(self, text_dim: int, n_prompts: int, width: int, heads: int) -> None:
        super().__init__()
        self.n_prompts = n_prompts
        self.width = width
        self.fc = nn.Linear(text_dim, n_prompts * width)
        self.ln = nn.LayerNorm(width)
        self.attn = WindowAttention(width, heads)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        d = pooled.shape[-1]
        # Unit-variance entries (pooled is L2-normalised) keep the FC's default init well scaled.
        tokens = self.fc(pooled * math.sqrt(d)).view(pooled.shape[0], self.n_prompts, self.width)
        return tokens + self.attn(self.ln(tokens))


class WindowAttention(nn.Module):
    """Multi-head self-attention over (N, L, width) with nn.MultiheadAttention's parameter names.

    The names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) let open_clip's
    ``ResidualAttentionBlock.attn`` weights load as they are.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        head_dim = width // self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block laid out like open_clip's (ln_1, attn, ln_2, mlp.c_fc/gelu/c_proj)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str = "gelu") -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = WindowAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", _ACTIVATIONS[activation]())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CLIPViTStage(nn.Module):
    """CLIP-ViT on a feature map, attention in absolute-aligned windows, output back on the grid.

    forward(f (B, C, h, w), prompts (B, n_prompts, width) or None) -> (B, C, h, w),
    the ViT's contribution to add to ``f``. Any h, w: the map is padded
    (replicate) to a multiple of the window inside and cropped afterwards.
    """

    def __init__(self, config: CLIPSRConfig) -> None:
        super().__init__()
        c, width, p = config.n_feats, config.vit_width, config.patch_size
        self.patch_size = p
        self.window = config.window
        self.first_prompt_block = config.first_prompt_block
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(c, width, p, stride=p)
        # Per-window class token and positions, laid out like open_clip's
        # VisionTransformer so they load from a grid of the same size.
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + config.window**2, width))
        self.ln_pre = nn.LayerNorm(width)
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, config.vit_heads, config.vit_mlp_ratio, config.vit_activation)
            for _ in range(config.vit_layers)
        )
        self.ln_post = nn.LayerNorm(width)
        # Tokens -> p x p LR pixels of C channels. A small init: the ViT
        # starts as a moderate additive refinement of the conv features
        # (ln_post makes its output unit-variance, the features are ~0.1).
        self.to_features = nn.Linear(width, c * p * p)
        with torch.no_grad():
            self.to_features.weight.mul_(config.vit_output_gain)
            self.to_features.bias.zero_()

    def forward(self, f: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        batch, channels, height, width = f.shape
        span = self.window * self.patch_size
        pad_h, pad_w = (-height) % span, (-width) % span
        if pad_h or pad_w:
            f = F.pad(f, (0, pad_w, 0, pad_h), mode="replicate")
        tokens = self.patch_embed(f)  # (B, W, H/p, W/p)
        grid_h, grid_w = tokens.shape[-2:]
        win = self.window
        n_h, n_w = grid_h // win, grid_w // win
        dim = tokens.shape[1]
        # (B, W, nh*win, nw*win) -> (B*nh*nw, win*win, W): one row per window.
        x = tokens.view(batch, dim, n_h, win, n_w, win).permute(0, 2, 4, 3, 5, 1).reshape(-1, win * win, dim)
        n_windows = n_h * n_w
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, dim)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        n_prompts = 0 if prompts is None else prompts.shape[1]
        for i, block in enumerate(self.resblocks):
            k = i - self.first_prompt_block
            if prompts is not None and 0 <= k < n_prompts:
                # The same prompt token joins every window of its image.
                prompt = prompts[:, k, None, None, :].to(x.dtype).expand(batch, n_windows, 1, dim)
                x = block(torch.cat([x, prompt.reshape(-1, 1, dim)], dim=1))[:, :-1]
            else:
                x = block(x)
        x = self.to_features(self.ln_post(x[:, 1:]))  # (B*nh*nw, win*win, C*p*p)
        p = self.patch_size
        x = x.view(batch, n_h, n_w, win, win, channels * p * p).permute(0, 5, 1, 3, 2, 4)
        x = F.pixel_shuffle(x.reshape(batch, channels * p * p, grid_h, grid_w), p)
        return x[:, :, :height, :width]


def _modulation_map(fused: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """RMS over channels of TIFBlock(u) - ReLU(u): what the caption changed, (B, C, h, w) -> (B, 1, h, w)."""
    change = fused - F.relu(u)
    return torch.linalg.vector_norm(change.float(), dim=1, keepdim=True).mul_(change.shape[1] ** -0.5)


class CLIPSR(TextSRModel):
    """CLIP-SR adapted to scales 2-16 and inputs of any size.

    forward(lr (B, 3, h, w) float32 in [0, 1], prompt) -> SROutput with image
    (B, 3, s*h, s*w) and, with text fusion, one map per refinement iteration
    ("iteration 1", ...): the per-pixel RMS over channels of what the caption
    changed in that iteration, |TIFBlock(u) - ReLU(u)| with u the iteration's
    conv features, i.e. the difference to the same block without text. It is
    zero where the text left the features alone and large where it acted.
    (B, 1, h, w), non-negative, at LR resolution.
    """

    method = "clipsr"
    config_class = CLIPSRConfig

    def __init__(self, config: CLIPSRConfig) -> None:
        super().__init__(config)
        c = config.n_feats
        hidden = config.tif_hidden or c
        # E_I: convolutions at LR resolution.
        self.head = conv3x3(config.in_channels, c)
        self.encoder_blocks = nn.Sequential(*(ResBlock(c) for _ in range(config.n_encoder_blocks)))
        if config.text_fusion:
            self.tif_in = TIFBlock(c, config.prompt_dim, hidden)
            if config.n_prompts:
                self.prompt_predictor = PromptPredictor(
                    config.prompt_dim, config.n_prompts, config.vit_width, config.vit_heads
                )
        self.clip_vit = CLIPViTStage(config)
        # Iterative refinement: f <- f + conv_b(TIFBlock(conv_a(f))); without
        # text the block is its ReLU and each iteration is an EDSR ResBlock.
        self.refine_in = nn.ModuleList(conv3x3(c, c) for _ in range(config.n_iterations))
        self.refine_out = nn.ModuleList(conv3x3(c, c) for _ in range(config.n_iterations))
        if config.text_fusion:
            self.tif_refine = nn.ModuleList(TIFBlock(c, config.prompt_dim, hidden) for _ in range(config.n_iterations))
        self.body_tail = conv3x3(c, c)
        self.upsampler = PixelShuffleUpsampler(c, config.scale)
        self.out_conv = conv3x3(c, config.in_channels)

    def forward(self, lr: torch.Tensor, prompt: PromptEmbedding) -> SROutput:
        config: CLIPSRConfig = self.config  # type: ignore[assignment]
        x0 = self.encoder_blocks(self.head(lr - 0.5))
        attention: dict[str, torch.Tensor] = {}
        if config.text_fusion:
            # The parameters' dtype, so a model cast with .half() takes a float32 prompt.
            pooled = prompt.pooled.to(lr.device, self.head.weight.dtype)
            if pooled.shape[0] == 1 and lr.shape[0] > 1:
                pooled = pooled.expand(lr.shape[0], -1)
            text = reweight_text(pooled).to(pooled.dtype)
            prompts = self.prompt_predictor(pooled) if config.n_prompts else None
            f = self.tif_in(x0, text)
        else:
            text, prompts = None, None
            f = F.relu(x0)
        f = f + self.clip_vit(f, prompts)
        for k in range(config.n_iterations):
            u = self.refine_in[k](f)
            if config.text_fusion:
                fused = self.tif_refine[k](u, text)
                attention[f"iteration {k + 1}"] = _modulation_map(fused.detach(), u.detach())
            else:
                fused = F.relu(u)
            f = f + self.refine_out[k](fused)
        feature = x0 + self.body_tail(f)
        out = self.out_conv(self.upsampler(feature))
        # The bicubic skip makes the network learn only the residual detail:
        # an untrained or briefly CPU-trained model is then already as good as
        # bicubic instead of having to learn to reproduce the image first.
        out = out + (bicubic_upsample(lr, config.scale) if config.bicubic_skip else 0.5)
        return SROutput(image=out, attention=attention)

    # ------------------------------------------------------------------ CLIP
    @torch.no_grad()
    def prepare_for_training(self, encoder: "PromptEncoder") -> list[str]:
        """The paper's CLIP-ViT is pretrained and frozen: take it from the prompt encoder when it fits.

        Called on every (re)start, so a resumed or fine-tuned run freezes the
        same parameters (the copy is a no-op there: frozen weights equal the
        encoder's). An encoder whose ViT does not fit leaves the stage trainable.
        """
        try:
            copied = self.load_clip_vit_(encoder, freeze=True)
        except ValueError as error:
            return [f"CLIP-ViT stage trained from scratch: {error}"]
        return [f"CLIP-ViT stage: {len(copied)} tensors copied from {encoder.spec} and frozen"]

    def load_clip_vit_(self, encoder: "PromptEncoder", freeze: bool = True) -> list[str]:
        """Copy the prompt encoder's CLIP visual transformer into the ViT stage.

        Copies the first ``vit_layers`` residual blocks, ``ln_pre``, ``ln_post``
        and, where the encoder's patch grid equals the window, the class and
        positional embeddings (the patch embedding and output projection have
        no counterpart: they act on feature maps here). With ``freeze`` the
        copied parameters stop requiring gradients (the paper's frozen
        CLIP-ViT). Returns the names of the copied parameters (relative to
        ``clip_vit``). Raises ValueError when widths, heads, depth or block
        layout do not match.
        """
        config: CLIPSRConfig = self.config  # type: ignore[assignment]
        visual = encoder.clip.visual
        transformer = getattr(visual, "transformer", None)
        blocks = getattr(transformer, "resblocks", None)
        if blocks is None:
            raise ValueError(
                f"prompt encoder {encoder.spec} has no ViT visual tower (clip.visual.transformer.resblocks)"
            )
        width = blocks[0].ln_1.normalized_shape[0]
        heads = getattr(blocks[0].attn, "num_heads", None)
        if width != config.vit_width or heads != config.vit_heads:
            raise ValueError(
                f"cannot load the CLIP-ViT of {encoder.spec}: it has width {width} and {heads} heads, "
                f"this model's ViT has width {config.vit_width} and {config.vit_heads} heads; "
                "pick a preset whose ViT matches the encoder (tiny: textsr-tiny, default: textsr-clip-s, "
                "paper: ViT-B-32)"
            )
        if len(blocks) < config.vit_layers:
            raise ValueError(
                f"cannot load the CLIP-ViT of {encoder.spec}: it has {len(blocks)} blocks, "
                f"this model's ViT needs {config.vit_layers}"
            )
        source_activation = type(getattr(blocks[0].mlp, "gelu", None)).__name__
        expected = {"GELU": "gelu", "QuickGELU": "quick_gelu"}.get(source_activation)
        if expected != config.vit_activation:
            raise ValueError(
                f"cannot load the CLIP-ViT of {encoder.spec}: its MLP activation is {source_activation}, "
                f"this model's is {config.vit_activation!r}"
                + (f"; build the model with vit_activation={expected!r}" if expected else "")
            )
        stage = self.clip_vit
        # Check every block before copying any, so a refused call changes nothing.
        for i, block in enumerate(stage.resblocks):
            mine = {k: tuple(v.shape) for k, v in block.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in blocks[i].state_dict().items()}
            if mine != theirs:
                differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
                raise ValueError(
                    f"cannot load block {i} of the CLIP-ViT of {encoder.spec}: its layout differs "
                    f"(this model's MLP ratio is {config.vit_mlp_ratio}); differing entries: {differing}"
                )
        copied: list[str] = []
        for i, block in enumerate(stage.resblocks):
            block.load_state_dict(blocks[i].state_dict())
            copied += [f"resblocks.{i}.{name}" for name, _ in block.named_parameters()]
        for name in ("ln_pre", "ln_post"):
            source = getattr(visual, name, None)
            target = getattr(stage, name)
            if isinstance(source, nn.LayerNorm) and source.normalized_shape == target.normalized_shape:
                target.load_state_dict(source.state_dict())
                copied += [f"{name}.{n}" for n, _ in target.named_parameters()]
        for name in ("class_embedding", "positional_embedding"):
            source = getattr(visual, name, None)
            target = getattr(stage, name)
            if isinstance(source, torch.Tensor) and source.shape == target.shape:
                with torch.no_grad():
                    target.copy_(source)
                copied.append(name)
        if freeze:
            parameters = dict(stage.named_parameters())
            for name in copied:
                parameters[name].requires_grad_(False)
        return copied

    # --------------------------------------------------------------- tiling
    def tiling_info(self) -> TilingInfo:
        config: CLIPSRConfig = self.config  # type: ignore[assignment]
        span = config.window_pixels
        encoder = 1 + 2 * config.n_encoder_blocks
        # A ViT output pixel sees its whole window: up to span - 1 pixels away.
        vit = span - 1
        refine = 2 * config.n_iterations + 1  # two convs per iteration + body_tail
        # Upsampler convs and out_conv at resolutions 1, 2, ..., s reach
        # 1 + 1/2 + ... + 1/s < 2 LR pixels together.
        tail = 2
        network = encoder + vit + refine + tail
        rf = max(network, 2 if config.bicubic_skip else 0)
        c, s, w, p = config.n_feats, config.scale, config.vit_width, config.patch_size
        tokens_per_px = 1.0 / (p * p)
        vit_floats = tokens_per_px * (w * (6 + config.vit_mlp_ratio) + config.vit_heads * (config.window**2 + 2))
        # LR features alive at once + ViT tokens and attention scores + the last
        # upsampling conv's output and its PixelShuffle copy + output, bicubic, sum.
        # (Measured at 256x256 x4, default preset: ~6.3 kB per LR pixel; this gives 6.8.)
        floats = 12 * c + vit_floats + 2 * c * s * s + 4 * 3 * s * s
        return TilingInfo(
            receptive_field=rf,
            alignment=span,
            min_size=1,
            bytes_per_lr_pixel=int(4 * floats),
            exact=True,
        )
