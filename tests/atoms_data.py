"""Simulated single-atom frames and imitated painting, for the atom tests (engine and dock)."""

from __future__ import annotations

import math

import numpy as np


def atoms_frame(
    seed: int, n: int = 40, size: int = 192, sigma: float = 1.6, dose: float = 40.0, tilt=(1, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """Single atoms (Gaussian blobs, at least 9 px apart) on a support whose brightness
    drifts across the frame, with Poisson counting noise at ``dose`` counts on the support."""
    rng = np.random.default_rng(seed)
    pts: list[tuple[float, float]] = []
    while len(pts) < n:
        p = rng.uniform(8, size - 8, 2)
        if all(math.dist(p, q) >= 9 for q in pts):
            pts.append((float(p[0]), float(p[1])))
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    support = 1.0 + tilt[0] * yy / size + tilt[1] * xx / size  # a 2-4x brightness drift
    signal = support.copy()
    for y, x in pts:
        signal += 1.5 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return rng.poisson(signal * dose).astype(np.float32), np.array(pts)


def paint(shape, atoms: np.ndarray, n_atoms: int, seed: int) -> np.ndarray:
    """Discs of radius 2 on ``n_atoms`` atoms (class 2), support strokes away from atoms (1)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for y, x in atoms[:n_atoms]:
        lab[(yy - y) ** 2 + (xx - x) ** 2 <= 4] = 2
    done = 0
    while done < 12:
        r, c = int(rng.integers(4, shape[0] - 4)), int(rng.integers(4, shape[1] - 16))
        if np.min(np.hypot(atoms[:, 0] - r, atoms[:, 1] - (c + 6))) > 10:
            lab[r, c : c + 12] = 1
            done += 1
    return lab
