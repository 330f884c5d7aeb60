"""Atoms on real HAADF-STEM frames that were not painted: fine-tuned U-Net vs forest vs threshold.

    python benchmarks/bench_acstem.py --painted 2 --atoms 10 --support 10 --steps 600

``../shared/realdata/acstem``: 21 real frames (Pt single atoms on N-doped carbon,
0.0293 nm/px) with every atom marked as a point; the paper's split gives 11 train and
10 test frames. As a user would: paint ``--atoms`` atoms (discs of radius 2 px, class 2)
and as many short support strokes away from any atom (class 1) on the first ``--painted``
train frames (about 1 % of their pixels), train, and apply to the 10 test frames. All
three methods get the same strokes, side by side in one run:

- the fine-tuned U-Net (``engine.finetune``, from ``--init``, default stem-denoise);
- an ilastik-style random forest on multi-scale features (``bench_finetune.forest_features``);
- a threshold on a Gaussian-smoothed frame, set half-way between the painted classes;
- the atom finder (``engine.atoms.fit_atom_finder``): band-pass peaks at the painted atoms'
  fitted width, thresholded between painted atoms and painted support; and the same finder
  with a lower bar (the painted support's bright tail) whose candidates are kept only where
  a segmentation (the U-Net's, or the forest's) says "atom"; a frame it marks as more
  than a fifth atom is searched by the finder alone, as the plugin does.

Atoms from a mask are the centroids of the atom class's connected components (at least
2 px), as the Measure dock's particle table would count them; atoms from a probability map
(U-Net, forest) are also found as its peaks (``engine.atoms.atoms_from_probability``,
smoothed at the finder's fitted atom width, threshold 0.5). A predicted centre within
``--radius`` px of a marked atom (one to one, nearest first) is a hit. Reports precision,
recall and F1 over all test frames, and the share of test frames whose prediction is
degenerate (more than 20 % atom, or no atom at all). With ``--tta`` the U-Net's rows are
also scored averaged over eight orientations (``engine.tta.with_tta``), same model.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from bench_finetune import add_segmenter_options, segmenter_options
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_temseg.engine.atoms import (
    atom_mask_of,
    atoms_from_probability,
    detection_scores,
    fit_atom_finder,
    match_points,
)
from napari_temseg.engine.finetune import FinetuneConfig, Finetuner
from napari_temseg.engine.prior import describe_balance, estimate_prior, stroke_prior
from napari_temseg.engine.segment import segment
from napari_temseg.engine.tta import with_tta
from napari_temseg.io import read_images
from napari_temseg.models.normalize import Normalization

ACSTEM = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "acstem"


def load() -> tuple[list, list]:
    """(train, test): lists of (name, image float32, atoms (N, 2) as row, col)."""
    sets: dict[str, list] = {"train": [], "test": []}
    with open(ACSTEM / "split.csv") as f:
        for row in csv.DictReader(f):
            img = read_images(ACSTEM / "images" / row["Filename"])[0].data.astype(np.float32)
            with open(ACSTEM / "atoms" / row["Coords"]) as g:
                pts = [(float(r["Y"]), float(r["X"])) for r in csv.DictReader(g)]
            sets[row["Split"].strip()].append((row["Filename"][:3], img, np.array(pts)))
    return sets["train"], sets["test"]


def strokes(
    shape, atoms: np.ndarray, n: int, n_support: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` painted atoms (discs r=2) and ``n_support`` support strokes (10 px) far from
    any atom."""
    lab = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[-2:3, -2:3]
    disc = yy**2 + xx**2 <= 4
    for r, c in atoms[rng.choice(len(atoms), min(n, len(atoms)), replace=False)]:
        r, c = round(float(r)), round(float(c))
        if 2 <= r < shape[0] - 2 and 2 <= c < shape[1] - 2:
            lab[r - 2 : r + 3, c - 2 : c + 3][disc] = 2
    tree = cKDTree(atoms)
    done = 0
    while done < n_support:
        r, c = int(rng.integers(5, shape[0] - 5)), int(rng.integers(5, shape[1] - 15))
        if tree.query([(r, c + k) for k in range(0, 10, 3)])[0].min() > 10:
            lab[r, c : c + 10] = 1
            done += 1
    return lab


def centres(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return np.zeros((0, 2))
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    keep = [i + 1 for i, s in enumerate(sizes) if s >= 2]
    return np.array(ndimage.center_of_mass(mask, lab, keep)).reshape(-1, 2)


def score(masks: list[np.ndarray], test: list, radius: float) -> dict:
    """Atoms as the centroids of a mask's connected components."""
    found = [centres(mask) for mask in masks]
    degenerate = sum(int(m.mean() > 0.2 or len(c) == 0) for m, c in zip(masks, found, strict=True))
    return score_points(found, test, radius, degenerate)


def score_points(found: list[np.ndarray], test: list, radius: float, degenerate=None) -> dict:
    hits = sum(match_points(c, atoms, radius) for c, (_, _, atoms) in zip(found, test, strict=True))
    n_pred, n_true = sum(len(c) for c in found), sum(len(a) for _, _, a in test)
    if degenerate is None:
        degenerate = sum(int(len(c) == 0) for c in found)
    return {
        **detection_scores(hits, n_pred, n_true),
        "predicted": n_pred,
        "true": n_true,
        "degenerate_frames": degenerate,
    }


def fit_forest(images: list[np.ndarray], labels: list[np.ndarray]):
    """An ilastik-style random forest on multi-scale features, trained on the painted
    pixels -> a function image -> the atom class's probability map."""
    from bench_finetune import fit_stroke_forest, forest_features

    rf = fit_stroke_forest(images, labels)

    def atom_probability(img: np.ndarray) -> np.ndarray:
        f = forest_features(img)
        return rf.predict_proba(f.reshape(-1, f.shape[-1]))[:, -1].reshape(img.shape)

    return atom_probability


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--painted", type=int, default=2)
    p.add_argument("--atoms", type=int, default=10)
    p.add_argument("--support", type=int, default=10, help="support strokes per frame")
    p.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    p.add_argument("--init", default="stem-denoise")
    p.add_argument("--radius", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    add_segmenter_options(p)
    args = p.parse_args()
    if not ACSTEM.is_dir():
        print(f"no acstem set at {ACSTEM}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    train, test = load()
    rng = np.random.default_rng(args.seed)
    painted = train[: args.painted]
    labels = [strokes(img.shape, atoms, args.atoms, args.support, rng) for _, img, atoms in painted]
    share = np.mean([(lab > 0).mean() for lab in labels])
    print(
        f"painted {len(painted)} frames ({', '.join(n for n, *_ in painted)}), "
        f"{share:.2%} of their pixels; {len(test)} test frames\n"
    )
    results = {}

    t0 = time.perf_counter()
    finder = fit_atom_finder([img for _, img, _ in painted], labels, atom_class=2)
    results[f"atom finder (sigma {finder.sigma:.2f} px, from strokes)"] = {
        **score_points([finder.find(img) for _, img, _ in test], test, args.radius),
        "seconds": time.perf_counter() - t0,
    }

    def peaks(probs: list[np.ndarray]) -> list[np.ndarray]:
        return [
            atoms_from_probability(p, finder.min_distance, threshold=0.5, smooth=finder.sigma)
            for p in probs
        ]

    t0 = time.perf_counter()
    cfg = FinetuneConfig(
        steps=args.steps,
        device="cpu",
        seed=args.seed,
        **segmenter_options(args),
    )
    tuner = Finetuner([img for _, img, _ in painted], labels, init=args.init, config=cfg)
    for _ in tuner.run():
        pass
    model = (tuner.best_model(), tuner.segmenter_meta())  # class-balanced, unless told not
    print(describe_balance(model[1].get("class_balance"), ["support", "atom"]) + "\n")
    seconds = time.perf_counter() - t0
    variants = [("", model)] + ([(", 8 orientations", with_tta(model))] if args.tta else [])
    for suffix, seg in variants:
        t0 = time.perf_counter()
        out = [segment(img, seg, device="cpu", probabilities=True) for _, img, _ in test]
        spent = seconds + time.perf_counter() - t0
        name = f"fine-tuned U-Net ({args.init}, {args.steps} steps{suffix})"
        results[f"{name}, mask components"] = {
            **score([lab == 2 for lab, _ in out], test, args.radius),
            "seconds": spent,
        }
        results[f"{name}, probability peaks"] = {
            **score_points(peaks([p[1] for _, p in out]), test, args.radius),
            "seconds": spent,
        }
        results[f"atom finder, confirmed by the {name}'s mask"] = {
            **score_points(
                [
                    finder.find(img, atom_mask=atom_mask_of(lab, 2)[0])
                    for (_, img, _), (lab, _) in zip(test, out, strict=True)
                ],
                test,
                args.radius,
            ),
            "seconds": spent,
        }

    t0 = time.perf_counter()
    forest = fit_forest([img for _, img, _ in painted], labels)
    probs = [forest(img) for _, img, _ in test]
    seconds = time.perf_counter() - t0
    # the same class-balance correction the fine-tuned U-Net gets (engine/prior.py): EM on
    # every pixel of the painted frames, from the forest's own (unweighted) stroke prior
    painted_probs = [np.stack([1 - p1, p1]) for p1 in (forest(img) for _, img, _ in painted)]
    counts = [sum(int((lab == c).sum()) for lab in labels) for c in (1, 2)]
    trained = stroke_prior(counts, [1.0, 1.0])
    ratio = estimate_prior(painted_probs, trained)[0] / trained
    balanced = [p * ratio[1] / (p * ratio[1] + (1 - p) * ratio[0]) for p in probs]
    results["random forest (same strokes), mask components"] = {
        **score([p > 0.5 for p in probs], test, args.radius),
        "seconds": seconds,
    }
    for label, name, maps in (
        ("random forest (same strokes)", "forest", probs),
        ("random forest, class-balanced like the U-Net", "class-balanced forest", balanced),
    ):
        results[f"{label}, probability peaks"] = {
            **score_points(peaks(maps), test, args.radius),
            "seconds": seconds,
        }
        results[f"atom finder, confirmed by the {name}'s mask"] = {
            **score_points(
                [
                    finder.find(img, atom_mask=atom_mask_of(np.where(p > 0.5, 2, 1), 2)[0])
                    for (_, img, _), p in zip(test, maps, strict=True)
                ],
                test,
                args.radius,
            ),
            "seconds": seconds,
        }

    norm = Normalization()

    def smooth(img):
        return ndimage.gaussian_filter(norm.apply(img, norm.stats(img)), 1.5)

    sm = [smooth(img) for _, img, _ in painted]
    atom_level = np.mean(np.concatenate([s[lab == 2] for s, lab in zip(sm, labels, strict=True)]))
    supp_level = np.mean(np.concatenate([s[lab == 1] for s, lab in zip(sm, labels, strict=True)]))
    thr = (atom_level + supp_level) / 2
    masks = [smooth(img) > thr for _, img, _ in test]
    results["threshold (smoothed, from strokes)"] = score(masks, test, args.radius)

    print(
        "| method | precision | recall | F1 | atoms found / marked | degenerate frames |"
        "\n|---|---|---|---|---|---|"
    )
    for name, r in results.items():
        print(
            f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
            f"{r['predicted']} / {r['true']} | {r['degenerate_frames']} of {len(test)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
