"""A simulated twin of the real low-dose pair, with a truth: is a denoiser's gap there the
noise model or the prior?

    python benchmarks/bench_pair_twin.py                      # the bundled models
    python benchmarks/bench_pair_twin.py --weights DIR [DIR ...]

The scene is the mean of the pair's two frames smoothed by a Gaussian of 3 px (a smooth
field of particles, as the pair is), recorded again at the pair's dose: Poisson counts at
the pair's gain (about 110 ADU per electron, 1.7 e/px), then with read-out noise and the
clipping at 0 of its camera. The variance of these copies matches the real frames'
(23,349). Every method is scored by its mean squared error against the scene; a model that
trails the Gaussian here by as much as on the real pair trails it for its prior (what it
expects a scene to hold at this dose), not for a noise it never saw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from bench_denoise_pair import PAIR, load_pair
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.models import load_model

GAIN = 110.0  # ADU per electron, the pair's variance/mean slope
SIGMAS = (2.0, 3.0, 5.0, 7.0, 10.0)


def copies(scene: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(scene / GAIN, 0, None)) * GAIN
    out = {"counts only": counts}
    for read in (0.5, 1.0):  # read-out noise in electrons, then the camera's clip at 0
        out[f"read-out {read:g} e, clipped at 0"] = np.clip(
            counts + rng.normal(0, read * GAIN, counts.shape), 0, None
        )
    return {k: v.astype(np.float32) for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, nargs="*", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not PAIR.is_dir():
        print(f"no real pair at {PAIR}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    a, b, _ = load_pair()
    scene = ndimage.gaussian_filter((a + b) / 2, 3)
    models = {n: load_model(n, "cpu") for n in ("stem-denoise", "hrtem-denoise")}
    for w in args.weights:
        for kind in ("stem", "hrtem"):
            path = w / f"{kind}-denoise.safetensors"
            if path.exists():
                models[f"{kind}-denoise ({w})"] = load_model(str(path), "cpu")
    names = [f"Gaussian {s:g}" for s in SIGMAS] + list(models)
    print("mean squared error against the scene (the real pair's own floor: 23,349 noise)\n")
    print("| copy | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, x in copies(scene, args.seed).items():
        errs = [
            np.mean((ndimage.gaussian_filter(x.astype(np.float64), s) - scene) ** 2) for s in SIGMAS
        ]
        errs += [np.mean((denoise(x, m, device="cpu") - scene) ** 2) for m in models.values()]
        print(
            f"| {label} (variance {np.var(x - scene):.0f}) | "
            + " | ".join(f"{e:.0f}" for e in errs)
            + " |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
