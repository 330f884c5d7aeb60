"""Can a self-supervised risk pick the denoising setting for a frame? (Noise2Self, 3x3 blocks)

    python benchmarks/bench_risk_pair.py              # the real pair, then simulated frames

Noise2Self: if the output at a pixel does not depend on that pixel's own noise, the mean
squared difference between output and noisy input at the masked pixels is the error
against the clean image plus the noise variance, so it ranks methods without a clean image.
Each masked pixel's whole 3x3 block is replaced by the mean of the ring around it, because
a real detector's noise is correlated between neighbours (0.09 along the rows of the pair
below) and a single masked pixel lets it leak through. Masked pixels: a grid of stride 8,
four offsets.

On ``../shared/realdata/lowdose_pair`` the estimate is compared with the true score (the
error against the other, independent frame); on simulated HRTEM and STEM frames with the
error against the clean image. Measured 2026-12-04: on the pair it separates the good
settings (binned network, Gaussian 4-6: true excess 205-263 on frame a) from the poor ones
(unbinned network 487, Gaussian 2 698), on both frames, but not the near-ties among the
good ones; on simulated lattices it fails where it matters (it picks 4x4 binning for STEM
at 2 e/px, where binning doubles the error, and no binning for HRTEM at 0.05 nm/px and
2 e/px, 1.76 times the best error), so it is not used to choose the binning.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_denoise_pair import PAIR, load_pair
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.models import load_model
from napari_temseg.synth import simulate

GRID, OFFSETS = 8, ((0, 0), (4, 4), (0, 4), (4, 0))
RING = np.ones((5, 5))
RING[1:-1, 1:-1] = 0
RING /= RING.sum()


def block_noise2self(f, y: np.ndarray) -> float:
    """Mean squared (f(masked y) - y) over the masked pixels: risk + noise variance."""
    interp = ndimage.convolve(y, RING, mode="reflect")
    err, n = 0.0, 0
    for oy, ox in OFFSETS:
        mask = np.zeros(y.shape, bool)
        mask[oy::GRID, ox::GRID] = True
        block = ndimage.binary_dilation(mask, np.ones((3, 3), bool))
        fill = ndimage.maximum_filter(np.where(mask, interp, -np.inf), 3)
        out = f(np.where(block, fill, y))
        err += float(((out - y)[mask] ** 2).sum())
        n += int(mask.sum())
    return err / n


def methods(model) -> dict:
    def net(k):
        return lambda x: denoise(x.astype(np.float32), model, device="cpu", bin=k).astype(
            np.float64
        )

    out = {f"model, binning {k}": net(k) for k in (1, 2, 4)}
    for s in (1, 2, 3, 4, 6):
        out[f"gaussian {s}"] = lambda x, s=s: ndimage.gaussian_filter(x, s)
    return out


def ranks(values: dict) -> list[str]:
    return sorted(values, key=values.get)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if PAIR.is_dir():
        a, b, floor = load_pair()
        ms = methods(load_model("hrtem-denoise", "cpu"))
        for name, x, other in (("a", a, b), ("b", b, a)):
            true = {m: float(np.mean((f(x) - other) ** 2)) - floor for m, f in ms.items()}
            est = {m: block_noise2self(f, x) - floor for m, f in ms.items()}
            print(f"\nreal pair, frame {name}: | method | true excess | estimate |")
            for m in ranks(true):
                print(f"| {m} | {true[m]:.0f} | {est[m]:.0f} |")
            print(f"same order: {ranks(true) == ranks(est)}")
    else:
        print(f"no real pair at {PAIR}")
    print(
        "\nsimulated: | kind | nm/px | dose | true best binning | picked | picked's error / best |"
    )
    for kind, pixels in (("hrtem", (0.05, 0.02)), ("stem", (0.1, 0.04))):
        model = load_model(f"{kind}-denoise", "cpu")
        nets = {k: f for k, f in methods(model).items() if k.startswith("model")}
        for px in pixels:
            for dose in (2, 10, 100):
                s = simulate(kind, 384, pixel_size_nm=px, dose=dose, seed=950 + dose)
                y, clean = s.noisy.astype(np.float64), s.recorded_clean.astype(np.float64)
                true = {m: float(np.mean((f(y) - clean) ** 2)) for m, f in nets.items()}
                est = {m: block_noise2self(f, y) for m, f in nets.items()}
                best, pick = ranks(true)[0], ranks(est)[0]
                print(
                    f"| {kind} | {px} | {dose} | {best[-1]} | {pick[-1]} | "
                    f"{true[pick] / true[best]:.2f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
