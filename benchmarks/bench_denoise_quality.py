"""Denoising quality of the bundled models against classical baselines, per dose.

    python benchmarks/bench_denoise_quality.py            # both models, both test sets
    python benchmarks/bench_denoise_quality.py --kind stem --n 4 --no-bm3d   # quick look

Fixed, seeded simulated test sets (never seen in training: training draws its own
seeds): for each dose, ``n`` images of 256x256 with the full distortion set. A second,
"shifted" set checks generalisation: pixel sizes outside the training range, lattice
constants outside the simulator's default range and a different noise mix (strong
read-out noise, many more X-ray hits, no gain variation).

Methods, each applied to the frame normalised exactly as the model sees it and mapped
back: the noisy input; a Gaussian filter with the best sigma per image (an oracle: it
sees the clean image); non-local means (skimage, h chosen per image by the same oracle);
BM3D (``bm3d`` package, sigma estimated from the image with skimage's wavelet estimator);
the model. PSNR uses the clean image's range as peak; SSIM likewise.

Writes a Markdown table per model and set to stdout and, with ``--out``, JSON (the model in
float32, the weights' own numbers for the cards; otherwise as `engine.denoise` runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity
from skimage.restoration import denoise_nl_means, estimate_sigma

from napari_temseg.engine import Normalization, denoise
from napari_temseg.models import load_model
from napari_temseg.synth import DistortionConfig, distort, simulate, specimen

DOSES = (1.0, 10.0, 100.0, 1000.0, 5000.0)
#: up to infinity, the frame's mean: at 1 e/px simulated HRTEM has so little contrast that
#: the best Gaussian is often the widest; capped at 6 px it scored 10.0 dB, 5-6 dB too easy
SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0)
SIGMAS += (math.inf,)
NLM_K = (0.5, 0.75, 1.0, 1.3)
SHIFTED_PIXELS = {"stem": ((0.005, 0.009), (0.3, 0.45)), "hrtem": ((0.005, 0.009), (0.14, 0.2))}


def psnr(clean: np.ndarray, est: np.ndarray) -> float:
    rng = float(clean.max() - clean.min()) or 1.0
    mse = float(np.mean((clean.astype(np.float64) - est) ** 2))
    return 10 * math.log10(rng**2 / mse) if mse > 0 else math.inf


def ssim(clean: np.ndarray, est: np.ndarray) -> float:
    rng = float(clean.max() - clean.min()) or 1.0
    return float(structural_similarity(clean, est.astype(np.float32), data_range=rng))


def shifted_noise() -> DistortionConfig:
    c = DistortionConfig.full()
    c.readout.sigma_e = (2.0, 4.0)
    c.xray.probability = 1.0
    c.xray.rate_per_mpx = (100.0, 300.0)
    c.gain.adu_per_e = (8.0, 8.0)
    c.dead_columns.enabled = False
    return c


def image_seed(seed: int, shifted: bool, dose_index: int, i: int) -> int:
    """The seed of the ``i``-th test image at the ``dose_index``-th dose of a set: the one
    place that fixes which images every benchmark scoring "the standard set" sees."""
    return int(np.random.SeedSequence([seed, int(shifted), dose_index, i, 7]).generate_state(1)[0])


def test_image(
    kind: str, dose: float, seed: int, shifted: bool, reference: str = "scene"
) -> tuple[np.ndarray, np.ndarray]:
    """One (noisy, clean) 256x256 test pair, fixed by its seed. ``reference`` "recorded"
    scores against the clean image in the scan's recorded geometry (standard set only)."""
    if not shifted:
        s = simulate(kind, 256, dose=dose, seed=seed)
        return s.noisy, (s.recorded_clean if reference == "recorded" else s.clean)
    rng = np.random.default_rng(seed)
    lo, hi = SHIFTED_PIXELS[kind][int(rng.integers(2))]
    pixel = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    opts = {"lattice_nm": float(rng.uniform(0.5, 0.7))}
    ideal, *_ = specimen(kind, 256, pixel, rng, **opts)
    noisy, clean, _ = distort(ideal, dose, kind, rng, shifted_noise())
    return noisy, clean


def oracle_gaussian(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The Gaussian filter of ``noisy`` (in normalised units) closest to ``clean``."""
    norm = Normalization()
    st = norm.stats(noisy)
    z = norm.apply(noisy.astype(np.float64), st)
    return max(
        (norm.invert(_gaussian(z, s), st) for s in SIGMAS),
        key=lambda e: psnr(clean, e),
    )


def _gaussian(z: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian filter; of infinite width, the frame's mean (its limit under reflection)."""
    return np.full_like(z, z.mean()) if math.isinf(sigma) else ndimage.gaussian_filter(z, sigma)


def baselines(noisy: np.ndarray, clean: np.ndarray, use_bm3d: bool) -> dict[str, np.ndarray]:
    norm = Normalization()
    st = norm.stats(noisy)
    z = norm.apply(noisy.astype(np.float64), st)
    out = {"noisy": noisy.astype(np.float64)}
    out["gaussian (oracle sigma)"] = oracle_gaussian(noisy, clean)
    sigma = float(estimate_sigma(z))
    sigma = sigma if sigma > 1e-6 else 1e-3
    nlm = (
        denoise_nl_means(
            z, h=k * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
        )
        for k in NLM_K
    )
    out["NLM (oracle h)"] = max((norm.invert(e, st) for e in nlm), key=lambda e: psnr(clean, e))
    if use_bm3d:
        import bm3d

        out["BM3D"] = norm.invert(np.asarray(bm3d.bm3d(z, sigma_psd=sigma), np.float64), st)
    return out


def add_orientations(p: argparse.ArgumentParser, what: str) -> None:
    """``--orientations N [N ...]`` (2, 8: engine.tta) and ``--tta`` (adds 8): ``what``
    is also scored averaged over each count; ``args.orientations`` lists them."""
    p.add_argument(
        "--orientations",
        type=int,
        nargs="+",
        choices=(2, 8),
        default=[],
        help=f"also {what} averaged over this many orientations (engine.tta)",
    )
    p.add_argument(
        "--tta", dest="orientations", action="append_const", const=8, help="adds 8 orientations"
    )


def evaluate(
    model_name: str,
    kind: str,
    n: int,
    shifted: bool,
    use_bm3d: bool,
    seed: int,
    reference: str = "scene",
    tta: int = 1,
    amp: bool = True,
) -> dict:
    model = load_model(model_name, "cpu")
    rows = {}
    for di, dose in enumerate(DOSES):
        scores: dict[str, list[tuple[float, float]]] = {}
        for i in range(n):
            img_seed = image_seed(seed, shifted, di, i)
            noisy, clean = test_image(kind, dose, img_seed, shifted, reference)
            ests = baselines(noisy, clean, use_bm3d)
            ests["model"] = denoise(noisy, model, device="cpu", tile=256, tta=tta, amp=amp)
            for name, est in ests.items():
                scores.setdefault(name, []).append((psnr(clean, est), ssim(clean, est)))
        rows[dose] = {
            k: [float(np.mean([v[0] for v in vs])), float(np.mean([v[1] for v in vs]))]
            for k, vs in scores.items()
        }
    return rows


def markdown(rows: dict, title: str) -> str:
    methods = list(next(iter(rows.values())))
    head = "| dose (e/px) | " + " | ".join(methods) + " | model - best baseline |"
    sep = "|" + "---|" * (len(methods) + 2)
    lines = [f"**{title}** (PSNR dB / SSIM)", "", head, sep]
    gains = []
    for dose, r in [*rows.items(), ("mean", None)]:
        if r is None:
            r = {
                m: [
                    float(np.mean([rows[d][m][0] for d in rows])),
                    float(np.mean([rows[d][m][1] for d in rows])),
                ]
                for m in methods
            }
        base = [m for m in methods if m not in ("model", "noisy")]
        bp = max(r[m][0] for m in base)
        bs = max(r[m][1] for m in base)
        gain = f"{r['model'][0] - bp:+.2f} dB / {r['model'][1] - bs:+.3f}"
        if dose != "mean":
            gains.append(r["model"][0] - bp)
        cells = " | ".join(f"{r[m][0]:.2f} / {r[m][1]:.3f}" for m in methods)
        label = f"{dose:g}" if dose != "mean" else "**mean**"
        lines.append(f"| {label} | {cells} | {gain} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem", "all"), default="all")
    p.add_argument("--n", type=int, default=6, help="images per dose")
    p.add_argument("--set", choices=("standard", "shifted", "both"), default="both")
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--weights", type=Path, help="folder of <kind>-denoise.safetensors to test instead"
    )
    p.add_argument(
        "--reference",
        choices=("scene", "recorded"),
        default="scene",
        help="standard set: score against the undistorted scene or the scene as the scan "
        "recorded it (row jitter, drift kept)",
    )
    p.add_argument(
        "--orientations",
        type=int,
        choices=(1, 2, 8),
        default=1,
        help="score the model averaged over this many orientations (engine.tta; that many "
        "times the time; default 1, one pass)",
    )
    p.add_argument("--tta", dest="orientations", action="store_const", const=8, help="= 8")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.orientations > 1 and args.out:  # the model cards read --out as the single pass
        p.error("--out publishes the model's own single pass; drop --orientations/--tta")
    torch.set_num_threads(args.threads)
    kinds = ("stem", "hrtem") if args.kind == "all" else (args.kind,)
    sets = {"standard": (False,), "shifted": (True,), "both": (False, True)}[args.set]
    results = {}
    for kind in kinds:
        for shifted in sets:
            t0 = time.perf_counter()
            name = f"{kind}-denoise"
            model_ref = str(args.weights / f"{name}.safetensors") if args.weights else name
            rows = evaluate(
                model_ref,
                kind,
                args.n,
                shifted,
                not args.no_bm3d,
                args.seed,
                args.reference,
                args.orientations,
                amp=args.out is None,  # --out: the weights' own float32 numbers (the cards)
            )
            o = args.orientations
            label = f"{kind}-denoise{f' ({o} orientations)' if o > 1 else ''} on the {'shifted' if shifted else 'standard'} {kind} test set, n={args.n} per dose"
            print(markdown(rows, label), flush=True)
            print(f"\n({time.perf_counter() - t0:.0f} s)\n", flush=True)
            results[f"{kind}/{'shifted' if shifted else 'standard'}"] = rows
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
