"""Restoration losses: a pixel loss plus optional terms in the spirit of Lobato et al. (2023).

A pixel loss (L1 or L2) alone rewards the mean of what a pixel could be; at low dose that
mean is a blur, and the network becomes a learned low-pass filter. Lobato et al. add terms
that compare other properties of the output with the clean image. Each term here is a
weighted addition to the pixel loss, switched on by name, so that each can be measured on
its own (``benchmarks/bench_loss_terms.py``):

- ``fourier``: L1 distance of the amplitude spectra (orthonormal FFT), which weighs every
  spatial frequency alike, so the high frequencies of a lattice count as much as the mean;
- ``gradient``: L1 distance of the horizontal and vertical finite differences (edges and
  column flanks);
- ``local_mean``: L1 distance of 5x5 local means (brightness, e.g. the intensity bias of
  low-count data);
- ``local_std``: L1 distance of 5x5 local standard deviations (contrast: a blurred column
  has less of it).

The adversarial term of the paper lives in ``engine/pix2pix.py`` (a conditional GAN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

PIXEL_LOSSES = ("l1", "l2", "charbonnier", "l2db")
TERMS = ("fourier", "gradient", "local_mean", "local_std")
WINDOW = 5  # px, the local statistics' window
#: floor of a patch's squared error in "l2db" (normalised units, where a simulated HRTEM
#: patch's best Gaussian error is about 3e-4 at 1 e/px and 6e-3 at 5000 e/px), so that a
#: patch restored almost perfectly (a clean input) cannot take over the batch
DB_FLOOR = 1e-4


def check_terms(terms: Mapping[str, float]) -> dict[str, float]:
    """Names and weights of extra terms -> a plain dict; a bad name or weight raises."""
    out = {}
    for name, weight in dict(terms).items():
        if name not in TERMS:
            raise ValueError(f"unknown loss term {name!r}; expected one of {TERMS}")
        w = float(weight)
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"the weight of loss term {name!r} must be >= 0, got {weight}")
        out[name] = w
    return out


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "charbonnier":
        return torch.sqrt((pred - target).pow(2) + 1e-6).mean()
    if kind == "l2db":
        return decibel_l2(pred, target)
    raise ValueError(f"unknown loss {kind!r}; expected one of {PIXEL_LOSSES}")


def decibel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error with each patch weighted by the inverse of its own error.

    Why: in normalised units a low-dose patch's error is 20-40 times smaller than a
    high-dose patch's, so under a plain batch-mean L2 the low doses, where TEM needs a
    denoiser most, hardly move the weights. The gradient of the mean of log-errors (i.e. of
    decibels) weighs each patch by ``1 / error``, so a 1 dB gain counts the same at every
    dose; here those weights are detached and scaled to a mean of 1 per batch. The value is
    then about the harmonic mean of the patches' errors, which, like their decibels, the
    quiet patches rule (validation picks the best weights by it).
    """
    return weighted_error(patch_errors(pred, target))


def patch_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each patch's mean squared error, (N,) for a batch (N, C, H, W)."""
    return (pred - target).pow(2).flatten(1).mean(1)


def weighted_error(err: torch.Tensor) -> torch.Tensor:
    """:func:`decibel_l2` of the patches' squared errors ``err`` (one per patch)."""
    w = 1.0 / (err.detach() + DB_FLOOR)
    return (w / w.mean() * err).mean()


def _local_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xp = F.pad(x, (WINDOW // 2,) * 4, mode="reflect")
    mean = F.avg_pool2d(xp, WINDOW, stride=1)
    var = (F.avg_pool2d(xp * xp, WINDOW, stride=1) - mean * mean).clamp_min(0)
    return mean, torch.sqrt(var + 1e-6)


def term(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """One extra term's unweighted value for a batch (N, C, H, W) in float32."""
    if name == "fourier":
        a = torch.fft.rfft2(pred, norm="ortho").abs()
        b = torch.fft.rfft2(target, norm="ortho").abs()
        return F.l1_loss(a, b)
    if name == "gradient":
        dx = F.l1_loss(pred.diff(dim=-1), target.diff(dim=-1))
        dy = F.l1_loss(pred.diff(dim=-2), target.diff(dim=-2))
        return 0.5 * (dx + dy)
    if name in ("local_mean", "local_std"):
        (pm, ps), (tm, ts) = _local_stats(pred), _local_stats(target)
        return F.l1_loss(pm, tm) if name == "local_mean" else F.l1_loss(ps, ts)
    raise ValueError(f"unknown loss term {name!r}; expected one of {TERMS}")


def restoration_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str, terms: Mapping[str, float] | None = None
) -> torch.Tensor:
    """The pixel loss ``kind`` plus each of ``terms`` times its weight."""
    loss = pixel_loss(pred, target, kind)
    for name, weight in (terms or {}).items():
        if weight:
            loss = loss + weight * term(pred, target, name)
    return loss
