"""Display helpers shared by readers, sample data and widgets (Qt-free)."""

from __future__ import annotations

from typing import Any

import numpy as np


def display_limits(data: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Contrast limits from robust percentiles, so X-ray hits and dead pixels do not flatten
    the view. Looks at about a million evenly strided samples of the (first) frame."""
    arr = np.asarray(data if np.ndim(data) <= 2 else data[(0,) * (np.ndim(data) - 2)])
    flat = arr.ravel()
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)
