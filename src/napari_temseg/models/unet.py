"""U-Net encoder-decoder: the denoising backbone that is later fine-tuned into a segmenter.

The encoder, decoder and head are separate modules on purpose: a segmenter keeps the
pretrained ``encoder`` and ``decoder`` and swaps the one-channel restoration ``head`` for a
K-class head (:meth:`UNet.replace_head`), so the pretrained layers can get their own
learning rate or be frozen while the new head warms up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_temseg.models.layers import ConvBlock


class Encoder(nn.Module):
    """``depth`` resolution levels of two convolutions; max-pooling between levels."""

    def __init__(self, in_channels: int, base: int, depth: int, norm: str) -> None:
        super().__init__()
        self.channels = [base * 2**i for i in range(depth)]
        cins = [in_channels, *self.channels[:-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(cin, cout, norm) for cin, cout in zip(cins, self.channels, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every level, finest first (the last one is the bottleneck)."""
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """Bilinear upsampling, concatenation with the skip, two convolutions; per level."""

    def __init__(self, channels: list[int], norm: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvBlock(channels[i + 1] + channels[i], channels[i], norm)
            for i in reversed(range(len(channels) - 1))
        )
        self.out_channels = channels[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


class UNet(nn.Module):
    """U-Net with a replaceable 1x1 head; any input size (padded internally).

    ``depth`` counts resolution levels (depth 4 = three poolings); at ``base=16`` it has
    about 0.48 M parameters. ``residual=True`` adds the input to the head's output (the
    network predicts a correction), which lets clean inputs pass through unchanged; it is
    only allowed when input and output channels match.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 16,
        depth: int = 4,
        norm: str = "none",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError(f"UNet needs depth >= 1 and base >= 1, got {depth=} {base=}")
        if residual and in_channels != out_channels:
            raise ValueError("a residual UNet needs as many output as input channels")
        self.encoder = Encoder(in_channels, base, depth, norm)
        self.decoder = Decoder(self.encoder.channels, norm)
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, 1)
        self.config = {
            "arch": "unet",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base": base,
            "depth": depth,
            "norm": norm,
            "residual": residual,
        }

    @property
    def multiple(self) -> int:
        """Input sizes are padded up to a multiple of this."""
        return 2 ** (self.config["depth"] - 1)

    def replace_head(self, out_channels: int) -> nn.Conv2d:
        """Swap in a freshly initialised head with ``out_channels`` (e.g. K classes).

        Turns the residual connection off (class scores are not a correction to the
        image). Returns the new head so callers can give it its own optimiser group.
        """
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, 1).to(
            self.head.weight.device
        )
        self.config = {**self.config, "out_channels": out_channels, "residual": False}
        return self.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: decoder features, (n, C, H, W) for any input size.

        The input is padded up to :attr:`multiple` and the features cropped back (the head
        is a 1x1 convolution, so cropping before or after it is the same). The
        fine-tuner's head fit (``engine/probe.py``) reads these.
        """
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.decoder(self.encoder(x))[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.features(x))
        return y + x if self.config["residual"] else y
