"""Say when a segmenter is unsure: per-pixel uncertainty and per-frame warnings. Pure numpy.

A segmenter fine-tuned on strokes of a few frames learns those frames. On a frame from
another session (a darker exposure, other contrast) it can return one class everywhere
(issue 15: every frame of a second session came back 100 % particle), and the held-out Dice
of the painted frames says nothing about it. So, on every frame it is applied to:

- :func:`uncertainty` maps how close each pixel is to a tie between its two likeliest
  classes (1 - the margin of their probabilities): 0 = sure, 1 = a coin toss;
- :func:`outside_painted` compares the frame's intensity statistics (level and noise, as
  the network sees them after normalisation) with those of the painted frames (stored in
  the segmenter by :func:`frame_stats` at training time);
- :func:`degenerate` flags a prediction where one class covers almost every pixel.

Both warnings end with the remedy: paint a few strokes on that frame and train again.
The Train dock and ``temseg segment`` report them; neither stays silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: one class over more than this fraction of a frame's pixels is a degenerate prediction
DEGENERATE_FRACTION = 0.98
#: a frame's normalised median may lie this far (0..1 units) beyond the painted frames'
LEVEL_TOLERANCE = 0.15
#: and its normalised noise this factor beyond the painted frames' noise
NOISE_FACTOR = 1.5
REMEDY = "paint a few strokes on this frame and train again"


def frame_stats(image: Any, max_pixels: int = 1 << 18) -> dict[str, float]:
    """Intensity statistics of one 2D frame as the network sees it: level and noise.

    The segmenter normalises every frame by its own 0.5-99.5 % percentiles
    (``models/normalize.py``), so a plain change of gain or offset (another detector
    setting) changes nothing it sees and is not reported. What does change it, a lower dose
    or another contrast, shows here: ``median`` is the frame's median in those normalised
    units (0..1), ``noise`` the pixel-to-pixel noise in them (the median absolute
    difference of horizontal neighbours, scaled to a Gaussian sigma). Percentiles and
    medians, so X-ray spikes and dead pixels do not move them; computed on a strided
    subsample of at most about ``max_pixels`` pixels (rows strided, neighbours kept).
    """
    a = np.asarray(image)
    if a.ndim != 2 or a.shape[1] < 2:
        return {"median": float("nan"), "noise": float("nan")}
    step = max(1, int(np.ceil(a.size / max_pixels)))
    sub = np.asarray(a[::step], dtype=np.float64)
    values = sub[np.isfinite(sub)]
    if values.size == 0:
        return {"median": float("nan"), "noise": float("nan")}
    lo, p50, hi = np.percentile(values, [0.5, 50, 99.5])
    span = hi - lo if hi > lo else 1.0
    diff = np.diff(sub, axis=1)
    diff = np.abs(diff[np.isfinite(diff)])
    noise = 1.4826 * float(np.median(diff)) / np.sqrt(2) if diff.size else float("nan")
    return {"median": float((p50 - lo) / span), "noise": float(noise / span)}


def outside_painted(stats: dict[str, float], painted: Sequence[dict[str, float]]) -> str | None:
    """Why ``stats`` lie outside the painted frames' statistics, or None if they do not.

    Accepted: a normalised median within the painted frames' range widened by
    ``LEVEL_TOLERANCE``, and a noise level within their range widened by the factor
    ``NOISE_FACTOR``. Painting frames of several sessions widens both.
    """
    medians = np.array([p.get("median", np.nan) for p in painted], dtype=float)
    noises = np.array([p.get("noise", np.nan) for p in painted], dtype=float)
    ok = np.isfinite(medians) & np.isfinite(noises)
    m, n = stats.get("median", np.nan), stats.get("noise", np.nan)
    if not ok.any() or not (np.isfinite(m) and np.isfinite(n)):
        return None
    medians, noises = medians[ok], noises[ok]
    lo, hi = float(medians.min()) - LEVEL_TOLERANCE, float(medians.max()) + LEVEL_TOLERANCE
    nlo, nhi = float(noises.min()) / NOISE_FACTOR, float(noises.max()) * NOISE_FACTOR
    why = []
    if not lo <= m <= hi:
        why.append(f"intensity level {m:.2f} (painted frames: {lo:.2f} to {hi:.2f})")
    if not nlo <= n <= nhi:
        why.append(f"noise {n:.3f} (painted frames: {nlo:.3f} to {nhi:.3f})")
    if not why:
        return None
    return "unlike the painted frames: " + " and ".join(why)


def degenerate(
    labels: Any, class_names: Sequence[str], fraction: float = DEGENERATE_FRACTION
) -> str | None:
    """Why a frame's prediction is degenerate (one class on almost every pixel), or None."""
    lab = np.asarray(labels)
    if lab.size == 0:
        return None
    counts = np.bincount(lab.ravel(), minlength=len(class_names) + 1)[1:]
    top = int(np.argmax(counts))
    share = counts[top] / lab.size
    if share <= fraction:
        return None
    name = class_names[top] if top < len(class_names) else f"class {top + 1}"
    return f"{share:.1%} of the pixels are '{name}': the prediction is degenerate"


def check_frame(
    image: Any, labels: Any, meta: dict[str, Any], stats: dict[str, float] | None = None
) -> list[str]:
    """Warnings for one segmented 2D frame, each ending with the remedy (empty: none).

    ``meta`` is the segmenter's: its class names, and the painted frames' statistics in
    ``training_data["intensity"]`` (absent in segmenters trained before they were stored,
    which only get the degenerate-prediction check).
    """
    out = []
    painted = (meta.get("training_data") or {}).get("intensity") or []
    if painted:
        why = outside_painted(stats or frame_stats(image), painted)
        if why:
            out.append(why)
    why = degenerate(labels, list(meta.get("class_names") or []))
    if why:
        out.append(why)
    return [f"{w}; {REMEDY}" for w in out]


def check_frames(image: Any, labels: Any, meta: dict[str, Any]) -> list[tuple[tuple, str]]:
    """(frame index, warning) for every frame of a 2D image or a stack (..., Y, X).

    Frames are read one at a time, so a lazy or memory-mapped stack is never loaded whole.
    """
    shape = tuple(labels.shape)
    lead = shape[:-2]
    found = []
    for idx in np.ndindex(*lead) if lead else [()]:
        img = image[idx] if idx else image
        lab = labels[idx] if idx else labels
        found += [(idx, w) for w in check_frame(img, lab, meta)]
    return found


def uncertainty(probs: np.ndarray, axis: int = -3) -> np.ndarray:
    """1 - (p1 - p2) per pixel, p1 >= p2 the two largest class probabilities along ``axis``.

    0 where the segmenter is sure, 1 where its two likeliest classes tie. The margin, not
    the entropy, so that it reads the same for 2 classes as for 8. float32, ``axis`` removed.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.shape[axis] < 2:
        return np.zeros(np.delete(np.array(p.shape), axis % p.ndim), np.float32)
    top2 = -np.partition(-p, 1, axis=axis).take([0, 1], axis=axis)
    first = top2.take(0, axis=axis)
    second = top2.take(1, axis=axis)
    return np.clip(1.0 - (first - second), 0.0, 1.0).astype(np.float32)


def describe_frame(idx: tuple) -> str:
    """Name a frame of a stack as a person reads it ("frame 3"); "" for a 2D image."""
    if not idx:
        return ""
    return f"frame {idx[0]}" if len(idx) == 1 else f"frame {tuple(int(i) for i in idx)}"
