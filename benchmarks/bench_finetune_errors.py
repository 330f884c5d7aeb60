"""Where the 1024² STEM fine-tuning speed run goes wrong, and what the image allows.

    python benchmarks/bench_finetune_errors.py            # ~1 min training + analysis
    python benchmarks/bench_finetune_errors.py --loop     # the correction loop, ~1 min

On the very image and strokes of ``bench_finetune.py speed`` (seed 100, dose 200, 4
strokes per class, ``stem-denoise`` init, 2 threads, 100 steps) this measures:

- the ceilings: the best single threshold on the noise-free, undistorted ``clean`` image
  against the scene mask (``semantic``), and on the recorded image (Gaussian-smoothed
  ``noisy``) against the scene mask and against the mask as the scan recorded it
  (``recorded_semantic``); the gap between the last two is scan geometry, not noise;
- the errors of the fine-tuned model against the recorded mask: predicted vs true
  particle fraction, false positives next to particles (boundaries) or far from them
  (spurious blobs), missed particles, and the Dice of thresholds on the particle
  probability other than argmax.

``--loop`` plays the ilastik loop instead: train 60 steps, then twice "paint where it is
wrong" (``--strokes`` short support strokes drawn inside the false-positive pixels, as a
user brushes over a particle drawn too wide) and continue 30 steps from the current
model; the clock runs from pressing Train the first time, painting takes no time here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from bench_finetune import data

from napari_temseg.engine.finetune import FinetuneConfig, Finetuner
from napari_temseg.engine.segment import segment
from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.synth import simulate


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def best_threshold(image: np.ndarray, truth: np.ndarray) -> float:
    levels = np.quantile(image, np.linspace(0.5, 0.999, 120))
    return max(dice(image > t, truth) for t in levels)


def ceilings(seed: int) -> tuple[float, float, float]:
    """(clean vs scene mask, smoothed noisy vs scene mask, smoothed noisy vs recorded mask)."""
    s = simulate("stem", 1024, pixel_size_nm=0.1, dose=200, seed=seed)
    smooth = ndimage.gaussian_filter(s.noisy.astype(np.float64), 1.5)
    return (
        best_threshold(s.clean, s.semantic == 2),
        best_threshold(smooth, s.semantic == 2),
        best_threshold(smooth, s.recorded_semantic == 2),
    )


def correction_loop(strokes: int) -> None:
    ((s, lab),) = data("stem", 1, 100, 1024, 200.0, 4)
    truth = s.recorded_semantic == 2
    t0 = time.perf_counter()

    def run(labels: np.ndarray, init, steps: int):
        cfg = FinetuneConfig(
            steps=steps,
            val_every=10,
            first_val=5,
            device="cpu",
            patience=0,
            batch_size=8,
            patch=128,
            seed=0,
        )
        tuner = Finetuner([s.noisy], [labels], init=init, config=cfg)
        for _ in tuner.run():
            pass
        model = (tuner.best_model(), tuner.segmenter_meta())
        return model, segment(s.noisy, model, device="cpu")

    model, seg = run(lab, "stem-denoise", 60)
    print(
        f"Train (60 steps): {time.perf_counter() - t0:.0f} s, particle Dice {dice(seg == 2, truth):.3f}"
    )
    for r in range(2):
        wrong = ((seg == 2) & ~truth).astype(np.uint8)
        marks = scribbles_from_mask(wrong, per_class=strokes, length=32, width=2, seed=10 + r)
        lab = np.where((lab == 0) & (marks == 1), 1, lab)
        model, seg = run(lab, model, 30)
        print(
            f"correction {r + 1} ({(marks == 1).sum()} px painted, +30 steps): "
            f"{time.perf_counter() - t0:.0f} s, particle Dice {dice(seg == 2, truth):.3f}"
        )


def main() -> int:
    torch.set_num_threads(2)
    if "--loop" in sys.argv:
        i = sys.argv.index("--strokes") + 1 if "--strokes" in sys.argv else None
        correction_loop(int(sys.argv[i]) if i else 15)
        return 0
    print("best single threshold (particle Dice):")
    print("  seed | clean vs scene mask | smoothed noisy vs scene mask | vs recorded mask")
    for seed in range(100, 108):
        c = ceilings(seed)
        tag = "  <- the speed run's image" if seed == 100 else ""
        print(f"  {seed} | {c[0]:.3f} | {c[1]:.3f} | {c[2]:.3f}{tag}")
    ((s, lab),) = data("stem", 1, 100, 1024, 200.0, 4)
    cfg = FinetuneConfig(
        steps=100, val_every=10, first_val=5, device="cpu", patience=0, batch_size=8, patch=128
    )
    t0 = time.perf_counter()
    tuner = Finetuner([s.noisy], [lab], init="stem-denoise", config=cfg)
    for _ in tuner.run():
        pass
    print(f"fine-tuned for 100 steps in {time.perf_counter() - t0:.0f} s")
    model = (tuner.best_model(), tuner.segmenter_meta())
    seg, prob = segment(s.noisy, model, device="cpu", probabilities=True)
    truth, pred = s.recorded_semantic == 2, seg == 2
    near = ndimage.binary_dilation(truth, iterations=3)
    fp, fn = pred & ~truth, truth & ~pred
    print(f"particle Dice (argmax) {dice(pred, truth):.3f}")
    print(f"particle fraction: predicted {pred.mean():.3f}, true {truth.mean():.3f}")
    print(
        f"false positives: {(fp & near).sum()} px within 3 px of a particle, "
        f"{(fp & ~near).sum()} px farther (spurious blobs); false negatives {fn.sum()} px"
    )
    print("particle Dice of a threshold on p(particle):")
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        print(f"  p > {t}: {dice(prob[1] > t, truth):.3f} (fraction {(prob[1] > t).mean():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
