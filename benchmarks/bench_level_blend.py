"""Would a bundled model gain from a blur of its one pass chosen by the frame's noise level?

    python benchmarks/bench_level_blend.py --kind hrtem --fit 160 --fit-seed 5 --pair
    python benchmarks/bench_level_blend.py --kind hrtem --fit 240 --fit-seed 7 --pair

At very low dose one pass of ``hrtem-denoise`` varies more than the clean image and scores
below a Gaussian filter; an adapted model fixes that with a blend fitted on simulated images
at its frames' noise (``engine.postfilter``, ``engine.adapt``). Could the bundled models
carry such blends, one per noise level, fitted once? ``--fit`` simulated images
(doses log-uniform over 0.5-5000 e/px, seeds from ``--fit-seed``) are denoised in one pass
and sorted into ``--bins`` bins of equal count by their noise level
(``engine.adapt.noise_level``); per bin, ``engine.postfilter.fit_postfilter`` picks the
blend. Each test frame then gets its bin's blend. Scored on ``bench_denoise_quality.py``'s
standard and shifted sets (the first ``--n`` images per dose, PSNR against the scene) and,
with ``--pair``, on the real low-dose pair (excess error a->b / b->a, as
``bench_denoise_pair.py``). Markdown on stdout.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_denoise_quality import DOSES, image_seed, oracle_gaussian, psnr, test_image

from napari_temseg.engine import denoise
from napari_temseg.engine.adapt import noise_level
from napari_temseg.engine.postfilter import apply_postfilter, fit_postfilter
from napari_temseg.models import load_model
from napari_temseg.synth import simulate


def fit_table(kind: str, model: tuple, n: int, seed: int, bins: int) -> list[tuple]:
    """[(highest level of the bin, lowest and highest dose in it, blend or None)]."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        dose = float(np.exp(rng.uniform(np.log(0.5), np.log(5000.0))))
        s = simulate(kind, 256, dose=dose, seed=1000 * seed + 60000 + k)
        level = noise_level(s.noisy)
        if np.isfinite(level) and level > 0:  # a frame with no noise has no level
            rows.append((level, denoise(s.noisy, model, device="cpu", tile=256), s.clean, dose))
    rows.sort(key=lambda r: r[0])
    table = []
    for part in np.array_split(np.arange(len(rows)), min(bins, len(rows))):
        sel = [rows[i] for i in part]
        spec, _, _ = fit_postfilter([r[1] for r in sel], [r[2] for r in sel])
        doses = [r[3] for r in sel]
        table.append((sel[-1][0], min(doses), max(doses), spec))
    return table


def blended(noisy: np.ndarray, out: np.ndarray, table: list[tuple]) -> np.ndarray:
    level = noise_level(noisy)
    if not np.isfinite(level):
        return out
    spec = next((t[3] for t in table if level <= t[0]), table[-1][3])
    return apply_postfilter(out, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--fit", type=int, default=160, help="simulated images to fit on")
    p.add_argument("--fit-seed", type=int, default=5)
    p.add_argument("--bins", type=int, default=8)
    p.add_argument("--n", type=int, default=4, help="test images per dose")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pair", action="store_true", help="also the real low-dose pair (hrtem)")
    args = p.parse_args()
    if args.pair and args.kind != "hrtem":
        p.error("--pair scores the real low-dose TEM pair, a frame for --kind hrtem")
    torch.set_num_threads(args.threads)
    model = load_model(f"{args.kind}-denoise", "cpu")
    table = fit_table(args.kind, model, args.fit, args.fit_seed, args.bins)
    print(
        f"**{args.kind}-denoise, blends fitted per noise level** ({args.fit} images, seed "
        f"{args.fit_seed})\n\n| noise level up to | doses in the bin (e/px) | blend |\n|---|---|---|"
    )
    for top, lo, hi, spec in table:
        blend = (
            f"{spec['weight']:.2f} x output + rest {spec['sigma']:g} px blur" if spec else "none"
        )
        print(f"| {top:.3f} | {lo:.1f}-{hi:.1f} | {blend} |")
    print(
        "\n| set | dose (e/px) | oracle Gaussian | one pass | one pass, blended |\n|---|---|---|---|---|"
    )
    for shifted in (False, True):
        for di, dose in enumerate(DOSES):
            scores = []
            for i in range(args.n):
                noisy, clean = test_image(
                    args.kind, dose, image_seed(2024, shifted, di, i), shifted
                )
                out = denoise(noisy, model, device="cpu", tile=256)
                g = oracle_gaussian(noisy, clean)
                scores.append(
                    [psnr(clean, g), psnr(clean, out), psnr(clean, blended(noisy, out, table))]
                )
            m = np.mean(scores, 0)
            name = "shifted" if shifted else "standard"
            print(f"| {name} | {dose:g} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} |", flush=True)
    if args.pair:
        from bench_denoise_pair import load_pair

        a, b, floor = load_pair()
        res = []
        for x, other in ((a, b), (b, a)):
            out = denoise(x.astype(np.float32), model, device="cpu")
            res.append(
                [float(np.mean((y - other) ** 2)) - floor for y in (out, blended(x, out, table))]
            )
        print(
            f"\nreal pair, excess a->b / b->a: one pass {res[0][0]:.0f} / {res[1][0]:.0f}, "
            f"blended {res[0][1]:.0f} / {res[1][1]:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
