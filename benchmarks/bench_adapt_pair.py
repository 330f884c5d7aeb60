"""Experiment: adapt a bundled denoiser to one real frame, self-supervised, before building it.

    python benchmarks/bench_adapt_pair.py --recipe n2v --seconds 60 --lr 1e-4
    python benchmarks/bench_adapt_pair.py --recipe ne2ne --seconds 60 --lr 1e-4 --gamma 1
    python benchmarks/bench_adapt_pair.py --recipe thin --seconds 60 --lr 3e-4
    python benchmarks/bench_adapt_pair.py --recipe noisier --seconds 60 --lr 3e-4

Issue 13's "Adapt to these images" asked for a self-supervised refinement; this measured
whether one would help first. None did, so the built adaptation (``engine/adapt.py``,
``benchmarks/bench_adapt.py``) fine-tunes on simulated images matched to the frames' noise
instead. The model is fine-tuned on the frame it then denoises (frame ``a`` of
``../shared/realdata/lowdose_pair`` for the score a -> b, frame ``b`` for b -> a) and scored
like ``bench_denoise_pair.py``: the error against the other, independent frame above the
noise floor. Recipes:

- ``n2s-blocks`` / ``n2s-rows``: Noise2Self with 3x3 blocks / whole rows hidden (this
  detector's noise is correlated along rows: each row has its own offset);
- ``n2v``: Noise2Void blind spot: a share of the pixels (``--mask``) is replaced by a random
  neighbour's value, the loss is the squared error there against their own noisy values;
- ``ne2ne``: Neighbor2Neighbor: two half-resolution sub-images from random neighbours in
  each 2x2 cell, one predicts the other, plus its consistency regulariser (``--gamma``);
- ``thin``: binomial thinning of the frame's electron counts (gain and offset fitted by
  ``engine.pretrain.estimate_gain``) into two halves, one predicts the other (Noise2Noise
  from one frame, exact for Poisson counts);
- ``noisier``: the Pretrain dock's data (Poisson copies at 5-50 % of the estimated dose,
  the frame itself as target; ``engine.pretrain.own_image_sources``).

Measured 2026-12-04 (hrtem-denoise, 60 s per frame on one thread while a training shared
the machine; before: 487 / 623): n2v 741 / 876 (an earlier run adapting on ``a`` only),
ne2ne 666 / 786 (lr 1e-4, gamma 1) and 937 / 1077 (lr 3e-5, gamma 2), thin 2536 / 2686,
noisier 3182 / 4772. Worse every time (docs/benchmarks.md says why). 2026-12-05 (one
thread, idle machine; before 404 / 522): n2s-blocks 455 / 589 after 60 s and 606 / 908
after 240 s, n2s-rows 627 / 714 (60 s) and 704 / 793 (180 s), lr 1e-4: worse, and worse
the longer they run.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from bench_denoise_pair import PAIR, load_pair

from napari_temseg.engine import Normalization, denoise
from napari_temseg.engine.data import PairSource
from napari_temseg.engine.pretrain import estimate_gain, own_image_sources
from napari_temseg.engine.train import TrainConfig, train
from napari_temseg.models import load_model

#: Neighbor2Neighbor's neighbour pairs inside a 2x2 cell (indices 0..3, row-major)
PAIRS = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [1, 0], [2, 0], [3, 1], [3, 2]])


def patches(z: np.ndarray, rng, n: int, size: int) -> np.ndarray:
    out = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        y0, x0 = rng.integers(0, z.shape[0] - size + 1), rng.integers(0, z.shape[1] - size + 1)
        out[i, 0] = np.rot90(z[y0 : y0 + size, x0 : x0 + size], rng.integers(4))
    return out


def n2v_loss(model, z, rng, share: float) -> torch.Tensor:
    p = patches(z, rng, 8, 96)
    inp, mask = p.copy(), np.zeros_like(p)
    k = max(1, int(share * 96 * 96))
    for i in range(len(p)):
        yy, xx = rng.integers(0, 96, k), rng.integers(0, 96, k)
        dy, dx = rng.integers(-2, 3, k), rng.integers(-2, 3, k)
        dy[(dy == 0) & (dx == 0)] = 1
        inp[i, 0, yy, xx] = p[i, 0, np.clip(yy + dy, 0, 95), np.clip(xx + dx, 0, 95)]
        mask[i, 0, yy, xx] = 1
    x, y, m = map(torch.from_numpy, (inp, p, mask))
    return (((model(x) - y) ** 2) * m).sum() / m.sum()


RING = np.ones((5, 5), np.float32)
RING[1:-1, 1:-1] = 0
RING /= RING.sum()


def n2s_loss(model, z, interp, rng, rows: bool, stride: int = 6) -> torch.Tensor:
    """Noise2Self with structured blind spots: 3x3 blocks filled with the mean of the ring
    around them, or (``rows``) every ``stride``-th row filled with the mean of the rows
    2 and 3 above and below (this detector's rows carry their own offsets)."""
    from scipy import ndimage

    size, n = 96, 8
    inp, tgt, m = (np.empty((n, 1, size, size), np.float32) for _ in range(3))
    for i in range(n):
        y0, x0 = rng.integers(0, z.shape[0] - size + 1), rng.integers(0, z.shape[1] - size + 1)
        k = rng.integers(4)
        y = np.rot90(z[y0 : y0 + size, x0 : x0 + size], k)
        if rows:
            mask = np.zeros((size, size), bool)
            mask[rng.integers(0, stride) :: stride] = True
            fill = sum(np.roll(y, d, 0) for d in (2, 3, -2, -3)) / 4
        else:
            it = np.rot90(interp[y0 : y0 + size, x0 : x0 + size], k)
            mask = np.zeros((size, size), bool)
            oy, ox = rng.integers(0, stride, 2)
            mask[oy::stride, ox::stride] = True
            fill = ndimage.maximum_filter(np.where(mask, it, -np.inf), 3)
            block = ndimage.binary_dilation(mask, np.ones((3, 3), bool))
        inp[i, 0] = np.where(mask if rows else block, fill, y)
        tgt[i, 0], m[i, 0] = y, mask
    x, y, mm = map(torch.from_numpy, (inp, tgt, m))
    return (((model(x) - y) ** 2) * mm).sum() / mm.sum()


def _cells(x: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor):
    n, _, h, w = x.shape
    c = (
        x.reshape(n, 1, h // 2, 2, w // 2, 2)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, 1, h // 2, w // 2, 4)
    )
    return torch.gather(c, 4, i1[..., None])[..., 0], torch.gather(c, 4, i2[..., None])[..., 0]


def ne2ne_loss(model, z, rng, gamma: float) -> torch.Tensor:
    x = torch.from_numpy(patches(z, rng, 8, 128))
    k = PAIRS[torch.from_numpy(rng.integers(0, 8, (8, 1, 64, 64)))]
    g1, g2 = _cells(x, k[..., 0], k[..., 1])
    with torch.no_grad():
        model.eval()
        f1, f2 = _cells(model(x), k[..., 0], k[..., 1])
        model.train()
    out = model(g1)
    return ((out - g2) ** 2).mean() + gamma * ((out - g2 - (f1 - f2)) ** 2).mean()


class Thinned:
    """``make_pair`` for PairSource: two binomial halves of the frame's electron counts."""

    def __init__(self, frame: np.ndarray) -> None:
        self.frame, self.est = frame, estimate_gain(frame)

    def __call__(self, rng):
        e = np.rint(self.est.electrons(self.frame)).astype(np.int64)
        half = rng.binomial(e, 0.5)
        g, o = self.est.gain, self.est.offset
        return (2 * half * g + o).astype(np.float32), (2 * (e - half) * g + o).astype(np.float32)


def adapt(args, frame: np.ndarray):
    model, meta = load_model(args.model, "cpu")
    model = copy.deepcopy(model)
    norm = Normalization.from_dict(meta.get("normalization"))
    if args.recipe in ("thin", "noisier"):
        if args.recipe == "thin":
            src = PairSource(Thinned(frame), 96, norm, 8, 0.0, True, {})
            val_src = src
        else:
            src, val_src = own_image_sources([frame], 96, normalization=norm)
        cfg = TrainConfig(
            steps=10**6,
            max_seconds=args.seconds,
            batch_size=8,
            lr=args.lr,
            warmup=10,
            val_every=50,
            val_size=16,
            device="cpu",
            amp=False,
        )
        result = train(model, src, cfg, val=val_src.sample(16, np.random.default_rng(1)))
        return (result.model, meta), result.steps_done
    z = norm.apply(frame.astype(np.float32), norm.stats(frame)).astype(np.float32)
    from scipy import ndimage

    interp = ndimage.convolve(z, RING, mode="reflect").astype(np.float32)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - t0 < args.seconds:
        if args.recipe == "n2v":
            loss = n2v_loss(model, z, rng, args.mask)
        elif args.recipe in ("n2s-blocks", "n2s-rows"):
            loss = n2s_loss(model, z, interp, rng, args.recipe == "n2s-rows")
        else:
            loss = ne2ne_loss(model, z, rng, args.gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    return (model, meta), steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hrtem-denoise")
    p.add_argument(
        "--recipe",
        choices=("n2v", "n2s-blocks", "n2s-rows", "ne2ne", "thin", "noisier"),
        default="ne2ne",
    )
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mask", type=float, default=0.02, help="n2v: share of pixels hidden")
    p.add_argument("--gamma", type=float, default=1.0, help="ne2ne: regulariser weight")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not PAIR.is_dir():
        print(f"no real pair at {PAIR}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    a, b, floor = load_pair()
    before = load_model(args.model, "cpu")
    scores = {"before": [], "after": []}
    for x, other in ((a, b), (b, a)):
        x32 = x.astype(np.float32)
        scores["before"].append(np.mean((denoise(x32, before, device="cpu") - other) ** 2) - floor)
        adapted, steps = adapt(args, x)
        scores["after"].append(np.mean((denoise(x32, adapted, device="cpu") - other) ** 2) - floor)
        print(f"adapted on one frame: {steps} steps")
    for k, (ab, ba) in scores.items():
        print(f"{k}: excess a->b {ab:.0f}, b->a {ba:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
