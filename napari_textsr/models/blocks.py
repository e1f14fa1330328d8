"""Building blocks shared by the three methods."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv, scaled, plus identity (no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class PixelShuffleUpsampler(nn.Sequential):
    """(conv3x3 -> PixelShuffle(2)) repeated log2(scale) times; scale a power of two."""

    def __init__(self, channels: int, scale: int) -> None:
        steps = int(math.log2(scale))
        if 2**steps != scale:
            raise ValueError(f"scale must be a power of two, got {scale}")
        layers: list[nn.Module] = []
        for _ in range(steps):
            layers += [conv3x3(channels, 4 * channels), nn.PixelShuffle(2)]
        super().__init__(*layers)


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic (B, C, h, w) -> (B, C, s*h, s*w); the skip path models learn a residual on.

    Local (4-tap) so it keeps tiles exact.
    """
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
