"""Is a denoiser's output still noisy? The error left after a Gaussian of its output.

    python benchmarks/bench_output_smoothing.py --kind hrtem --n 4
    python benchmarks/bench_output_smoothing.py --kind stem --weights DIR [DIR ...]

A network trained with an L2 loss should return the mean of what the clean image could be;
if smoothing its output by a Gaussian still lowers the error, the output kept grain that no
clean image explains (noise let through, or texture invented), and more or other training
has something to gain there. For the first ``--n`` images per dose of
``bench_denoise_quality.py``'s standard set (same seeds), the mean squared error after a
Gaussian of each width, as a share of the output's own error (below 1: smoothing helps),
against the scene as the scan recorded it. Bundled model and candidates side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from bench_denoise_quality import DOSES, image_seed, test_image
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.models import load_model

WIDTHS = (0.5, 1.0, 2.0, 4.0, 8.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--weights", type=Path, nargs="*", default=[])
    p.add_argument("--seed", type=int, default=2024, help="as bench_denoise_quality.py")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tta", action="store_true", help="the models averaged over eight orientations")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    name = f"{args.kind}-denoise"
    models = {name: load_model(name, "cpu")}
    for w in args.weights:
        models[f"{name} ({w})"] = load_model(str(w / f"{name}.safetensors"), "cpu")
    print(
        f"error after a Gaussian of the output / error of the output, {args.kind}"
        f"{' (8 orientations)' if args.tta else ''}, "
        f"n={args.n} per dose, against the recorded scene\n"
    )
    print("| model | dose (e/px) | " + " | ".join(f"{w:g} px" for w in WIDTHS) + " |")
    print("|---|---|" + "---|" * len(WIDTHS))
    for label, model in models.items():
        for di, dose in enumerate(DOSES):
            ratios = []
            for i in range(args.n):
                seed = image_seed(args.seed, False, di, i)
                noisy, clean = test_image(args.kind, dose, seed, False, "recorded")
                out = denoise(noisy, model, device="cpu", tile=256, tta=args.tta)
                out = out.astype(np.float64)
                base = float(np.mean((out - clean) ** 2))
                ratios.append(
                    [np.mean((ndimage.gaussian_filter(out, w) - clean) ** 2) / base for w in WIDTHS]
                )
            cells = " | ".join(f"{r:.2f}" for r in np.mean(ratios, axis=0))
            print(f"| {label} | {dose:g} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
