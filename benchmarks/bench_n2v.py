"""Noise2Void (careamics, trained on each image) beside the bundled denoisers, the oracle
Gaussian and BM3D, in one run: the third baseline that issue 13 names.

    python benchmarks/bench_n2v.py --careamics-python /path/to/env/bin/python
    python benchmarks/bench_n2v.py --careamics-python PY --set pair --epochs 20 100

careamics pins another torch than the project (0.3.5: torch 2.11), so it lives in its own
environment: ``python -m venv /tmp/cv && /tmp/cv/bin/pip install careamics`` (this pulls
torch 2.11 with its CUDA packages, 5.3 GB; install torch 2.11's CPU build first to avoid
them). ``benchmarks/careamics_n2v.py`` runs there, once per epoch count, on all the
images at once, each image getting its own network trained from scratch as a careamics or
napari-n2v user would (default: 20 epochs, as in the issue).
Without careamics there, the script says so in one line and measures nothing.

``--set standard``: the first ``--n`` images per dose of ``bench_denoise_quality.py``'s
standard set (same seeds), PSNR / SSIM against the noise-free scene. ``--set pair``: the
real low-dose pair (``../shared/realdata/lowdose_pair``), N2V trained on frame a and
scored against b and vice versa; the error the method adds beyond the noise floor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_denoise_pair import PAIR, bm3d_denoise, excess, load_pair
from bench_denoise_pair import SIGMAS as PAIR_SIGMAS
from bench_denoise_quality import DOSES, baselines, image_seed, psnr, ssim, test_image
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.models import load_model

RUNNER = Path(__file__).with_name("careamics_n2v.py")


def has_careamics(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import careamics"], capture_output=True)
    return probe.returncode == 0


def n2v(python: str, stack: np.ndarray, epochs: int, threads: int) -> np.ndarray:
    """careamics N2V predictions for each image of ``stack`` (N, H, W), each on its own."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(inp, stack.astype(np.float32))
        cmd = [python, str(RUNNER), str(inp), str(out), "--epochs", str(epochs)]
        done = subprocess.run([*cmd, "--threads", str(threads)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"careamics N2V failed: {tail}")
        return np.load(out)


def standard(args) -> None:
    for kind in args.kinds:
        model = load_model(f"{kind}-denoise", "cpu")
        noisy, clean, rows = [], [], {}
        for di, dose in enumerate(DOSES):
            for i in range(args.n):
                x, c = test_image(kind, dose, image_seed(args.seed, False, di, i), False)
                ests = baselines(x, c, not args.no_bm3d)
                ests.pop("NLM (oracle h)")
                ests["model"] = denoise(x, model, device="cpu", tile=256)
                for k, e in ests.items():
                    rows.setdefault((dose, k), []).append((psnr(c, e), ssim(c, e)))
                noisy.append(x)
                clean.append(c)
        for epochs in args.epochs:
            t0 = time.perf_counter()
            pred = n2v(args.careamics_python, np.stack(noisy), epochs, args.threads)
            print(f"N2V {epochs} epochs on {len(pred)} images: {time.perf_counter() - t0:.0f} s")
            for j, (p, c) in enumerate(zip(pred, clean, strict=True)):
                rows.setdefault((DOSES[j // args.n], f"N2V {epochs} ep"), []).append(
                    (psnr(c, p), ssim(c, p))
                )
        methods = list(dict.fromkeys(k for _, k in rows))
        print(f"\n{kind}-denoise, standard set, n={args.n} per dose (PSNR dB / SSIM)\n")
        print("| dose (e/px) | " + " | ".join(methods) + " |")
        print("|---" * (len(methods) + 1) + "|")
        for dose in DOSES:
            cells = [np.mean(rows[dose, m], axis=0) for m in methods]
            print(f"| {dose:g} | " + " | ".join(f"{p:.2f} / {s:.3f}" for p, s in cells) + " |")


def pair(args) -> None:
    if not PAIR.is_dir():
        print(f"no real pair at {PAIR}: skipped")
        return
    a, b, floor = load_pair()
    rows: dict[str, tuple[float, float]] = {}

    gauss = {
        s: excess(lambda x, s=s: ndimage.gaussian_filter(x, s), a, b, floor) for s in PAIR_SIGMAS
    }
    best = min(gauss, key=lambda s: sum(gauss[s]))
    rows[f"Gaussian sigma {best:g} (oracle)"] = gauss[best]
    if not args.no_bm3d:
        rows["BM3D (estimated sigma)"] = excess(bm3d_denoise, a, b, floor)
    for kind in args.kinds:
        m = load_model(f"{kind}-denoise", "cpu")
        rows[f"{kind}-denoise"] = excess(
            lambda x, m=m: denoise(x.astype(np.float32), m, device="cpu"), a, b, floor
        )
    for epochs in args.epochs:
        t0 = time.perf_counter()
        pa, pb = n2v(args.careamics_python, np.stack([a, b]), epochs, args.threads)
        label = f"N2V, {epochs} epochs ({time.perf_counter() - t0:.0f} s for both)"
        rows[label] = excess(lambda x, pa=pa, pb=pb: pa if x is a else pb, a, b, floor)
    print("\nreal low-dose pair: error added beyond the noise floor\n")
    print("| method | excess a->b | excess b->a |\n|---|---|---|")
    for k, (ab, ba) in rows.items():
        print(f"| {k} | {ab:.0f} | {ba:.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--careamics-python", default=sys.executable)
    p.add_argument("--set", nargs="+", choices=("standard", "pair"), default=["standard", "pair"])
    p.add_argument("--kinds", nargs="+", choices=("stem", "hrtem"), default=["stem", "hrtem"])
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--epochs", type=int, nargs="+", default=[20])
    p.add_argument("--seed", type=int, default=2024, help="as bench_denoise_quality.py")
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not has_careamics(args.careamics_python):
        print(f"careamics is not importable by {args.careamics_python}: nothing measured")
        return 0
    torch.set_num_threads(args.threads)
    if "standard" in args.set:
        standard(args)
    if "pair" in args.set:
        pair(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
