"""Small building blocks shared by the networks.

The normalisation choice matters more here than usual (see NOTES.md):

- segmenters are fine-tuned with batches of a few patches, so BatchNorm's batch statistics
  are useless and it is not offered;
- inference runs tile by tile, so a normalisation that pools statistics over the spatial
  extent (``"group"``, like InstanceNorm) gives each tile a slightly different result:
  seams, and results that depend on the tile size;
- a per-pixel LayerNorm over channels (``"channel"``, as in ConvNeXt) depends on neither,
  but in a plain conv stack it throws away each pixel's feature magnitude. Right after
  the first convolution of a one-channel image that magnitude *is* the local intensity,
  so a denoiser built with it cannot reproduce intensities (measured: a systematic
  under-estimate, 10 dB below a Gaussian filter on high-dose images).

Hence the default ``"none"``: a plain U-Net, independent of batch and tile, which trains
well with AdamW and gradient clipping at this size. The others stay available for
experiments (e.g. a segmenter that wants GroupNorm and predicts on large tiles).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("none", "channel", "group")


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
    """A normalisation layer by name: ``none`` (default), ``channel`` or ``group``."""
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
