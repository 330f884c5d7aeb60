"""Denoisers on a real pair of independent low-dose TEM frames of one field (Noise2Noise score).

    python benchmarks/bench_denoise_pair.py                       # bundled models
    python benchmarks/bench_denoise_pair.py --weights DIR [DIR ...]  # also these candidates
    python benchmarks/bench_denoise_pair.py --bins 1 2 4             # models binned (default)
    python benchmarks/bench_denoise_pair.py --orientations 2 8       # and averaged over 2, 8

``../shared/realdata/lowdose_pair`` holds two registered frames ``a`` and ``b`` of the same
field. The second is an independent noisy copy of the same signal, so for any denoiser f,
mean((f(a) - b)^2) = mean((f(a) - clean)^2) + the noise variance of b: the lower the
error against the other frame, the closer to the clean image. Reported for both
directions (a -> b, b -> a), side by side in one run: the identity, Gaussian filters of
several widths (the best of them is an oracle: chosen on this very score), BM3D with the
noise level estimated from the frame, and each model. ``excess`` subtracts the best
achievable floor estimate (the noise variance of the target frame, estimated as half of
mean((a - b)^2)) and is what the denoiser itself costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
import torch
from bench_denoise_quality import add_orientations
from scipy import ndimage

from napari_temseg.engine import Normalization, denoise
from napari_temseg.models import load_model

PAIR = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "lowdose_pair"
SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0)


def load_pair() -> tuple[np.ndarray, np.ndarray, float]:
    """Frames a and b (float64) and the noise variance of one frame, half of
    mean((a - b)^2): the floor no denoiser can go below."""
    a = tifffile.imread(PAIR / "frame_a.tif").astype(np.float64)
    b = tifffile.imread(PAIR / "frame_b.tif").astype(np.float64)
    return a, b, float(np.mean((a - b) ** 2)) / 2


def excess(f, a: np.ndarray, b: np.ndarray, floor: float) -> tuple[float, float]:
    """What denoiser ``f`` adds to the error against the other frame: (a->b, b->a)."""
    ab = float(np.mean((np.asarray(f(a), np.float64) - b) ** 2))
    ba = float(np.mean((np.asarray(f(b), np.float64) - a) ** 2))
    return ab - floor, ba - floor


def bm3d_denoise(img: np.ndarray) -> np.ndarray:
    import bm3d
    from skimage.restoration import estimate_sigma

    norm = Normalization()
    st = norm.stats(img)
    z = norm.apply(img.astype(np.float64), st)
    sigma = max(float(estimate_sigma(z)), 1e-3)
    return norm.invert(np.asarray(bm3d.bm3d(z, sigma_psd=sigma), np.float64), st)


def candidates(weights: list[Path]) -> dict[str, object]:
    models: dict[str, object] = {}
    for kind in ("stem", "hrtem"):
        models[f"{kind}-denoise (bundled)"] = load_model(f"{kind}-denoise", "cpu")
        for w in weights:
            path = w / f"{kind}-denoise.safetensors"
            if path.exists():
                label = f"{kind}-denoise ({w.name})"
                if label in models:  # two folders of one name (out/, out/): name the parent
                    label = f"{kind}-denoise ({w.parent.name}/{w.name})"
                models[label] = load_model(str(path), "cpu")
    return models


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, nargs="*", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument(
        "--bins", type=int, nargs="+", default=[1, 2, 4], help="models at these binnings"
    )
    add_orientations(p, "each model")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not PAIR.is_dir():
        print(f"no real pair at {PAIR}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    a, b, floor = load_pair()
    methods: dict[str, object] = {"identity (noisy frame)": lambda x: x}
    for s in SIGMAS:
        methods[f"gaussian sigma {s}"] = lambda x, s=s: ndimage.gaussian_filter(x, s)
    if not args.no_bm3d:
        methods["BM3D (estimated sigma)"] = bm3d_denoise
    for name, model in candidates(args.weights).items():
        for k in args.bins:
            for tta in [1, *args.orientations]:
                label = name if k == 1 else f"{name}, binned {k}x{k}"
                label += f", {tta} orientations" if tta > 1 else ""
                methods[label] = lambda x, m=model, k=k, t=tta: denoise(
                    x.astype(np.float32), m, device="cpu", bin=k, tta=t
                )
    rows = {}
    for name, f in methods.items():
        ex_ab, ex_ba = excess(f, a, b, floor)
        rows[name] = {
            "a_to_b": ex_ab + floor,
            "b_to_a": ex_ba + floor,
            "excess_a_to_b": ex_ab,
            "excess_b_to_a": ex_ba,
        }
    best_g = min(
        (k for k in rows if k.startswith("gaussian")),
        key=lambda k: rows[k]["a_to_b"] + rows[k]["b_to_a"],
    )
    print(
        f"real low-dose pair, mean {a.mean():.0f} counts; noise variance of a frame ~{floor:.0f}\n"
    )
    print("| method | MSE a->b | MSE b->a | excess a->b | excess b->a |\n|---|---|---|---|---|")
    for name, r in rows.items():
        mark = " (best gaussian)" if name == best_g else ""
        print(
            f"| {name}{mark} | {r['a_to_b']:.1f} | {r['b_to_a']:.1f} | "
            f"{r['excess_a_to_b']:.1f} | {r['excess_b_to_a']:.1f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"floor": floor, "best_gaussian": best_g, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
