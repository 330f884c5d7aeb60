"""Small building blocks shared by the networks.

The normalisation choice matters more here than usual, for two reasons (see NOTES.md):
segmenters are fine-tuned with batches of a few patches, so BatchNorm's batch statistics
are useless; and inference runs tile by tile, so any normalisation that pools statistics
over the spatial extent (GroupNorm, InstanceNorm) gives a slightly different result for
each tile, i.e. seams. ``"channel"`` (a LayerNorm over the channels of each pixel, as in
ConvNeXt) depends on neither the batch nor the tile, so it is the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("channel", "group", "none")


class ChannelNorm(nn.Module):
    """LayerNorm over channels, per pixel: independent of batch size and tile extent."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over a channels-last view: fused, about as fast as no norm at all
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name: ``channel`` (default), ``group`` or ``none``."""
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            make_norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            make_norm(norm, cout),
            nn.ReLU(inplace=True),
        )
