"""Pix2Pix: a U-Net generator (``models.unet.UNet``) judged by a conditional PatchGAN.

The discriminator sees the noisy input and a candidate (the real clean image or the
generator's output) concatenated along channels, and answers with a grid of logits, one
per overlapping patch (about 70 px receptive field at three layers), so it judges local
texture and leaves the global content to the pixel loss.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_temseg.models.layers import make_norm


class PatchGANDiscriminator(nn.Module):
    """Conditional PatchGAN: ``forward(noisy, candidate) -> logits (B, 1, h, w)``."""

    def __init__(
        self,
        in_channels: int = 1,
        target_channels: int = 1,
        base: int = 32,
        layers: int = 3,
        norm: str = "group",
    ) -> None:
        super().__init__()
        if layers < 1 or base < 1:
            raise ValueError(f"PatchGAN needs layers >= 1 and base >= 1, got {layers=} {base=}")
        mods: list[nn.Module] = [
            nn.Conv2d(in_channels + target_channels, base, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        c = base
        for i in range(1, layers + 1):
            cout = base * 2 ** min(i, 3)
            stride = 2 if i < layers else 1
            mods += [
                nn.Conv2d(c, cout, 4, stride=stride, padding=1),
                make_norm(norm, cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c = cout
        mods.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)
        self.config = {
            "arch": "patchgan",
            "in_channels": in_channels,
            "target_channels": target_channels,
            "base": base,
            "layers": layers,
            "norm": norm,
        }

    def forward(self, noisy: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([noisy, candidate], dim=1))
