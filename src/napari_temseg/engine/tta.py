"""Test-time augmentation: a network's answer averaged over the eight rotations and
mirrorings of each tile (the dihedral group of the square), for segmenters and denoisers.

Why: a network answers a little differently for the same structure turned by 90 degrees
or mirrored, and those differences are what no orientation agrees on. For a segmenter
fine-tuned on a few strokes they are specks on frames nobody painted; for a denoiser at
low dose they are the grain it invents (docs/benchmarks.md, "Is the output still noisy?"):
averaged over the eight orientations, ``hrtem-denoise`` gained 1.3 dB at 1 e/px and
0.2-0.6 dB at 10-5000 e/px on the standard set ("Eight orientations"). Costs eight
passes.
"""

from __future__ import annotations

import torch
from torch import nn


class DihedralMean(nn.Module):
    """``net`` averaged over the eight orientations of its input.

    ``probabilities`` (segmenters): the class probabilities are averaged and the forward
    pass returns their log, so the softmax every caller applies gives the mean back
    exactly, and the uncertainty shown is that of the mean. Otherwise (denoisers) the
    outputs themselves are averaged.
    """

    def __init__(self, net: nn.Module, probabilities: bool = True) -> None:
        super().__init__()
        self.net = net
        self.probabilities = probabilities
        self.config = getattr(net, "config", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for turns in range(4):
            for mirror in (False, True):
                y = torch.rot90(x, turns, (-2, -1))
                p = self.net(y.flip(-1) if mirror else y).float()
                if self.probabilities:
                    p = p.softmax(1)
                p = torch.rot90(p.flip(-1) if mirror else p, -turns, (-2, -1))
                total = p if total is None else total + p
        if not self.probabilities:
            return total / 8
        return torch.log((total / 8).clamp_min(1e-12))


def with_tta(model: tuple[nn.Module, dict], probabilities: bool = True) -> tuple[nn.Module, dict]:
    """The same model, averaged over eight orientations (:class:`DihedralMean`): class
    probabilities for a segmenter (``probabilities``), outputs for a denoiser."""
    net, meta = model
    if isinstance(net, DihedralMean):
        if net.probabilities != probabilities:
            raise ValueError(
                "this model is already averaged over orientations as a "
                f"{'segmenter' if net.probabilities else 'denoiser'}"
            )
        return net, meta
    return DihedralMean(net, probabilities), meta


__all__ = ["DihedralMean", "with_tta"]
