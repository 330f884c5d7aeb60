"""Denoise at a coarser sampling: bin k x k pixels, denoise, interpolate back.

A low-dose frame recorded finer than its detail (a smooth, low-magnification field) gives a
network trained on lattice-resolved images nothing to resolve at its own sampling: it keeps
the noise's grain as if it were structure. Binning first, as microscopists do on the
detector, adds k² pixels' counts (k times the signal-to-noise ratio) and brings the detail
to the scale the network was trained on. On the real low-dose pair (docs/benchmarks.md)
``hrtem-denoise`` after 2 x 2 binning adds 1.6-2 times less error than at the frame's own
sampling and less than the best Gaussian filter (its width chosen on the answer) and
BM3D, in both directions. On lattice images at moderate and high dose binning loses the finest
fringes, so it is a choice (``Binning`` in the Denoise dock, ``temseg denoise --bin``),
off by default.

Binning is a block mean (the edge is padded by repetition to a whole block; NaN pixels and
dead, stuck or padded columns and rows are left out of their block's mean); the result comes
back with cubic interpolation.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from napari_temseg.defaults import BINS
from napari_temseg.engine.finite import median_filled
from napari_temseg.models.normalize import defect_runs

#: a binned frame must keep at least this many pixels a side
MIN_BINNED = 16


def check_bin(k: int, shape: tuple[int, ...] | None = None) -> int:
    """``k`` as an int, or a ``ValueError`` that says what is allowed."""
    if k not in BINS:
        raise ValueError(f"binning must be one of {', '.join(map(str, BINS))}, got {k}")
    if shape is not None and k > 1 and min(shape[-2:]) < k * MIN_BINNED:
        raise ValueError(
            f"a {shape[-2]}x{shape[-1]} frame is too small to bin {k}x{k} "
            f"(at least {k * MIN_BINNED} px a side); use binning 1"
        )
    return int(k)


def bin_frame(frame: np.ndarray, k: int) -> np.ndarray:
    """Block means of ``k`` x ``k`` pixels (float32); a partial edge block is padded.

    Dead, stuck and padded columns and rows (``models.normalize.defect_runs``) are left
    out of the means of blocks that hold other pixels. Averaged in, a stuck column would
    become a column of noisy values that no longer reads as a defect: on a 256 px frame
    binned 2 x 2 it is 0.8 % of the pixels, enough to set the normalisation's 99.5th
    percentile and flatten the specimen (simulated HRTEM with a saturated column at
    10 e/px: -37 dB instead of +21 dB). A block of defect pixels only keeps their mean,
    which stays a run the normalisation recognises.
    """
    x = np.asarray(frame, np.float32)
    h, w = x.shape
    x = np.pad(x, ((0, -h % k), (0, -w % k)), mode="edge")
    blocks = x.reshape(x.shape[0] // k, k, x.shape[1] // k, k)
    finite = np.isfinite(blocks)
    defects = defect_runs(x)
    if defects is None and finite.all():
        return blocks.mean((1, 3), dtype=np.float32)
    use = finite if defects is None else finite & ~defects.reshape(blocks.shape)
    count = use.sum((1, 3))
    means = np.where(use, blocks, 0).sum((1, 3), dtype=np.float64) / np.maximum(count, 1)
    if (count == 0).any():  # defect-only blocks keep their mean; an all-NaN one stays NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kept = np.nanmean(np.where(finite, blocks, np.nan), (1, 3))
        means = np.where(count == 0, kept, means)
    return means.astype(np.float32)


def unbin_frame(small: np.ndarray, k: int, shape: tuple[int, int], like: np.ndarray) -> np.ndarray:
    """``small`` interpolated back to ``shape`` (cubic), within ``like``'s finite range,
    NaN where ``like`` is not finite (what ``engine.denoise`` promises of its output)."""
    big = ndimage.zoom(median_filled(small), k, order=3, grid_mode=True, mode="reflect")[
        : shape[0], : shape[1]
    ].astype(np.float32)
    ok = np.isfinite(like)
    if ok.any():
        np.clip(big, float(like[ok].min()), float(like[ok].max()), out=big)
    big[~ok] = np.nan
    return big
