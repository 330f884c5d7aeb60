"""Is the lattice kept? Atom-column positions fitted on denoised low-dose STEM, in pm.

    python benchmarks/bench_columns.py --doses 5 10 20 --n 4

Lobato et al. restore single-shot images to measure atomic columns: positions and
intensities. Here simulated atomic-resolution HAADF-STEM frames (256², 0.02 nm/px, so
columns are 9-14 px apart; seeds 7000+i, never used in training) are denoised by a
Gaussian filter whose sigma is chosen on the clean image (an oracle), BM3D (when the
``bm3d`` package is installed) and the bundled ``stem-denoise``. The true columns are the
local maxima of the noise-free frame as the scan recorded it (``recorded_clean``, so scan
distortions are not counted as errors) inside the particles that stand out of their 7x7
surroundings by at least 25 % (resolved columns); on every estimate the
brightest pixel within 3 px of each true column is refined to sub-pixel precision (a
parabola through it and its neighbours, per axis) and its distance to the true column's
refined position is the error. Reported: median and 90th percentile of the error in pm,
and the share of columns found within 1 px (20 pm). Markdown on stdout. ``--fit gaussian``
locates each estimate's column by a 2D Gaussian fitted around its brightest pixel instead
(as Atomap-style column fitting does). ``--truth scene`` takes the true columns from the
specimen itself (``clean``, before the scan's distortions), which is what the bundled
models are trained to restore and what a microscopist wants to measure.

``--max-per-frame K`` scores at most K columns of each frame (a seeded draw), so that with
many frames (``--n 24``) no single frame decides the median; ``--orientations 2 8`` adds
the model averaged over two and eight orientations (``--tta``: eight).

``--blur PX [PX ...]``: also a Gaussian of each fixed width of the noisy frame and of the
model's output.

``--adapt SECONDS``: also adapt the model to each dose's frames (``engine.adapt``, as a
user adapting to a series with the frames' calibration) and add the adapted model's column.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_denoise_quality import add_orientations, baselines
from scipy import ndimage
from skimage.feature import peak_local_max

from napari_temseg.engine import denoise
from napari_temseg.engine.adapt import AdaptConfig, run_adapt
from napari_temseg.models import load_model
from napari_temseg.synth import simulate

PIXEL_NM = 0.02
SEARCH_PX = 3


def refine(img: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """Sub-pixel peak position: a parabola through (y, x) and its two neighbours per axis
    (at most a pixel away: a flat top would send it anywhere)."""
    h, w = img.shape
    if not (0 < y < h - 1 and 0 < x < w - 1):
        return float(y), float(x)
    out = []
    for lo, mid, hi, c in (
        (img[y - 1, x], img[y, x], img[y + 1, x], y),
        (img[y, x - 1], img[y, x], img[y, x + 1], x),
    ):
        d = lo - 2 * mid + hi
        out.append(c + (float(np.clip(0.5 * (lo - hi) / d, -1, 1)) if d < 0 else 0.0))
    return out[0], out[1]


#: a column counts when it stands out of its surroundings by this share of its height
#: (some simulated particles have flat tops with columns no dose would resolve)
MIN_CONTRAST = 0.25


def columns(clean: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """True column positions (sub-pixel) of the noise-free frame: resolved, in particles."""
    peaks = peak_local_max(clean, min_distance=4, threshold_rel=0.2, exclude_border=8)
    peaks = peaks[particles[peaks[:, 0], peaks[:, 1]]]
    low = ndimage.minimum_filter(clean, 2 * SEARCH_PX + 1)
    top = clean[peaks[:, 0], peaks[:, 1]]
    peaks = peaks[(top - low[peaks[:, 0], peaks[:, 1]]) >= MIN_CONTRAST * np.abs(top)]
    return np.array([refine(clean, y, x) for y, x in peaks])


def fit_gaussian(img: np.ndarray, y: int, x: int, r: int = SEARCH_PX) -> tuple[float, float]:
    """Column position as the centre of a round 2D Gaussian plus a constant, fitted by least
    squares to the (2r+1)² window around (y, x), as Atomap-style column fitting does; the
    parabola's answer where the window leaves the image or the fit fails."""
    from scipy.optimize import least_squares

    h, w = img.shape
    if not (r <= y < h - r and r <= x < w - r):
        return refine(img, y, x)
    win = img[y - r : y + r + 1, x - r : x + r + 1].astype(np.float64)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    lo, top = float(win.min()), float(win.max())

    def resid(p):
        a, cy, cx, sig, b = p
        return (a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig**2)) + b - win).ravel()

    try:
        fit = least_squares(
            resid,
            [max(top - lo, 1e-9), 0.0, 0.0, 1.5, lo],
            bounds=([0, -r, -r, 0.5, -np.inf], [np.inf, r, r, 2.0 * r, np.inf]),
        )
    except ValueError:
        return refine(img, y, x)
    if not fit.success:
        return refine(img, y, x)
    return y + float(fit.x[1]), x + float(fit.x[2])


def errors(est: np.ndarray, truth: np.ndarray, fit: str = "parabola") -> np.ndarray:
    """Distance (px) from each true column to the refined brightest pixel near it
    (``fit``: "parabola" through it and its neighbours, or a 2D "gaussian" around it)."""
    out = []
    for ty, tx in truth:
        y0, x0 = round(float(ty)), round(float(tx))
        win = est[y0 - SEARCH_PX : y0 + SEARCH_PX + 1, x0 - SEARCH_PX : x0 + SEARCH_PX + 1]
        dy, dx = np.unravel_index(int(np.argmax(win)), win.shape)
        py, px = y0 - SEARCH_PX + int(dy), x0 - SEARCH_PX + int(dx)
        y, x = fit_gaussian(est, py, px) if fit == "gaussian" else refine(est, py, px)
        out.append(np.hypot(y - ty, x - tx))
    return np.array(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doses", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="stem-denoise")
    p.add_argument("--adapt", type=float, default=0.0, metavar="SECONDS")
    p.add_argument(
        "--own-share",
        type=float,
        nargs="+",
        default=[AdaptConfig.own_share],
        help="with --adapt: AdaptConfig.own_share, each in turn",
    )
    p.add_argument(
        "--truth",
        choices=("recorded", "scene"),
        default="recorded",
        help="true columns of the frame as the scan recorded it (scan distortions are not "
        "errors) or of the specimen itself (the bundled models are trained to restore it)",
    )
    p.add_argument(
        "--fit",
        choices=("parabola", "gaussian"),
        default="parabola",
        help="how each estimate's column is located around its brightest pixel",
    )
    add_orientations(p, "the model")
    p.add_argument(
        "--max-per-frame",
        type=int,
        default=None,
        metavar="K",
        help="score at most K columns per frame (a seeded draw), so that no frame decides "
        "the median (seed 7002 alone holds 280 of the first four frames' 329 at 20 e/px)",
    )
    p.add_argument(
        "--blur",
        type=float,
        nargs="+",
        default=[],
        metavar="PX",
        help="also a Gaussian of each width applied to the noisy frame and to the model's "
        "output: does a fixed width place columns better than the sigma chosen for PSNR, "
        "and is the model's column still where a blur of its output finds it?",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    try:
        import bm3d  # noqa: F401

        use_bm3d = True
    except ImportError:
        use_bm3d = False
    model = load_model(a.model, "cpu")
    print(
        f"column position error (pm) on simulated HAADF-STEM, {PIXEL_NM * 1000:.0f} pm/px, "
        f"{a.n} frames per dose, {a.truth} truth, columns located by {a.fit} fit: "
        "median / 90th percentile, "
        "share within 1 px\n"
    )
    names = ["noisy", "gaussian (oracle sigma)", "BM3D", a.model]
    adapted_names = [f"{a.model}, adapted {a.adapt:.0f} s, own share {v:g}" for v in a.own_share]
    names += adapted_names if a.adapt > 0 else []
    names += [f"{a.model}, {n} orientations" for n in a.orientations]
    names += [f"Gaussian {w:g} px" for w in a.blur] + [f"{a.model} + {w:g} px" for w in a.blur]
    print(
        "| dose (e/px) | columns | noisy | oracle Gaussian | BM3D | " + " | ".join(names[3:]) + " |"
    )
    print("|---|---|---|---|---|---" + "|---" * (len(names) - 4) + "|")
    for dose in a.doses:
        errs: dict[str, list[np.ndarray]] = {}
        count = 0
        sims = [
            simulate("stem", 256, pixel_size_nm=PIXEL_NM, dose=dose, seed=7000 + i)
            for i in range(a.n)
        ]
        adapted = {}
        for name, share in zip(adapted_names, a.own_share, strict=True) if a.adapt > 0 else []:
            cfg = AdaptConfig(seconds=a.adapt, device="cpu", own_share=share)
            r = run_adapt([s.noisy for s in sims], model, cfg, pixel_size_nm=PIXEL_NM)
            adapted[name] = r.spec
            print(f"  {dose:g} e/px, own share {share:g}: {r.message}", flush=True)
        for i, s in enumerate(sims):
            truth = (
                columns(s.clean, s.semantic == 2)
                if a.truth == "scene"
                else columns(s.recorded_clean, s.recorded_semantic == 2)
            )
            if a.max_per_frame is not None and len(truth) > a.max_per_frame:
                pick = np.random.default_rng(7000 + i)  # the frame's seed: same at every dose
                truth = truth[np.sort(pick.choice(len(truth), a.max_per_frame, replace=False))]
            count += len(truth)
            ests = baselines(s.noisy, s.recorded_clean, use_bm3d)
            ests.pop("NLM (oracle h)", None)
            ests[a.model] = denoise(s.noisy, model, device="cpu")
            for name, spec in adapted.items():
                ests[name] = denoise(s.noisy, spec, device="cpu")
            for n in a.orientations:
                ests[f"{a.model}, {n} orientations"] = denoise(s.noisy, model, device="cpu", tta=n)
            noisy64 = np.asarray(s.noisy, np.float64)
            for w in a.blur:
                ests[f"Gaussian {w:g} px"] = ndimage.gaussian_filter(noisy64, w)
                ests[f"{a.model} + {w:g} px"] = ndimage.gaussian_filter(ests[a.model], w)
            for name, est in ests.items():
                errs.setdefault(name, []).append(errors(np.asarray(est, np.float64), truth, a.fit))
        cells = []
        for name in names:
            if name not in errs:
                cells.append("-")
                continue
            e = np.concatenate(errs[name]) * PIXEL_NM * 1000
            share = float(np.mean(e <= PIXEL_NM * 1000))
            cells.append(f"{np.median(e):.1f} / {np.percentile(e, 90):.1f}, {share:.0%}")
        print(f"| {dose:g} | {count} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
