"""Which weights of one fine-tuning run segment the unpainted frames best?

    python benchmarks/bench_kept_weights.py --set acstem --seed 7
    python benchmarks/bench_kept_weights.py --set hrtem --seed 2

Held-out strokes of the painted frames are what fine-tuning validates on, and they can
judge the frames the model is applied to poorly. This trains once (the defaults, 600
steps, early stopping and averaging off so that every validation is of its own step's
weights), keeps the weights of each validation, and scores on the unpainted frames, from
that one run:

- ``best validated``: the snapshot keep-best picks (best mean per-class Dice on the held-out
  strokes, ties to the lower loss), with the early stop (``patience``) simulated: the rule
  of ``FinetuneConfig(average_late=0)``;
- ``mean of the late half``: the mean of the weights validated from half-way on (the
  default, ``average_late=0.5``); ``mean of the last quarter``; ``final`` weights.

Each gets the painted frames' class balance as the plugin estimates it. ``--set acstem``:
the real HAADF atoms (``bench_acstem.py``'s strokes for ``--seed``), F1 of the model's
probability peaks and of the atom finder confirmed by its mask, on the 10 test frames and
the 9 unpainted train frames. ``--set stem|hrtem``: the simulated sessions of
``bench_unseen_frames.py`` (4 frames each, HRTEM with contrast inversion 0.25), particle Dice
and degenerate frames. The forest on the same strokes is in those two benchmarks.
``--every N`` also scores the snapshot of every N-th step (its held-out Dice and loss
beside).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from napari_temseg.engine.finetune import FinetuneConfig, Finetuner, dice_per_class
from napari_temseg.engine.loop import Best, Validation
from napari_temseg.engine.segment import segment


def snapshots(tuner: Finetuner) -> list[tuple[int, float, float, dict]]:
    """Train to the end; (step, held-out Dice, loss, weights) of every validation. The
    tuner must not average (``average_late=0``): each validation is then of its own step's
    weights, as the rules below need."""
    out = []
    for ev in tuner.run():
        if ev.kind == "val":
            known = [d for d in (ev.val_dice or []) if d is not None]
            state = copy.deepcopy(tuner.model.state_dict())
            out.append((ev.step, float(np.mean(known)), float(ev.val_loss), state))
    return out


def best_validated(snaps: list, patience: int) -> tuple:
    """The snapshot keep-best ends with (``engine.loop.Best``), early stop included."""
    best, kept, since = Best(), None, 0
    for s in snaps:
        if best.beaten_by(Validation(loss=s[2], score=s[1])):
            best.score, best.loss, kept, since = s[1], s[2], s, 0
        else:
            since += 1
            if patience and since >= patience:
                break
    return kept


def mean_of(snaps: list) -> dict:
    avg = copy.deepcopy(snaps[0][3])
    for k, t in avg.items():
        if t.is_floating_point():
            avg[k] = sum(s[3][k] for s in snaps) / len(snaps)
    return avg


def kept(tuner: Finetuner, state: dict, step: int) -> tuple:
    """The segmenter the plugin would return with these weights (class balance included)."""
    tuner.best.state, tuner.best.step = state, step
    tuner.estimate_class_balance()
    return tuner.best_model(), tuner.segmenter_meta()


def acstem(seed: int, steps: int) -> tuple[Finetuner, Callable]:
    from bench_acstem import load, score_points, strokes

    from napari_temseg.engine.atoms import atom_mask_of, atoms_from_probability, fit_atom_finder

    train, test = load()
    rng = np.random.default_rng(seed)
    painted = train[:2]
    labels = [strokes(img.shape, atoms, 10, 10, rng) for _, img, atoms in painted]
    finder = fit_atom_finder([img for _, img, _ in painted], labels, atom_class=2)
    cfg = FinetuneConfig(steps=steps, device="cpu", seed=seed, patience=0, average_late=0)
    tuner = Finetuner([img for _, img, _ in painted], labels, init="stem-denoise", config=cfg)

    def score(seg) -> str:
        said = []
        for name, frames in (("test", test), ("unpainted train", train[2:])):
            out = [segment(img, seg, device="cpu", probabilities=True) for _, img, _ in frames]
            peaks = [
                atoms_from_probability(p[1], finder.min_distance, 0.5, smooth=finder.sigma)
                for _, p in out
            ]
            confirmed = [
                finder.find(img, atom_mask=atom_mask_of(lab, 2)[0])
                for (_, img, _), (lab, _) in zip(frames, out, strict=True)
            ]
            f1 = [score_points(x, frames, 3.0)["f1"] for x in (peaks, confirmed)]
            said.append(f"{name} {f1[0]:.3f} / {f1[1]:.3f}")
        return "; ".join(said)

    return tuner, score


def simulated(kind: str, seed: int, steps: int) -> tuple[Finetuner, Callable]:
    from bench_unseen_frames import PIXEL, SESSIONS, session

    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate

    px = PIXEL[kind]
    painted = [simulate(kind, 256, pixel_size_nm=px, dose=100.0, seed=100 + i) for i in range(2)]
    labels = [
        scribbles_from_mask(s.recorded_semantic, per_class=4, length=32, width=2, seed=i)
        for i, s in enumerate(painted)
    ]
    invert = 0.25 if kind == "hrtem" else 0.0
    cfg = FinetuneConfig(
        steps=steps, device="cpu", seed=seed, patience=0, average_late=0, invert_contrast=invert
    )
    imgs = [s.noisy.astype(np.float32) for s in painted]
    tuner = Finetuner(imgs, labels, init=f"{kind}-denoise", config=cfg, pixel_sizes=[px] * 2)
    frames = [session(n, kind, 256, 100.0, 900 + j) for n in SESSIONS for j in range(4)]

    def score(seg) -> str:
        dice, degenerate = [], 0
        for img, truth, size in frames:
            pred = segment(img, seg, device="cpu", pixel_size_nm=size)
            dice.append(dice_per_class(pred, truth, 2)[1] or 0.0)
            degenerate += int(max((pred == 1).mean(), (pred == 2).mean()) > 0.97)
        return f"Dice {np.mean(dice):.3f}, degenerate {degenerate} of {len(frames)}"

    return tuner, score


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=("acstem", "stem", "hrtem"), default="acstem")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--every", type=int, default=0, help="also score the snapshots every N steps (0: no)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.set == "acstem":
        from bench_acstem import ACSTEM

        if not ACSTEM.is_dir():
            print(f"no acstem set at {ACSTEM}: nothing to measure")
            return 0
        tuner, score = acstem(a.seed, a.steps)
    else:
        tuner, score = simulated(a.set, a.seed, a.steps)
    t0 = time.perf_counter()
    snaps = snapshots(tuner)
    print(f"{a.set}, seed {a.seed}: {len(snaps)} validations in {time.perf_counter() - t0:.0f} s\n")
    patience = FinetuneConfig.patience
    pick = best_validated(snaps, patience)
    half = [s for s in snaps if s[0] >= a.steps // 2]
    quarter = [s for s in snaps if s[0] >= 3 * a.steps // 4]
    rules = {
        f"best validated (step {pick[0]}, early stop after {patience})": (pick[3], pick[0]),
        f"mean of the late half (steps {half[0][0]}-{half[-1][0]})": (mean_of(half), a.steps),
        f"mean of the last quarter (steps {quarter[0][0]}-{quarter[-1][0]})": (
            mean_of(quarter),
            a.steps,
        ),
        f"final (step {snaps[-1][0]})": (snaps[-1][3], snaps[-1][0]),
    }
    if a.every:
        print("| step | held-out strokes: Dice / loss | unpainted frames |\n|---|---|---|")
        for step, dice, loss, state in snaps:
            if step and step % a.every == 0:
                print(f"| {step} | {dice:.3f} / {loss:.3g} | {score(kept(tuner, state, step))} |")
        print()
    what = "F1, peaks / finder confirmed" if a.set == "acstem" else "particle Dice"
    print(f"| weights kept | {what} | class balance |\n|---|---|---|")
    for name, (state, step) in rules.items():
        seg = kept(tuner, state, step)
        balance = seg[1].get("class_balance") or {}
        print(
            f"| {name} | {score(seg)} | {'kept' if balance.get('in_head_bias') else 'not kept'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
