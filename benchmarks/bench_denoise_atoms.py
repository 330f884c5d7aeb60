"""Do the denoisers keep real atoms? Single Pt atoms found on denoised real HAADF-STEM frames.

    python benchmarks/bench_denoise_atoms.py --threads 1 --weights DIR [DIR ...]
    python benchmarks/bench_denoise_atoms.py --threads 1 --no-bm3d --adapt 60 --own-share 0 0.25

``../shared/realdata/acstem``: 21 real frames (0.0293 nm/px) with every atom marked, the
paper's split into 11 train and 10 test frames. Issue 13's lattice target is measured on
simulated columns (``bench_columns.py``); this is the same question on a real instrument's
frames, with a truth nobody here made. Each method's output goes through one fixed atom
detector: an optional Gaussian smoothing (0-4 px), then peaks of a difference of Gaussians
(sigma 1 and 3 px; a Pt atom is 3-4 px across), at least 3 px apart (sub-pixel as the
plugin's atom finder refines them), above a threshold in units of the response's own robust spread. The smoothing
and the threshold are each method's own, chosen on the 11 train frames for the best F1,
then scored on the 10 test frames, so no method is tuned on what it is scored on; the raw
frame's row is thus the Gaussian filter with its width chosen on the train frames. A peak within
``--radius`` px of a marked atom (one to one, nearest first) is a hit; the table gives
precision, recall and F1 on the test frames, and the median distance of the hits to the
marked atoms (pm; the marks are an annotator's clicks, so this has a floor of its own).

Methods side by side in one run: the raw frame, the Gaussian, BM3D (``--no-bm3d`` to skip),
the bundled ``stem-denoise`` and its fine-tuning start when one is bundled, and each
``--weights DIR``'s ``stem-denoise.safetensors``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_acstem import ACSTEM, load
from bench_denoise_pair import bm3d_denoise
from bench_denoise_quality import add_orientations
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.engine.adapt import AdaptConfig, run_adapt
from napari_temseg.engine.atoms import (
    detection_scores,
    match_points,
    matched_distances,
    refine_peaks,
)
from napari_temseg.models import FINETUNE_START, load_model

PM_PER_PX = 29.3
THRESHOLDS = np.round(np.arange(1.0, 12.01, 0.25), 2)
SMOOTHING = (0.0, 1.0, 2.0, 3.0, 4.0)


def response(img: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (1, 3 px) in units of its own robust spread (MAD)."""
    x = np.asarray(img, np.float64)
    r = ndimage.gaussian_filter(x, 1.0) - ndimage.gaussian_filter(x, 3.0)
    mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
    return (r - np.median(r)) / (mad if mad > 0 else 1.0)


def maxima(resp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every local maximum over a disc of 3 px (no greater value within 3 px; the frame's
    outermost pixels excluded, as ``engine.atoms.find_peaks`` does), found once for all
    thresholds -> (sub-pixel positions (N, 2), values). Not ``find_peaks`` itself: its
    suppression of near maxima is quadratic in their number, 54 s a frame at the lowest
    threshold here, and a disc-shaped maximum filter already keeps them 3 px apart."""
    yy, xx = np.mgrid[-3:4, -3:4]
    is_max = resp == ndimage.maximum_filter(resp, footprint=yy**2 + xx**2 <= 9, mode="nearest")
    is_max &= resp > THRESHOLDS[0]
    is_max[[0, -1], :] = False
    is_max[:, [0, -1]] = False
    return refine_peaks(resp, np.argwhere(is_max)), resp[is_max]


def detect(peaks: tuple[np.ndarray, np.ndarray], threshold: float) -> np.ndarray:
    pos, val = peaks
    return pos[val > threshold]


def counts(resps: list, frames: list, t: float, radius: float) -> tuple[int, int, int]:
    hits = n_pred = n_true = 0
    for resp, (_, _, atoms) in zip(resps, frames, strict=True):
        found = detect(resp, t)
        hits += match_points(found, atoms, radius)
        n_pred += len(found)
        n_true += len(atoms)
    return hits, n_pred, n_true


def best_threshold(resps: list, frames: list, radius: float) -> tuple[float, float]:
    """The threshold with the best F1 on these frames -> (threshold, F1)."""
    best = (float(THRESHOLDS[0]), -1.0)
    for t in THRESHOLDS:
        f1 = detection_scores(*counts(resps, frames, float(t), radius))["f1"]
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def distances(resps: list, frames: list, t: float, radius: float) -> list[float]:
    """Distance of each hit to its marked atom, over all frames."""
    return [
        d
        for resp, (_, _, atoms) in zip(resps, frames, strict=True)
        for d in matched_distances(detect(resp, t), atoms, radius)
    ]


def evaluate(
    name: str, f: Callable[[np.ndarray], np.ndarray], train: list, test: list, radius: float
) -> str:
    """The detector's smoothing and threshold chosen on train, scored on test -> a row."""
    outs = {k: [f(img) for _, img, _ in frames] for k, frames in (("train", train), ("test", test))}

    def peaks(out: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        return maxima(response(ndimage.gaussian_filter(out, sigma) if sigma else out))

    fits = {}
    for sigma in SMOOTHING:
        fits[sigma] = best_threshold([peaks(o, sigma) for o in outs["train"]], train, radius)
    sigma = max(fits, key=lambda k: fits[k][1])
    t, f1_train = fits[sigma]
    resps = [peaks(o, sigma) for o in outs["test"]]
    sc = detection_scores(*counts(resps, test, t, radius))
    d = distances(resps, test, t, radius)
    med = PM_PER_PX * float(np.median(d)) if d else float("nan")
    return (
        f"| {name} | {sigma:g} / {t:g} | {f1_train:.3f} | {sc['precision']:.3f} "
        f"| {sc['recall']:.3f} | **{sc['f1']:.3f}** | {med:.1f} |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, nargs="*", default=[])
    p.add_argument("--radius", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-bm3d", action="store_true")
    add_orientations(p, "each network")
    p.add_argument(
        "--adapt",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also stem-denoise adapted to the 21 frames (engine.adapt; the marks unseen), "
        "once per --own-share",
    )
    p.add_argument("--own-share", type=float, nargs="+", default=[AdaptConfig.own_share])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not ACSTEM.is_dir():
        print(f"no acstem set at {ACSTEM}")
        return 0
    train, test = load()

    def network(spec: str | Path, tta: int = 1) -> Callable[[np.ndarray], np.ndarray]:
        model = load_model(spec, "cpu")
        return lambda img: denoise(img, model, device="cpu", tile=512, overlap=32, tta=tta)

    print(
        f"acstem: {len(train)} train / {len(test)} test frames, "
        f"{sum(len(a) for *_, a in test)} marked atoms in the test frames, hit radius "
        f"{args.radius:g} px"
    )
    print(
        "\n| method | smoothing (px) / threshold (train) | F1 train | precision | recall | F1 test "
        "| hits' distance, median (pm) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        evaluate(
            "raw frame (a Gaussian: the detector's smoothing)", np.asarray, train, test, args.radius
        )
    )
    if not args.no_bm3d:
        print(evaluate("BM3D (estimated sigma)", bm3d_denoise, train, test, args.radius))
    _, meta = load_model("stem-denoise", "cpu")
    named: list[tuple[str, str | Path]] = [("stem-denoise (bundled)", "stem-denoise")]
    if meta.get(FINETUNE_START):
        named.append((f"{meta[FINETUNE_START]} (bundled)", meta[FINETUNE_START]))
    for folder in args.weights:
        path = folder / "stem-denoise.safetensors"
        if path.is_file():
            named.append((f"candidate {folder.name}", path))
    for label, spec in named:
        print(evaluate(label, network(spec), train, test, args.radius))
        for n in args.orientations:
            print(
                evaluate(f"{label}, {n} orientations", network(spec, n), train, test, args.radius)
            )
    frames = [img.astype(np.float32) for _, img, _ in train + test]
    for share in args.own_share if args.adapt > 0 else []:
        cfg = AdaptConfig(seconds=args.adapt, device="cpu", own_share=share)
        r = run_adapt(frames, "stem-denoise", cfg, pixel_size_nm=PM_PER_PX / 1000)
        print(f"  adapted, own share {share:g}: {r.message}", flush=True)
        label = f"stem-denoise, adapted {args.adapt:.0f} s, own share {share:g}"
        model = r.spec
        out = lambda img, m=model: denoise(img, m, device="cpu", tile=512, overlap=32)  # noqa: E731
        print(evaluate(label, out, train, test, args.radius), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
