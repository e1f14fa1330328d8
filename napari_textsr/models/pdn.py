"""PDN: Prompt-guided Dynamic Network (seed paper 004).

A Dynamic Correlation Module (DCM) is plugged into an ordinary SR backbone:
after each residual block of EDSR, or three per residual group of RCAN. Each
DCM computes a spatial attention mask from the cosine similarity between the
projected image feature and the prompt embedding, multiplies the feature by it,
and convolves the result with a kernel mixed from a bank of ``n_kernels``
kernels by prompt-dependent weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from napari_textsr.models.base import ModelConfig, SROutput, TextSRModel, TilingInfo
from napari_textsr.models.blocks import PixelShuffleUpsampler, ResBlock, bicubic_upsample, conv3x3
from napari_textsr.prompts import PromptEmbedding


@dataclass
class PDNConfig(ModelConfig):
    backbone: str = "edsr"  # "edsr" or "rcan"
    n_feats: int = 32
    n_blocks: int = 8  # EDSR: residual blocks; RCAN: blocks per residual group
    n_groups: int = 4  # RCAN only
    dcm_per_group: int = 3  # RCAN only, at identical intervals
    reduction: int = 16  # RCAN channel-attention reduction
    n_kernels: int = 4
    dynamic_kernel_size: int = 1
    temperature: float = 34.0
    res_scale: float = 1.0
    bicubic_skip: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(n_feats=8, n_blocks=2),
        "small": dict(n_feats=24, n_blocks=4),
        "default": dict(n_feats=32, n_blocks=8),
        # EDSR-baseline with a DCM after each of its 16 blocks, as in the paper's EDSR+.
        "paper": dict(n_feats=64, n_blocks=16, dynamic_kernel_size=3, res_scale=1.0, bicubic_skip=False),
        "rcan-tiny": dict(backbone="rcan", n_feats=8, n_blocks=3, n_groups=2, reduction=4),
        "rcan": dict(backbone="rcan", n_feats=64, n_blocks=20, n_groups=10, dynamic_kernel_size=3, bicubic_skip=False),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in ("edsr", "rcan"):
            raise ValueError(f"PDN backbone must be 'edsr' or 'rcan', got {self.backbone!r}")
        if self.dynamic_kernel_size % 2 != 1:
            raise ValueError("dynamic_kernel_size must be odd")


class DynamicCorrelationModule(nn.Module):
    """Spatially multi-modal attention mask + prompt-guided dynamic convolution.

    forward(f (B, C, h, w), prompt (B, D)) -> (f + f_o (B, C, h, w), mask (B, 1, h, w)).

    The paper's output ``f_o`` is added to ``f`` rather than replacing it, so a
    DCM starts as a refinement of the backbone's features and the network
    without DCMs is exactly the text-free baseline.
    """

    def __init__(self, channels: int, prompt_dim: int, n_kernels: int, kernel_size: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, prompt_dim, 1)
        self.zeta = nn.Parameter(torch.tensor(50.0))
        hidden = max(prompt_dim // 4, 4 * n_kernels)
        self.kernel_attention = nn.Sequential(
            nn.Linear(prompt_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_kernels)
        )
        # A tenth of nn.Conv2d's default (kaiming_uniform_, a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
        # drawn directly: no arithmetic on the tensor, which on the meta device (checkpoint checks)
        # would import torch._dynamo, 1-2 s of every command's start.
        fan_in = channels * kernel_size * kernel_size
        bound = 0.1 / math.sqrt(fan_in)
        weight = torch.empty(n_kernels, channels, channels, kernel_size, kernel_size)
        for k in range(n_kernels):
            nn.init.uniform_(weight[k], -bound, bound)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(n_kernels, channels))
        self.kernel_size = kernel_size
        # A buffer so the annealed value (34, divided by 3 every 10 epochs) is saved and resumed.
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def attention_mask(self, f: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """M = sigmoid(zeta * cos(C1x1(f), p)), (B, 1, h, w).

        The cosine needs |C1x1(f)| per pixel; expanding |W f + b|^2 with the
        Gram matrix W^T W costs C^2 per pixel instead of the projection's C*D,
        with the same result.
        """
        w = self.proj.weight[:, :, 0, 0]  # (D, C)
        b = self.proj.get_parameter("bias")  # (D,)
        q = F.normalize(prompt, dim=-1)  # (B, D)
        dot = torch.einsum("bchw,bc->bhw", f, q @ w) + (q @ b)[:, None, None]
        gram = (w.t() @ w)[:, :, None, None]  # (C, C, 1, 1)
        norm2 = (f * F.conv2d(f, gram)).sum(1) + 2 * torch.einsum("bchw,c->bhw", f, w.t() @ b) + b @ b
        cos = dot * torch.rsqrt(norm2.clamp_min(1e-12))
        return torch.sigmoid(self.zeta * cos)[:, None]

    def forward(self, f: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.attention_mask(f, prompt)
        enhanced = f * mask
        pi = torch.softmax(self.kernel_attention(prompt) / self.temperature, dim=-1)  # (B, n)
        batch, channels, height, width = f.shape
        weight = torch.einsum("bn,noikl->boikl", pi, self.weight).reshape(
            batch * channels, channels, self.kernel_size, self.kernel_size
        )
        bias = (pi @ self.bias).reshape(batch * channels)
        out = F.conv2d(
            enhanced.reshape(1, batch * channels, height, width),
            weight,
            bias,
            padding=self.kernel_size // 2,
            groups=batch,
        ).reshape(batch, channels, height, width)
        return f + out, mask


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class RCAB(nn.Module):
    """RCAN's residual channel-attention block."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PDN(TextSRModel):
    """EDSR or RCAN with Dynamic Correlation Modules.

    forward(lr (B, 3, h, w) float in [0, 1], prompt) -> SROutput with image
    (B, 3, s*h, s*w) and one attention mask per DCM ("DCM 1", "DCM 2", ...).
    """

    method = "pdn"
    config_class = PDNConfig

    def __init__(self, config: PDNConfig) -> None:
        super().__init__(config)
        c = config.n_feats
        self.head = conv3x3(config.in_channels, c)
        blocks: list[nn.Module] = []
        # Index of the block after which each DCM acts.
        self.dcm_after: list[int] = []
        if config.backbone == "edsr":
            blocks = [ResBlock(c, config.res_scale) for _ in range(config.n_blocks)]
            self.dcm_after = list(range(config.n_blocks))
            self.group_ends: list[int] = []
        else:
            for _group in range(config.n_groups):
                start = len(blocks)
                blocks += [RCAB(c, config.reduction) for _ in range(config.n_blocks)]
                interval = config.n_blocks / config.dcm_per_group
                self.dcm_after += sorted(
                    {start + max(int(round((i + 1) * interval)) - 1, 0) for i in range(config.dcm_per_group)}
                )
            self.group_ends = [(g + 1) * config.n_blocks - 1 for g in range(config.n_groups)]
            self.group_convs = nn.ModuleList(conv3x3(c, c) for _ in range(config.n_groups))
        self.blocks = nn.ModuleList(blocks)
        if config.text_fusion:
            self.dcms = nn.ModuleList(
                DynamicCorrelationModule(
                    c, config.prompt_dim, config.n_kernels, config.dynamic_kernel_size, config.temperature
                )
                for _ in self.dcm_after
            )
        self.body_tail = conv3x3(c, c)
        self.upsampler = PixelShuffleUpsampler(c, config.scale)
        self.out_conv = conv3x3(c, config.in_channels)

    def _grown_config(self, field: str, value: int, verb: str, larger: str, unit: str) -> PDNConfig:
        """This config with ``field`` = ``value``; ValueError unless EDSR and ``value`` exceeds the current one."""
        config: PDNConfig = self.config  # type: ignore[assignment]
        if config.backbone != "edsr":
            raise ValueError(f"only an EDSR-backbone PDN can be {verb}, this one is {config.backbone!r}")
        current = getattr(config, field)
        if value <= current:
            raise ValueError(f"a {larger} PDN needs more than its {current} {unit}, got {field}={value}")
        changes: dict[str, Any] = {field: value}
        return dataclasses.replace(config, **changes)

    def deepened(self, n_blocks: int) -> "PDN":
        """A copy with ``n_blocks`` EDSR blocks that computes exactly what this model computes.

        The blocks (and their DCMs) beyond this model's are appended after its
        last one and start as the identity: the second convolution of each new
        residual block and the kernel bank of each new DCM are zero, so the
        output is unchanged at the start of fine-tuning, and their gradients are
        not zero, so the new depth learns (the function-preserving growth of
        Chen et al., "Net2Net", ICLR 2016, deeper case). The first convolution
        of each new block is drawn from the global torch generator (seed it for
        a repeatable start). Old DCMs' annealed temperature carries over.

        Raises:
            ValueError: the backbone is not EDSR, or ``n_blocks`` is not larger
                than this model's.
        """
        config: PDNConfig = self.config  # type: ignore[assignment]
        grown = PDN(self._grown_config("n_blocks", n_blocks, "deepened", "deeper", "blocks"))
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        if unexpected or any(not key.startswith(("blocks.", "dcms.")) for key in missing):  # pragma: no cover
            raise RuntimeError(f"deepening PDN: unexpected {unexpected}, missing {missing}")
        with torch.no_grad():
            for i in range(config.n_blocks, n_blocks):
                for param in grown.get_submodule(f"blocks.{i}.body.2").parameters():  # the block's last conv
                    param.zero_()
                if config.text_fusion:
                    grown.get_parameter(f"dcms.{i}.weight").zero_()
                    grown.get_parameter(f"dcms.{i}.bias").zero_()
                    annealed = self.get_buffer(f"dcms.{config.n_blocks - 1}.temperature")
                    grown.get_buffer(f"dcms.{i}.temperature").copy_(annealed)
        return grown

    def widened(self, n_feats: int) -> "PDN":
        """A copy with ``n_feats`` feature channels that computes exactly what this model computes.

        The old channels keep their weights; the new ones start at zero
        everywhere: every convolution that writes the feature stream (the head,
        each block's second convolution, each DCM's kernel bank, the body's
        tail, the upsampler's convolutions) gets zero rows for the new
        channels, and a block's second convolution zero columns for its new
        hidden channels, which its first convolution fills from the start.
        Weights that read the new stream channels keep their random
        initialisation: those channels are zero at first, so the output is
        unchanged, and the gradient reaching the zero rows through them is
        not, so the new width learns (the function-preserving wider case of
        Chen et al., "Net2Net", ICLR 2016, with zero outgoing instead of
        split weights). Random weights are drawn from the global torch
        generator (seed it for a repeatable start). EDSR backbone only.

        Raises:
            ValueError: the backbone is not EDSR, or ``n_feats`` is not larger
                than this model's.
        """
        config: PDNConfig = self.config  # type: ignore[assignment]
        old = config.n_feats
        grown = PDN(self._grown_config("n_feats", n_feats, "widened", "wider", "feature channels"))
        targets = {**dict(grown.named_parameters()), **dict(grown.named_buffers())}
        with torch.no_grad():
            for name, value in self.state_dict().items():
                target = targets[name]
                if target.shape == value.shape:
                    target.copy_(value)
                else:  # channel axes grew: the old weights are the leading block
                    target[tuple(slice(0, size) for size in value.shape)] = value

            def zero_rows(conv: nn.Module, first: int) -> None:
                conv.get_parameter("weight")[first:] = 0
                conv.get_parameter("bias")[first:] = 0

            zero_rows(grown.head, old)
            for i in range(config.n_blocks):
                second = grown.get_submodule(f"blocks.{i}.body.2")
                zero_rows(second, old)
                second.get_parameter("weight")[:old, old:] = 0  # the new hidden channels are not zero
            if config.text_fusion:
                for dcm in grown.dcms:
                    dcm.get_parameter("weight")[:, old:] = 0
                    dcm.get_parameter("bias")[:, old:] = 0
            zero_rows(grown.body_tail, old)
            for layer in grown.upsampler:
                if isinstance(layer, nn.Conv2d):  # PixelShuffle(2) makes channel j of outputs 4j..4j+3
                    zero_rows(layer, 4 * old)
        return grown

    def set_kernel_temperature(self, value: float) -> None:
        """Anneal the softmax temperature of every DCM's kernel attention."""
        if self.config.text_fusion:
            for dcm in self.dcms:
                dcm.get_buffer("temperature").fill_(value)

    def forward(self, lr: torch.Tensor, prompt: PromptEmbedding) -> SROutput:
        config: PDNConfig = self.config  # type: ignore[assignment]
        x = self.head(lr - 0.5)
        feature = x
        group_input = x
        attention: dict[str, torch.Tensor] = {}
        dcm_index = {block: i for i, block in enumerate(self.dcm_after)}
        group_index = {block: i for i, block in enumerate(self.group_ends)}
        for i, block in enumerate(self.blocks):
            feature = block(feature)
            if config.text_fusion and i in dcm_index:
                k = dcm_index[i]
                feature, mask = self.dcms[k](feature, prompt.pooled)
                attention[f"DCM {k + 1}"] = mask
            if i in group_index:  # RCAN residual group: conv + group skip
                feature = group_input + self.group_convs[group_index[i]](feature)
                group_input = feature
        feature = x + self.body_tail(feature)
        out = self.out_conv(self.upsampler(feature))
        out = out + (bicubic_upsample(lr, config.scale) if config.bicubic_skip else 0.5)
        return SROutput(image=out, attention=attention)

    def tiling_info(self) -> TilingInfo:
        config: PDNConfig = self.config  # type: ignore[assignment]
        k = config.dynamic_kernel_size // 2 if config.text_fusion else 0
        per_block = 2 + (k if config.backbone == "edsr" else 0)
        rf = 1 + len(self.blocks) * per_block + len(self.dcm_after) * k * (config.backbone == "rcan")
        rf += len(self.group_ends) + 1 + 1 + 1 + (2 if config.bicubic_skip else 0)
        c, s = config.n_feats, config.scale
        bytes_per_px = 4 * (8 * c + 3 * c * s * s + 12 * s * s)
        return TilingInfo(
            receptive_field=rf,
            min_size=1,
            bytes_per_lr_pixel=bytes_per_px,
            exact=config.backbone == "edsr",
        )
