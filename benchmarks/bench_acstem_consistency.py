"""Does learning from the unpainted pixels help the U-Net find atoms? (acstem, one run)

    python benchmarks/bench_acstem_consistency.py --steps 600 --seeds 0 1

Same strokes as ``bench_acstem.py`` (2 painted train frames, 10 atoms and 10 support strokes
each, stroke seed = ``--seed``), three methods side by side:

- the fine-tuned U-Net as the plugin trains it (``engine.finetune``, from stem-denoise);
- the same, plus a FixMatch-style consistency term on patches with no strokes: each step
  the network labels ``--unpainted-batch`` random patches of the painted frames and of the
  frames it will be applied to (the 10 test frames: a series' other frames are there when
  a user paints a few; ``--painted-only``: the painted frames alone) with its own
  confident predictions (softmax above ``--confidence``) and learns them again from a
  noisier, re-scaled copy (weight ``--weight``);
- a random forest on multi-scale features (``bench_finetune.forest_features``), same strokes.

Atoms are the peaks of each atom-probability map (``engine.atoms.atoms_from_probability``,
smoothed at the atom finder's fitted width, thresholds 0.5 and 0.7) and the atom finder's
candidates confirmed by each mask (``AtomFinder.find(atom_mask=...)``), scored as in
``bench_acstem.py`` (one-to-one within ``--radius`` px). The consistency term is an
experiment (``docs/benchmarks.md``), not an option of the plugin: it replaces the trainer's
step here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_acstem import ACSTEM, fit_forest, load, score_points, strokes

from napari_temseg.engine import finetune as ft
from napari_temseg.engine.atoms import atom_mask_of, atoms_from_probability, fit_atom_finder
from napari_temseg.engine.finetune import FinetuneConfig, Finetuner, stroke_loss
from napari_temseg.engine.segment import segment
from napari_temseg.engine.train import guarded_step


class Unpainted:
    """Random patches of normalised frames: a weak view (flip, gain) and a strong one
    (another gain and offset, and Gaussian noise up to ``noise`` in normalised units)."""

    def __init__(self, frames: list[np.ndarray], patch: int, noise: float, seed: int) -> None:
        self.frames, self.patch, self.noise = frames, patch, noise
        self.rng = np.random.default_rng([seed, 123])

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        p, rng = self.patch, self.rng
        weak = np.empty((n, 1, p, p), np.float32)
        strong = np.empty_like(weak)
        for i in range(n):
            im = self.frames[int(rng.integers(len(self.frames)))]
            y, x = int(rng.integers(im.shape[0] - p + 1)), int(rng.integers(im.shape[1] - p + 1))
            a = im[y : y + p, x : x + p]
            a = a[::-1] if rng.random() < 0.5 else a
            a = a.T if rng.random() < 0.5 else a
            a = a * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
            weak[i, 0] = a
            noise = rng.normal(0, rng.uniform(0.03, self.noise), a.shape)
            strong[i, 0] = a * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1) + noise
        return torch.from_numpy(weak), torch.from_numpy(strong)


def consistency_step(unpainted: Unpainted, n: int, weight: float, confidence: float):
    """A ``_StrokeTraining.train_step`` with the consistency term added."""

    def step(self, step: int) -> ft.StepResult:
        cfg, t = self.cfg, self.tuner
        x_np, y_np = t.source.sample(cfg.batch_size, self.rng)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        weak, strong = unpainted.sample(n)
        self.model.eval()
        with torch.no_grad():
            conf, pseudo = self.model(weak).float().softmax(1).max(1)
        keep = (conf > confidence).float()
        self.model.train()
        logits = self.model(torch.cat([x, strong]))
        loss = stroke_loss(logits[: len(x)], y, self.weights, cfg.dice_weight)
        ce = F.cross_entropy(
            logits[len(x) :].float(), pseudo, weight=self.weights, reduction="none"
        )
        loss = loss + weight * (ce * keep).sum() / keep.numel()
        ok = guarded_step(loss, self.model, self.opt, cfg.grad_clip)
        t.steps_done += 1
        return ft.StepResult(True, float(loss.detach())) if ok else ft.StepResult(False)

    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--unpainted-batch", type=int, default=8)
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument(
        "--painted-only",
        action="store_true",
        help="draw the unpainted patches from the painted frames only",
    )
    p.add_argument("--radius", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if not ACSTEM.is_dir():
        print(f"no acstem set at {ACSTEM}: nothing to measure")
        return 0
    torch.set_num_threads(a.threads)
    train, test = load()
    print(
        "| strokes seed | method | F1 (peaks 0.5) | F1 (peaks 0.7) | F1 (finder confirmed) "
        "| atoms at 0.5 (of 607) | best step | seconds |\n|---|---|---|---|---|---|---|---|"
    )
    plain_step = ft._StrokeTraining.train_step
    for seed in a.seeds:
        rng = np.random.default_rng(seed)
        painted = train[:2]
        labels = [strokes(img.shape, pts, 10, 10, rng) for _, img, pts in painted]
        finder = fit_atom_finder([img for _, img, _ in painted], labels, atom_class=2)

        def row(name, probs, masks, best="-", seconds=0.0, seed=seed, finder=finder):
            cells, n05 = [], 0
            for thr in (0.5, 0.7):
                found = [
                    atoms_from_probability(
                        q, finder.min_distance, threshold=thr, smooth=finder.sigma
                    )
                    for q in probs
                ]
                r = score_points(found, test, a.radius)
                cells.append(f"{r['f1']:.3f}")
                n05 = n05 or r["predicted"]
            confirmed = [
                finder.find(img, atom_mask=m) for (_, img, _), m in zip(test, masks, strict=True)
            ]
            cells.append(f"{score_points(confirmed, test, a.radius)['f1']:.3f}")
            print(
                f"| {seed} | {name} | "
                + " | ".join(cells)
                + f" | {n05} | {best} | {seconds:.0f} |",
                flush=True,
            )

        for name, unl in (("fine-tuned U-Net", False), ("+ consistency on unpainted", True)):
            t0 = time.perf_counter()
            cfg = FinetuneConfig(steps=a.steps, device="cpu", seed=seed)
            tuner = Finetuner(
                [img for _, img, _ in painted], labels, init="stem-denoise", config=cfg
            )
            if unl:
                norm = tuner.normalization
                frames = [f.image for f in tuner.source.frames] + [
                    np.nan_to_num(norm.apply(img, norm.stats(img))).astype(np.float32)
                    for _, img, _ in ([] if a.painted_only else test)
                ]
                pool = Unpainted(frames, cfg.patch, a.noise, seed)
                step = consistency_step(pool, a.unpainted_batch, a.weight, a.confidence)
                ft._StrokeTraining.train_step = step
            try:
                for _ in tuner.run():
                    pass
            finally:
                ft._StrokeTraining.train_step = plain_step
            model = (tuner.best_model(), tuner.segmenter_meta())
            out = [segment(img, model, device="cpu", probabilities=True) for _, img, _ in test]
            row(
                name,
                [q[1] for _, q in out],
                [atom_mask_of(lab, 2)[0] for lab, _ in out],
                tuner.best_step,
                time.perf_counter() - t0,
            )

        t0 = time.perf_counter()
        forest = fit_forest([img for _, img, _ in painted], labels)
        probs = [forest(img) for _, img, _ in test]
        masks = [atom_mask_of(np.where(q > 0.5, 2, 1), 2)[0] for q in probs]
        row("random forest", probs, masks, "-", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
