"""Residual-dense restoration network in the spirit of Lobato et al.'s CGRDN (2023).

Grouped residual dense blocks: dense layers inside a block, a 1x1 fusion and a local
residual per block; blocks grouped with their own fusion and residual; the outputs of all
groups concatenated and fused (the "concatenated" in CGRDN). The network predicts a
correction that is added to the input, so a clean image passes through nearly unchanged.

A pixel-unshuffle entry (``scale=2``) runs the dense blocks at half resolution with four
times the channels: on a CPU this is what keeps a full-resolution dense network usable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, F.relu(self.conv(x))], dim=1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(
            *(DenseLayer(channels + i * growth, growth) for i in range(layers))
        )
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(self.dense(x))


class GroupedResidualDenseBlock(nn.Module):
    def __init__(self, channels: int, growth: int, blocks: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualDenseBlock(channels, growth, layers) for _ in range(blocks)
        )
        self.fuse = nn.Conv2d(blocks * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs, y = [], x
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        return x + self.fuse(torch.cat(outs, dim=1))


class RDN(nn.Module):
    """Concatenated grouped residual dense network predicting a correction to its input."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 32,
        growth: int = 16,
        groups: int = 2,
        blocks: int = 2,
        layers: int = 3,
        scale: int = 2,
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError("RDN adds its output to its input: in and out channels must match")
        if min(features, growth, groups, blocks, layers, scale) < 1:
            raise ValueError("RDN sizes must all be >= 1")
        s2 = scale * scale
        self.shallow1 = nn.Conv2d(in_channels * s2, features, 3, padding=1)
        self.shallow2 = nn.Conv2d(features, features, 3, padding=1)
        self.groups = nn.ModuleList(
            GroupedResidualDenseBlock(features, growth, blocks, layers) for _ in range(groups)
        )
        self.global_fuse = nn.Sequential(
            nn.Conv2d(groups * features, features, 1),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.out = nn.Conv2d(features, out_channels * s2, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start as the identity: a zero correction
        nn.init.zeros_(self.out.bias)
        self.config = {
            "arch": "rdn",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": features,
            "growth": growth,
            "groups": groups,
            "blocks": blocks,
            "layers": layers,
            "scale": scale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.config["scale"]
        ph, pw = (-h) % s, (-w) % s
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        f1 = self.shallow1(F.pixel_unshuffle(xp, s) if s > 1 else xp)
        y = self.shallow2(f1)
        outs = []
        for group in self.groups:
            y = group(y)
            outs.append(y)
        y = self.global_fuse(torch.cat(outs, dim=1)) + f1
        y = self.out(y)
        y = F.pixel_shuffle(y, s) if s > 1 else y
        return x + y[..., :h, :w]
