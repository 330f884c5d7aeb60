"""Class balance: what the strokes taught against what the painted frames hold.

A segmenter trained on strokes takes the painted classes' proportions as its prior. A user
who paints ten atoms and ten support strokes teaches "half of all pixels are atoms" where
a fraction of a percent are, and the network then calls the rare class all over frames it
was not painted on (on the real acstem frames: 4-6 % of the pixels, against 0.3 %). The
posteriors can be corrected for a change of prior without labels (Saerens, Latinne and
Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities"):
estimate the class shares on unlabelled pixels by EM, then multiply each class's
probability by the ratio of the estimated to the training prior and renormalise.

The shares are estimated once, after training, on every pixel of the painted frames: the
session the user described, not each frame to be segmented (a frame of thick support then
keeps the painted session's balance instead of drifting with the network's bias on it).
The correction goes into the segmenter's head bias (``engine.finetune``), so every way of
running the model applies it; the header records it. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: EM stops when no share moves by more than this
TOLERANCE = 1e-6
MAX_ITERATIONS = 500
#: the correction is kept only if the network found at least this share of every class's
#: own painted pixels (else its probabilities are not to be trusted) ...
TRUST = 0.8
#: ... and, corrected, still finds this share of what it found of them before
KEEP = 0.85
#: a class's share is never estimated below this (a class the frames lack must not get an
#: infinite correction)
MIN_SHARE = 1e-4


def stroke_prior(counts: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    """The class prior training taught: each class's painted pixels times its loss weight."""
    mass = np.asarray(counts, np.float64) * np.asarray(weights, np.float64)
    if mass.sum() <= 0:
        raise ValueError("no painted pixels")
    return mass / mass.sum()


def estimate_prior(
    probabilities: Sequence[np.ndarray], trained: np.ndarray
) -> tuple[np.ndarray, int]:
    """Class shares of unlabelled pixels by EM -> (shares, iterations).

    ``probabilities``: per-frame (K, ...) softmax outputs of a model trained with prior
    ``trained``. Each round re-weights them by shares / trained and takes the mean.
    """
    trained = np.asarray(trained, np.float64)
    k = len(trained)
    flat = np.concatenate([np.asarray(p, np.float64).reshape(k, -1) for p in probabilities], axis=1)
    flat = np.clip(flat, 1e-8, None)
    share = trained.copy()
    for it in range(1, MAX_ITERATIONS + 1):
        q = flat * (share / trained)[:, None]
        q /= q.sum(0, keepdims=True)
        new = np.maximum(q.mean(1), MIN_SHARE)
        new /= new.sum()
        if np.abs(new - share).max() < TOLERANCE:
            return new, it
        share = new
    return share, MAX_ITERATIONS


def prior_ratio(meta: dict) -> np.ndarray | None:
    """The per-class correction a segmenter's header records, or None (older models)."""
    balance = meta.get("class_balance") or {}
    ratio = balance.get("ratio")
    if not ratio:
        return None
    r = np.asarray(ratio, np.float64)
    return r if np.all(np.isfinite(r)) and np.all(r > 0) else None


def describe_balance(balance: dict | None, names: Sequence[str]) -> str:
    """One line for the dock's status and ``temseg finetune``: what the painted frames hold
    against what the strokes taught, and whether the model was corrected."""
    if not balance:
        return ""
    shares = ", ".join(
        f"{n} {f * 100:.3g} % (strokes {s * 100:.0f} %)"
        for n, f, s in zip(names, balance["painted_frames"], balance["strokes"], strict=False)
    )
    if balance.get("in_head_bias"):
        return f"classes on the painted frames: {shares}; the model was corrected to them"
    before = balance["stroke_recall"]
    after = balance.get("stroke_recall_balanced") or before
    if min(before) < TRUST:
        return (
            f"class balance not corrected (the network does not yet find every class's own "
            f"strokes: {', '.join(f'{r:.0%}' for r in before)})"
        )
    lost = [
        f"{n} {b:.0%} -> {a:.0%}"
        for n, b, a in zip(names, before, after, strict=False)
        if a < KEEP * b
    ]
    return (
        f"class balance not corrected (estimated {shares}; corrected, the network would find "
        f"less of its own painted pixels: {', '.join(lost)})"
    )
