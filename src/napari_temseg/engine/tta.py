"""Test-time augmentation: a network's answer averaged over the eight rotations and
mirrorings of each tile (the dihedral group of the square), for segmenters and denoisers.

Why: a network answers a little differently for the same structure turned by 90 degrees
or mirrored, and those differences are what no orientation agrees on. For a segmenter
fine-tuned on a few strokes they are specks on frames nobody painted; for a denoiser at
low dose they are the grain it invents (docs/benchmarks.md, "Is the output still noisy?"):
averaged over the eight orientations, ``hrtem-denoise`` gained 1.3 dB at 1 e/px and
0.2-0.6 dB at 10-5000 e/px on the standard set ("Eight orientations"). Costs eight
passes.

A denoiser's mean keeps part of that grain: where the passes disagree by as much as the
detail they return, the detail is a guess. :func:`shrink_bands` smooths the mean's detail
in proportion to the passes' spread there (a Wiener filter whose noise is the spread), in
two bands: the fine detail under a 4 px Gaussian, then what a 16 px Gaussian takes from the
rest. With ``hrtem-denoise`` (stage 9) on the real low-dose pair, the plain mean adds
230 / 367 to the error, the fine band alone 182 / 327 and both bands 158 / 305
(docs/benchmarks.md, "Where the orientations disagree", "Disagreement at two scales").
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

#: width (px) of the Gaussian that splits the mean into the fine detail the first band
#: shrinks and the rest, which the next band splits again: periods under about 20 px are
#: mostly fine detail (a 10 px fringe 96 %, a 20 px one 55 %)
SHRINK_SIGMA = 4.0
#: how much of the passes' spread counts as error in the mean (1: all of it)
SHRINK_WEIGHT = 1.0
#: the bands a denoiser's mean is shrunk in, finest first: (width of the Gaussian that
#: ends the band, px; how many times the passes' spread counts as error there). At the
#: coarser band the eight passes make much the same error, since they see the same noise:
#: on held-out simulated HRTEM at 1-2 e/px the mean's error there was 5-8 times their
#: spread, against 1-5 times in the fine band (``benchmarks/bench_tta_shrink.py --bands``)
SHRINK_BANDS: tuple[tuple[float, float], ...] = ((SHRINK_SIGMA, SHRINK_WEIGHT), (16.0, 5.0))

#: the orientations (quarter turns, mirrored) a mean over ``n`` of them uses. Two: the
#: tile and the tile turned by 90 degrees, which swaps its rows and columns (a scan's
#: direction and a lattice's rows). On held-out simulated HRTEM two passes shrunk gave
#: +3.02 dB over the oracle Gaussian against +3.00 for eight and +1.75 for one; on STEM
#: +1.07, +1.10 and +0.91 (``benchmarks/bench_tta_shrink.py --pairs``)
ORIENTATIONS: dict[int, tuple[tuple[int, bool], ...]] = {
    2: ((0, False), (1, False)),
    8: tuple((turns, mirror) for turns in range(4) for mirror in (False, True)),
}
#: how many times the passes' variance (about their mean, divided by their number) counts
#: in :func:`shrink_bands`, by how many there are: for two, twice, which makes it the
#: unbiased variance (three measured within 0.04 dB); eight stay as they were calibrated
SPREAD_SCALE = {2: 2.0, 8: 1.0}


def orientation_count(tta: bool | int) -> int:
    """How many orientations ``tta`` asks for: False (or 1) one pass, True eight, else
    2 or 8 as given. A ``ValueError`` for anything else (3, 2.5, "8")."""
    if isinstance(tta, bool) or str(getattr(tta, "dtype", "")) == "bool":  # numpy's too
        return 8 if tta else 1
    try:
        n = operator.index(tta)
    except TypeError:
        n = 0
    if n != 1 and n not in ORIENTATIONS:
        raise ValueError(f"orientations must be 1, 2 or 8, got {tta!r}")
    return n


#: what a denoised layer or file records when its denoiser was averaged (the Denoise dock,
#: ``temseg denoise --tta``): how many orientations, and the bands the spread shrank
DENOISED_AVERAGED = {
    "denoised_orientations": 8,
    "disagreement_smoothed_px": tuple(w for w, _ in SHRINK_BANDS),  # immutable: shared
}


def with_orientations(meta: dict, n: int) -> dict:
    """``meta`` of a result denoised over ``n`` orientations (1: one pass), saying so; what
    an input denoised before had recorded about its own averaging is replaced."""
    kept = {k: v for k, v in meta.items() if k not in DENOISED_AVERAGED}
    return {**kept, **(DENOISED_AVERAGED if n > 1 else {}), "denoised_orientations": n}


#: a side up to this many pixels is blurred as one matrix product (:func:`_blur_matrix`);
#: a longer one by convolution, whose cost does not grow with the side
MATRIX_SIDE = 1024


def _taps(sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
    r = max(1, math.ceil(3 * sigma))
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device), r


@functools.lru_cache(maxsize=16)
def _blur_matrix(
    n: int, sigma: float, reflect: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The (n, n) matrix of :func:`_blur` along one axis: the Gaussian's taps on the
    mirrored (``reflect``) or repeated border folded back onto the pixels they read.
    Why: oneDNN convolves one channel with a 25-97 tap kernel at about 1 GFLOP/s; the
    product is 6-8 times faster on a 448 px tile (the same sums, to 1e-7)."""
    with torch.inference_mode(False):  # cached: usable later outside inference mode too
        return _folded(n, sigma, reflect).to(dtype=dtype, device=device)


def _folded(n: int, sigma: float, reflect: bool) -> torch.Tensor:
    g, r = _taps(sigma, torch.float64, torch.device("cpu"))
    idx = torch.arange(-r, n + r)
    if reflect:  # as F.pad's "reflect": the edge pixel not repeated
        idx = idx.abs()
        idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    else:
        idx = idx.clamp(0, n - 1)
    rows = torch.arange(n).repeat_interleave(2 * r + 1)
    cols = (torch.arange(n)[:, None] + torch.arange(2 * r + 1)[None, :]).reshape(-1)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, idx[cols]), g.repeat(n), accumulate=True)
    return m


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of (N, C, H, W) images, mirrored at the borders, which keeps
    it symmetric under the eight orientations."""
    h, w = x.shape[-2:]
    g, r = _taps(sigma, x.dtype, x.device)
    reflect = min(h, w) > r  # a side within the kernel's reach cannot be mirrored
    if max(h, w) <= MATRIX_SIDE:
        my = _blur_matrix(h, sigma, reflect, x.dtype, x.device)
        mx = _blur_matrix(w, sigma, reflect, x.dtype, x.device)
        return my @ (x @ mx.T)
    n, c = x.shape[:2]
    y = x.reshape(n * c, 1, h, w)
    mode = "reflect" if reflect else "replicate"
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), g.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), g.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def shrink_disagreement(
    mean: torch.Tensor,
    spread: torch.Tensor,
    sigma: float = SHRINK_SIGMA,
    weight: float = SHRINK_WEIGHT,
) -> torch.Tensor:
    """The mean of several passes with its fine detail shrunk where they disagree.

    The detail is what a Gaussian of ``sigma`` px takes from ``mean``; it is kept in the
    share ``1 - weight * spread / power`` (clipped to 0..1), both local averages over the
    same Gaussian: ``spread`` the passes' variance, ``power`` the detail's. Where every
    pass returns the same detail it is kept whole; where they scatter as much as it is
    large, only the smooth part stays.
    """
    return shrink_bands(mean, [spread], ((sigma, weight),))


def shrink_bands(
    mean: torch.Tensor,
    spreads: list[torch.Tensor],
    bands: tuple[tuple[float, float], ...] = SHRINK_BANDS,
) -> torch.Tensor:
    """:func:`shrink_disagreement` band after band, finest first.

    Band ``i`` is what a Gaussian of ``bands[i][0]`` px takes from the mean smoothed by
    the bands before it; ``spreads[i]`` is the passes' variance after the same smoothing
    (each pass smoothed by the earlier bands' Gaussians). What no band takes stays whole.
    """
    if len(spreads) != len(bands):
        raise ValueError(f"{len(bands)} bands need as many spreads, got {len(spreads)}")
    # in float32 whatever autocast says: in float16 the squared detail of a flat tile
    # underflows to 0 / 0, and bfloat16 bands the smooth part a low-dose tile is made of
    with torch.autocast(mean.device.type, enabled=False):
        rest, kept = mean.float(), torch.zeros((), device=mean.device)
        for (sigma, weight), spread in zip(bands, spreads, strict=True):
            base = _blur(rest, sigma)
            detail = rest - base
            power = _blur(detail * detail, sigma)
            noise = _blur(spread.float(), sigma)
            keep = (1 - weight * noise / power.clamp_min(1e-12)).clamp(0, 1)
            kept = kept + detail * keep
            rest = base
        return rest + kept


class DihedralMean(nn.Module):
    """``net`` averaged over the eight orientations of its input, or (``orientations``
    2) over the input and the input turned by 90 degrees (:data:`ORIENTATIONS`).

    ``probabilities`` (segmenters): the class probabilities are averaged and the forward
    pass returns their log, so the softmax every caller applies gives the mean back
    exactly, and the uncertainty shown is that of the mean. Otherwise (denoisers) the
    outputs themselves are averaged and the detail they disagree on is shrunk, band by
    band (:func:`shrink_bands`).
    """

    def __init__(self, net: nn.Module, probabilities: bool = True, orientations: int = 8) -> None:
        super().__init__()
        if orientations not in ORIENTATIONS:
            raise ValueError(f"orientations must be one of {sorted(ORIENTATIONS)}")
        self.net = net
        self.probabilities = probabilities
        self.orientations = orientations
        self.config = getattr(net, "config", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = total = None
        squares: list[torch.Tensor] = []  # per band, the passes' squares at its smoothing
        for turns, mirror in ORIENTATIONS[self.orientations]:
            y = torch.rot90(x, turns, (-2, -1))
            p = self.net(y.flip(-1) if mirror else y).float()
            if self.probabilities:
                p = p.softmax(1)
            p = torch.rot90(p.flip(-1) if mirror else p, -turns, (-2, -1))
            if self.probabilities:
                total = p if total is None else total + p
                continue
            # moments about the first pass, so a model with large outputs (raw
            # counts) does not lose the spread to cancellation
            first = p if first is None else first
            d = p - first
            total = d if total is None else total + d
            now = [s * s for s in _smoothed(d)]
            squares = now if not squares else [a + b for a, b in zip(squares, now, strict=True)]
        n = self.orientations
        mean = total / n
        if not self.probabilities:
            scale = SPREAD_SCALE[n]
            spreads = [
                scale * (q / n - m * m).clamp_min(0)
                for q, m in zip(squares, _smoothed(mean), strict=True)
            ]
            return shrink_bands(first + mean, spreads)
        return torch.log(mean.clamp_min(1e-12))


def _smoothed(d: torch.Tensor) -> list[torch.Tensor]:
    """``d`` as each band of :data:`SHRINK_BANDS` sees it: itself, then smoothed by each
    earlier band's Gaussian in turn (float32: see :func:`shrink_bands`)."""
    with torch.autocast(d.device.type, enabled=False):
        out = [d.float()]
        for sigma, _ in SHRINK_BANDS[:-1]:
            out.append(_blur(out[-1], sigma))
        return out


def with_tta(
    model: tuple[nn.Module, dict], probabilities: bool = True, orientations: int = 8
) -> tuple[nn.Module, dict]:
    """The same model, averaged over eight (or ``orientations``) orientations
    (:class:`DihedralMean`): class probabilities for a segmenter (``probabilities``),
    outputs for a denoiser."""
    net, meta = model
    if isinstance(net, DihedralMean):
        if net.probabilities != probabilities or net.orientations != orientations:
            raise ValueError(
                f"this model is already averaged over {net.orientations} orientations as a "
                f"{'segmenter' if net.probabilities else 'denoiser'}"
            )
        return net, meta
    return DihedralMean(net, probabilities, orientations), meta


__all__ = [
    "DENOISED_AVERAGED",
    "ORIENTATIONS",
    "SHRINK_BANDS",
    "SHRINK_SIGMA",
    "SHRINK_WEIGHT",
    "SPREAD_SCALE",
    "DihedralMean",
    "orientation_count",
    "shrink_bands",
    "shrink_disagreement",
    "with_orientations",
    "with_tta",
]
