"""Experiment: adapt a bundled denoiser to one real frame with a blind-spot loss (Noise2Void).

    python benchmarks/bench_adapt_pair.py --model hrtem-denoise --seconds 60 --lr 1e-4

Issue 13's "Adapt to these images" is not built yet; this measures whether the simplest
recipe would help before it is. The model is fine-tuned on frame ``a`` of
``../shared/realdata/lowdose_pair``: in each 96² patch a share of the pixels (``--mask``)
is replaced by a random neighbour's value and the loss is the squared error at those
pixels only, against their own noisy values (the network cannot copy a pixel it does not
see, so it learns the signal). Scored like ``bench_denoise_pair.py`` (excess MSE against
the other, independent frame, both directions), before and after.

Measured 2026-12-04 (2 CPU threads), hrtem-denoise, mask 0.02: before 610 / 731; 60 s at
lr 1e-4 (995 steps, idle machine): 741 / 876. An earlier draft of this loop (flips
instead of rotations, shared machine) gave 758 / 903 after 60 s at lr 1e-4 and 727 / 886
after 90 s at lr 1e-3. Worse every time: a blind-spot loss started from supervised weights
first unlearns them, and a minute of CPU steps does not recover.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from bench_denoise_pair import PAIR, excess, load_pair

from napari_temseg.engine import Normalization, denoise
from napari_temseg.models import load_model


def blind_spot_batch(z: np.ndarray, rng, batch: int, patch: int, share: float):
    """(input, target, mask) of ``batch`` patches with ``share`` of pixels hidden."""
    xs = np.empty((batch, 1, patch, patch), np.float32)
    ys, ms = np.empty_like(xs), np.zeros_like(xs)
    n = max(1, int(share * patch * patch))
    for i in range(batch):
        y0 = rng.integers(0, z.shape[0] - patch + 1)
        x0 = rng.integers(0, z.shape[1] - patch + 1)
        p = np.ascontiguousarray(np.rot90(z[y0 : y0 + patch, x0 : x0 + patch], rng.integers(4)))
        yy, xx = rng.integers(0, patch, n), rng.integers(0, patch, n)
        dy, dx = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
        dy[(dy == 0) & (dx == 0)] = 1
        inp = p.copy()
        inp[yy, xx] = p[np.clip(yy + dy, 0, patch - 1), np.clip(xx + dx, 0, patch - 1)]
        xs[i, 0], ys[i, 0], ms[i, 0, yy, xx] = inp, p, 1
    return map(torch.from_numpy, (xs, ys, ms))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hrtem-denoise")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mask", type=float, default=0.02)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not PAIR.is_dir():
        print(f"no real pair at {PAIR}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    a, b, floor = load_pair()
    model, meta = load_model(args.model, "cpu")
    model = copy.deepcopy(model)
    norm = Normalization.from_dict(meta.get("normalization"))
    z = norm.apply(a.astype(np.float32), norm.stats(a)).astype(np.float32)

    def score() -> tuple[float, float]:
        return excess(
            lambda x: denoise(x.astype(np.float32), (model, meta), device="cpu"), a, b, floor
        )

    ab, ba = score()
    print(f"before: excess a->b {ab:.0f}, b->a {ba:.0f}")
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - t0 < args.seconds:
        x, y, m = blind_spot_batch(z, rng, 8, 96, args.mask)
        loss = (((model(x) - y) ** 2) * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    ab, ba = score()
    print(f"after {steps} steps: excess a->b {ab:.0f}, b->a {ba:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
