"""What each distortion costs the bundled denoiser, against the oracle Gaussian.

    python benchmarks/bench_per_distortion.py --kind hrtem --dose 10 --n 6

Issue 13 asks how much of the gap to a Gaussian filter each distortion explains. The same
``n`` simulated 256x256 scenes (seeds 5000+i, never used in training) are recorded with the
full distortion set, with each distortion switched off in turn, and with shot noise alone;
for each the bundled model and a Gaussian filter whose sigma is chosen on the clean image
(an oracle) are scored by PSNR against the clean scene, and the model's mean intensity
bias is reported. A distortion whose removal raises "model - Gaussian" is one the network
handles worse than a blur does.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from bench_denoise_quality import oracle_gaussian, psnr

from napari_temseg.engine import denoise
from napari_temseg.models import load_model
from napari_temseg.synth import DistortionConfig, simulate


def variants() -> dict[str, DistortionConfig]:
    full = DistortionConfig.full()
    out = {"full": full, "shot noise only": DistortionConfig.poisson_only()}
    for name in (n for n in full.names() if n != "poisson"):  # all but shot noise
        c = copy.deepcopy(full)
        getattr(c, name).enabled = False
        out[f"full without {name}"] = c
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--dose", type=float, default=10.0)
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", help="a checkpoint to test instead of the bundled model")
    p.add_argument(
        "--clip", type=float, help="clip the network's normalised input here (the model's: 20)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.weights or f"{a.kind}-denoise", "cpu")
    if a.clip:
        net, meta = model
        model = (net, {**meta, "normalization": {**meta["normalization"], "clip": a.clip}})
    print(
        f"{a.weights or a.kind + '-denoise'}, {a.dose:g} e/px, {a.n} scenes; PSNR (dB) against the clean scene\n"
    )
    print("| recorded with | oracle Gaussian | model | model - Gaussian | model mean bias |")
    print("|---|---|---|---|---|")
    for name, cfg in variants().items():
        g, m, bias = [], [], []
        for i in range(a.n):
            s = simulate(a.kind, 256, dose=a.dose, seed=5000 + i, distortions=cfg)
            g.append(psnr(s.clean, oracle_gaussian(s.noisy, s.clean)))
            out = denoise(s.noisy, model, device="cpu")
            m.append(psnr(s.clean, out))
            bias.append(float(out.mean() / s.clean.mean() - 1))
        print(
            f"| {name} | {np.mean(g):.2f} | {np.mean(m):.2f} | {np.mean(m) - np.mean(g):+.2f} | "
            f"{np.mean(bias):+.1%} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
