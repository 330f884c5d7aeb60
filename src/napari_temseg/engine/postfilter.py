"""A denoiser's calibrated final smoothing: ``w * y + (1 - w) * gaussian(y, sigma)``.

Why: at very low dose a denoiser trained over a wide dose range keeps structure the data
cannot support. On simulated HRTEM at 1 e/px ``hrtem-denoise``'s output varied 1.7 times
more than the clean image (mostly invented texture) and scored 2.4 dB below a Gaussian
filter; blending it with a smoothed copy of itself, the blend fitted on simulated images
with the same noise level (``engine.adapt``), gained 4.8-5.2 dB. The blend is stored in
the model's header (``"postfilter"``), so an adapted model applies it wherever it runs;
bundled models have none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

#: the smoothing widths tried (pixels of the image the network sees); 0 = none. No wider:
#: simulated HRTEM at a few e/px has so little contrast that the fit then asked for a
#: width of 24 px, the mean of the frame, which erased the real low-dose pair's field
#: (oracle Gaussian 7 px; docs/denoise.md)
SIGMAS = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def _smooth(y: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores NaN pixels (normalised convolution)."""
    finite = np.isfinite(y)
    if finite.all():
        return ndimage.gaussian_filter(y, sigma, mode="reflect")
    w = ndimage.gaussian_filter(finite.astype(np.float64), sigma, mode="reflect")
    s = ndimage.gaussian_filter(np.where(finite, y, 0.0), sigma, mode="reflect")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, s / w, np.nan)


def apply_postfilter(y: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """``y`` (one 2D frame) blended with its smoothed copy as ``spec`` says; float32.

    A convex blend of local averages: it never leaves the range of ``y``, and NaN pixels
    stay NaN."""
    if not spec or not spec.get("sigma"):
        return y
    w = float(spec.get("weight", 0.0))
    y64 = np.asarray(y, np.float64)
    return (w * y64 + (1 - w) * _smooth(y64, float(spec["sigma"]))).astype(np.float32)


def fit_postfilter(
    outputs: Sequence[np.ndarray],
    cleans: Sequence[np.ndarray],
    min_gain_db: float = 0.0,
    accept: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[dict[str, Any] | None, float, float]:
    """The blend that brings ``outputs`` closest to ``cleans`` (mean squared error).

    Returns (spec or None when no smoothing gains ``min_gain_db`` or more, mse without,
    mse with). For each width the weight has a closed form (least squares, clipped to
    [0, 1]). ``accept``: a last check of a candidate (``engine.adapt`` asks whether it
    would take more from the user's frames than from the simulated ones); the best blend
    it accepts is returned."""
    pairs = [
        (np.asarray(y, np.float64), np.asarray(c, np.float64))
        for y, c in zip(outputs, cleans, strict=True)
    ]
    plain = float(np.mean([np.mean((y - c) ** 2) for y, c in pairs]))
    candidates: list[tuple[float, float, float]] = []
    for sigma in SIGMAS[1:]:
        smooth = [_smooth(y, sigma) for y, _ in pairs]
        num = sum(float(((y - b) * (c - b)).sum()) for (y, c), b in zip(pairs, smooth, strict=True))
        den = sum(float(((y - b) ** 2).sum()) for (y, _), b in zip(pairs, smooth, strict=True))
        w = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0
        mse = float(
            np.mean(
                [
                    np.mean((w * y + (1 - w) * b - c) ** 2)
                    for (y, c), b in zip(pairs, smooth, strict=True)
                ]
            )
        )
        candidates.append((mse, sigma, w))
    for mse, sigma, w in sorted(candidates):
        if w >= 1 or not mse > 0 or 10 * np.log10(plain / mse) < min_gain_db:
            break  # sorted: no later candidate gains more
        spec = {"sigma": sigma, "weight": round(w, 4)}
        if accept is None or accept(spec):
            return spec, plain, mse
    return None, plain, plain


def removed_share(
    inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], spec: dict[str, Any]
) -> float:
    """What the smoothing takes from the outputs, in units of what the network took from
    its inputs (mostly noise): median over the images of
    ``mean((y - smoothed y)^2) / mean((x - y)^2)``.

    Why: a blend fitted on simulated images is right for images like them. A frame with
    finer real structure than the simulated specimens loses more of it to the same
    smoothing, and shows it as a larger share (``engine.adapt`` compares the two)."""
    shares = []
    for x, y in zip(inputs, outputs, strict=True):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        took = float(np.nanmean((x64 - y64) ** 2))
        gone = float(np.nanmean((y64 - apply_postfilter(y64, spec)) ** 2))
        if took > 0 and np.isfinite(gone):
            shares.append(gone / took)
    return float(np.median(shares)) if shares else 0.0


__all__ = ["SIGMAS", "apply_postfilter", "fit_postfilter", "removed_share"]
