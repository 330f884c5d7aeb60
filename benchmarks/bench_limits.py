"""What limits denoiser training on these CPUs: data, step time, architecture at equal time.

    python benchmarks/bench_limits.py --kind hrtem --minutes 8

Issue 13 asks, by measurement: is the simulator the bottleneck (it makes one 256² image in
about 0.03 s, a training step takes longer)? And does the residual dense network
(``models/rdn.py``, CGRDN-like) beat the U-Net at equal training time? Both networks are
trained from scratch on the same simulated data stream (full distortions, recorded
target, the ``--loss``, bf16 autocast where the CPU has it), one thread each, for
``--minutes``, validated on the same fixed set; the table gives the validation PSNR
(normalised units) over time and the examples per second. Markdown on stdout.

``--networks`` picks among wider and deeper variants (capacity at equal time), and
``--bank N`` trains on a fixed bank of N patches instead of fresh data: a network that
fits the bank far better than the validation set has capacity to spare, so its limit on
fresh data is training time, not size. (The first table in docs/benchmarks.md was
measured with L1, the default ``--loss``; its docstring once said L2.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_temseg.engine.data import simulated_source
from napari_temseg.engine.train import TrainConfig, evaluate, train
from napari_temseg.models import build_model
from napari_temseg.models.factory import count_parameters

NETWORKS = {
    "unet": ("U-Net (bundled architecture)", {"arch": "unet", "base": 16, "depth": 4}),
    "rdn": ("RDN (CGRDN-like, half-resolution core)", {"arch": "rdn"}),
    "unet-wide": ("U-Net, base 32", {"arch": "unet", "base": 32, "depth": 4}),
    "unet-deep": ("U-Net, depth 5", {"arch": "unet", "base": 16, "depth": 5}),
    "rdn-wide": ("RDN, 48 features, growth 24", {"arch": "rdn", "features": 48, "growth": 24}),
}


class BankSource:
    """A fixed bank of (noisy, clean) patches, drawn from at random: nothing new to learn."""

    def __init__(self, src, n: int, rng: np.random.Generator) -> None:
        self.src = src
        self.normalization = src.normalization
        self.x, self.y = src.sample(n, rng)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = rng.integers(len(self.x), size=n)
        return self.x[i], self.y[i]

    def describe(self) -> dict:
        return {**self.src.describe(), "bank": len(self.x)}


def throughput(kind: str, repeats: int = 20) -> dict[str, float]:
    """Seconds to simulate one 256² image and to cut a batch of 16 patches of 128²."""
    src = simulated_source(kind, size=256, patch=128, patches_per_image=4)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        src.make_pair(rng)
    sim = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        src.sample(16, rng)
    batch = (time.perf_counter() - t0) / repeats
    return {"simulate_256_s": sim, "batch_16_s": batch}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default="l1", choices=("l1", "l2"))
    p.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=["unet", "rdn"])
    p.add_argument("--bank", type=int, default=0, help="train on a fixed bank of N patches")
    a = p.parse_args()
    torch.set_num_threads(1)
    t = throughput(a.kind)
    print(
        f"data: one 256² {a.kind} image {t['simulate_256_s']:.3f} s; a batch of 16 patches "
        f"(4 images) {t['batch_16_s']:.3f} s, one thread\n"
    )
    val_src = simulated_source(a.kind, size=256, patch=128, patches_per_image=4)
    val = val_src.sample(128, np.random.default_rng([a.seed, 1]))
    bank_col = " bank PSNR (dB) |" if a.bank else ""
    print(
        "| network | parameters | steps | examples/s | data share of a step | "
        f"val PSNR (dB) over minutes |{bank_col}"
    )
    print("|---|---|---|---|---|---|" + ("---|" if a.bank else ""))
    for key in a.networks:
        name, config = NETWORKS[key]
        torch.manual_seed(a.seed)
        model = build_model(config)
        src = simulated_source(a.kind, size=256, patch=128, patches_per_image=4)
        if a.bank:
            src = BankSource(src, a.bank, np.random.default_rng([a.seed, 2]))
        cfg = TrainConfig(
            steps=10**6,
            batch_size=16,
            lr=5e-4,
            loss=a.loss,
            warmup=50,
            val_every=200,
            val_size=128,
            seed=a.seed,
            device="cpu",
            max_seconds=a.minutes * 60,
        )
        result = train(model, src, cfg, val=val)
        curve = ", ".join(
            f"{e.elapsed_s / 60:.1f}: {e.val_psnr:.2f}" for e in result.history if e.kind == "val"
        )
        per_step = a.minutes * 60 / max(result.steps_done, 1)
        bank = ""
        if a.bank:
            _, bank_psnr = evaluate(result.model, (src.x, src.y), a.loss, torch.device("cpu"))
            bank = f" {bank_psnr:.2f} |"
        print(
            f"| {name} | {count_parameters(model):,} | {result.steps_done} | "
            f"{result.steps_done * 16 / (a.minutes * 60):.1f} | "
            f"{t['batch_16_s'] / per_step:.0%} | {curve} |{bank}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
