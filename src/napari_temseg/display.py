"""Display helpers shared by readers, sample data and widgets (Qt-free)."""

from __future__ import annotations

from typing import Any

import numpy as np


def display_limits(data: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Contrast limits from robust percentiles, so X-ray hits and dead pixels do not flatten
    the view. Looks at about a million evenly strided samples of the first frame only, so a
    lazy stack (memory map, dask) is not read in full. The one rule for every layer this
    plugin shows: opened files, sample data, denoised images and previews."""
    first = data if np.ndim(data) <= 2 else data[(0,) * (np.ndim(data) - 2)]
    step = max(1, int(np.sqrt(np.prod(np.shape(first)) / 1_000_000)))  # strided before reading
    strided = first[::step, ::step] if np.ndim(first) == 2 else first
    sample = np.asarray(strided).ravel().astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)
