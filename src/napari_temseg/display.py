"""Display helpers shared by readers, sample data and widgets (Qt-free)."""

from __future__ import annotations

from typing import Any

import numpy as np


def display_limits(data: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Contrast limits from robust percentiles, so X-ray hits and dead pixels do not flatten
    the view. Looks at about a million evenly strided samples of the first, middle and last
    frames only, so a lazy stack (memory map, dask) is not read in full; from the first
    frame alone, a series that brightens showed its late frames white, and napari's slider
    could not reach their values. The one rule for every layer this plugin shows: opened
    files, sample data, denoised images and previews."""
    if np.ndim(data) <= 2:
        frames = [data]
    else:
        lead = tuple(np.shape(data)[:-2])
        n = int(np.prod(lead))
        picks = sorted({0, n // 2, n - 1}) if n else []
        frames = [data[tuple(int(i) for i in np.unravel_index(k, lead))] for k in picks]
    parts = []
    for frame in frames:
        step = max(1, int(np.sqrt(np.prod(np.shape(frame)) * len(frames) / 1_000_000)))
        strided = frame[::step, ::step] if np.ndim(frame) == 2 else frame  # before reading
        parts.append(np.asarray(strided).ravel().astype(np.float64))
    sample = np.concatenate(parts) if parts else np.zeros(0)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)
