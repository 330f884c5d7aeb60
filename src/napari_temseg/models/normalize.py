"""Robust intensity normalisation of micrographs, and its inverse.

Detector counts vary over orders of magnitude between acquisitions, so each frame is mapped
to a common range before it meets a network: its low and high percentiles (0.5 % and
99.5 % by default) go to 0 and 1. Percentiles, unlike min/max or mean/std, ignore the few
X-ray spikes and dead pixels of a real frame. Not a few bad columns: two stuck columns are
0.8 % of a 256-pixel-wide frame, enough to become its 99.5th percentile and squash the
specimen into a thousandth of the range (the network then sees a flat frame). So pixels in
long runs of one value along a column or a row (dead, stuck or padded columns and rows)
are left out of the percentiles when they are a small share of the frame, or when their
value is rare in the rest of it (a drift-corrected frame's zero border). The statistics
come from the whole frame (a strided subsample of it for big frames), never from one
tile, so every tile of a frame is treated alike. The same settings are stored in a checkpoint, so inference normalises
exactly as training did, and the output is mapped back to the input's intensity range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

METHODS = ("percentile", "none")
#: a run of this many identical values along a column or row is a defect, not specimen
#: (at 0.2 e/px a run of 64 zeros has odds of 3e-6)
DEFECT_RUN = 64
#: above this share of the sample, long runs are the image itself (a sparse counting frame,
#: a mask): the percentiles then use every pixel, unless they are padding (below)
MAX_DEFECT_SHARE = 0.1
#: runs of values that fewer than this share of the other pixels take are padding (the
#: zeros around an aligned or rotated frame) up to ``MAX_PADDING_SHARE`` of the frame; a
#: sparse counting frame's zeros, or a mask's values, fill the rest of it too
PADDING_RARITY = 0.01
#: beyond this share the runs are the frame (a few counts in a sea of zeros), not padding
MAX_PADDING_SHARE = 0.75


@dataclass(frozen=True)
class Normalization:
    """How to normalise a frame: ``percentile`` (``low``/``high`` -> 0/1) or ``none``.

    Normalised values are clipped to ``[-clip, clip]``: a saturated X-ray hit in a
    low-dose frame can sit thousands of normalised units above the signal, and the
    network need not know by how much.
    """

    method: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    clip: float | None = 20.0
    max_samples: int = 1_048_576

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown normalisation {self.method!r}; expected one of {METHODS}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(
                f"need 0 <= low < high <= 100 percentiles, got {self.low}, {self.high}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Normalization:
        """From checkpoint metadata; ``None`` gives the default (unknown keys are ignored)."""
        if not d:
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def stats(
        self,
        frame: Any,
        *,
        block_rows: int | None = None,
        after_block: Callable[[], Any] | None = None,
    ) -> tuple[float, float]:
        """``(offset, scale)`` of one frame (numpy, dask or any sliceable 2D array).

        ``block_rows`` reads the strided sample that many rows at a time (the same
        pixels), calling ``after_block()`` after each: ``engine.large`` gives a memory
        map's pages back there, so sampling a huge mapped frame never maps it all in.
        """
        if self.method == "none":
            return 0.0, 1.0
        grid = subsample(frame, self.max_samples, block_rows, after_block, flat=False)
        keep = np.isfinite(grid)
        if not keep.any():
            return 0.0, 1.0
        runs = defect_runs(grid) if grid.ndim == 2 else None
        if runs is not None and (keep & ~runs).any():
            keep &= ~runs
        sample = grid[keep]
        lo, hi = np.percentile(sample, [self.low, self.high])
        if hi - lo > 1e-6 * max(abs(hi), abs(lo), 1e-12):
            return float(lo), float(hi - lo)
        # very sparse images (a few counts in a sea of zeros): fall back to the spread
        std = float(sample.std())
        if std > 0:
            return float(lo), std * 4.0
        return float(lo), 1.0

    def apply(self, x: Any, stats: tuple[float, float]) -> Any:
        """Normalise ``x`` (numpy array or torch tensor) with a frame's ``stats``."""
        if self.method == "none":
            return x
        offset, scale = stats
        y = (x - offset) / scale
        return y.clip(-self.clip, self.clip) if self.clip else y

    @staticmethod
    def invert(y: Any, stats: tuple[float, float]) -> Any:
        offset, scale = stats
        return y * scale + offset


def defect_runs(grid: np.ndarray) -> np.ndarray | None:
    """Mask of the dead, stuck or padded columns and rows of a 2D frame (runs of
    ``DEFECT_RUN`` identical values), or None when it has none, or when they are more than
    ``MAX_DEFECT_SHARE`` of it and their values are common in the rest of the frame (then
    they are the image itself: a sparse counting frame, a mask). The normalisation leaves
    them out of its percentiles, ``engine.binning`` out of its block means.

    Padding is the case that needs the second test: a drift-corrected or rotated frame's
    zero border is often more than a tenth of it, and counted in, it set the low percentile
    of a bright-field frame and squashed the specimen into a few hundredths of the range
    (simulated HRTEM, 512 px, 10 e/px, a quarter of it zeros: 9.1 dB instead of 20.6)."""
    runs = flat_runs(grid, DEFECT_RUN)
    share = runs.mean()
    if share == 0:
        return None
    if share <= MAX_DEFECT_SHARE:
        return runs
    if share > MAX_PADDING_SHARE:
        return None
    rest = grid[~runs & np.isfinite(grid)]
    if rest.size == 0 or np.isin(rest, np.unique(grid[runs])).mean() >= PADDING_RARITY:
        return None
    return runs


def flat_runs(grid: np.ndarray, run: int) -> np.ndarray:
    """Mask of the pixels of a 2D array that lie in a run of at least ``run`` identical
    values along a column or along a row."""
    rows, cols = run_masks(grid, run)
    return rows | cols


def run_masks(grid: np.ndarray, run: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the pixels of a 2D array in a run of at least ``run`` identical values
    along their row, and along their column."""

    def along_rows(a: np.ndarray) -> np.ndarray:
        new = np.ones(a.shape, bool)
        new[:, 1:] = a[:, 1:] != a[:, :-1]
        ids = np.cumsum(new.ravel()) - 1  # one id per run, rows never share one
        return (np.bincount(ids)[ids] >= run).reshape(a.shape)

    return along_rows(grid), along_rows(np.ascontiguousarray(grid.T)).T


def sample_step(shape: tuple[int, ...], max_samples: int) -> int:
    """The stride along every axis of :func:`subsample`'s grid."""
    return max(1, math.ceil((math.prod(shape) / max_samples) ** (1 / max(len(shape), 1))))


def subsample(
    frame: Any,
    max_samples: int,
    block_rows: int | None = None,
    after_block: Callable[[], Any] | None = None,
    *,
    flat: bool = True,
) -> np.ndarray:
    """A strided float sample of at most about ``max_samples`` pixels, read lazily
    (in one go, or ``block_rows`` rows at a time with ``after_block()`` after each);
    raveled, or with ``flat=False`` on the frame's strided grid."""
    shape = frame.shape
    step = sample_step(shape, max_samples)
    if block_rows is None or not shape:
        sample = frame[(slice(None, None, step),) * len(shape)] if step > 1 else frame
        sample = np.asarray(sample, dtype=np.float64)
        return sample.ravel() if flat else sample
    rest = (slice(None, None, step),) * (len(shape) - 1)
    parts = []
    for r0 in range(0, shape[0], block_rows):
        first = -(-r0 // step) * step  # the first sampled row of this block
        if first < min(r0 + block_rows, shape[0]):
            rows = slice(first, r0 + block_rows, step)
            parts.append(np.asarray(frame[(rows, *rest)], dtype=np.float64))
            if after_block is not None:
                after_block()
    if not parts:
        return np.empty(0)
    grid = np.concatenate(parts)
    return grid.ravel() if flat else grid
