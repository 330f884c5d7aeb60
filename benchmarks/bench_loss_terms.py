"""Several STEM denoisers side by side, in one run: PSNR, SSIM and atom-column error.

    python benchmarks/bench_loss_terms.py --weights l2=/tmp/terms/l2/stem-denoise.safetensors \
        local_std=/tmp/terms/local_std/stem-denoise.safetensors --n 2

Made to compare the loss terms of ``engine/losses.py`` one at a time (each arm continues
the same weights with the same seed, data and steps; only the loss differs), but it takes
any STEM checkpoints. The shipped ``stem-denoise`` and the oracle Gaussian (sigma chosen per
image on the clean image) are always in the table.

- Standard STEM test set of ``bench_denoise_quality.py`` (same seeds), ``n`` images per
  dose: mean PSNR over the doses against the undistorted scene and against the scene as the
  scan recorded it, mean SSIM against the recorded scene, and PSNR minus the oracle
  Gaussian's per dose (recorded reference).
- Atom columns as in ``bench_columns.py`` (20 pm/px, recorded truth, parabola fit) on
  ``--column-frames`` frames at 10 and 20 e/px: median / 90th percentile error in pm.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_columns import PIXEL_NM, columns, errors
from bench_denoise_quality import DOSES, image_seed, oracle_gaussian, psnr, ssim, test_image

from napari_temseg.engine import denoise
from napari_temseg.models import load_model
from napari_temseg.synth import simulate

GAUSSIAN = "oracle Gaussian"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", default=[], metavar="LABEL=PATH")
    p.add_argument("--n", type=int, default=2, help="standard-set images per dose")
    p.add_argument("--column-frames", type=int, default=6)
    p.add_argument("--column-doses", type=float, nargs="+", default=[10.0, 20.0])
    p.add_argument("--seed", type=int, default=2024, help="the standard set's seed")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = {"stem-denoise (shipped)": load_model("stem-denoise", "cpu")[0]}
    for item in a.weights:
        label, _, path = item.partition("=")
        models[label] = load_model(path or label, "cpu")[0]
    names = [GAUSSIAN, *models]
    t0 = time.perf_counter()
    # scores[name][reference] -> per dose list of (psnr, ssim)
    scores = {n: {"scene": {}, "recorded": {}} for n in names}
    for di, dose in enumerate(DOSES):
        for i in range(a.n):
            seed = image_seed(a.seed, False, di, i)
            for ref in ("scene", "recorded"):
                noisy, clean = test_image("stem", dose, seed, False, ref)
                ests = {GAUSSIAN: oracle_gaussian(noisy, clean)}
                for label, model in models.items():
                    ests[label] = denoise(noisy, model, device="cpu", tile=256)
                for name, est in ests.items():
                    scores[name][ref].setdefault(dose, []).append(
                        (psnr(clean, est), ssim(clean, est))
                    )
    col: dict[str, dict[float, list[np.ndarray]]] = {n: {} for n in names}
    for dose in a.column_doses:
        for i in range(a.column_frames):
            s = simulate("stem", 256, pixel_size_nm=PIXEL_NM, dose=dose, seed=7000 + i)
            truth = columns(s.recorded_clean, s.recorded_semantic == 2)
            ests = {GAUSSIAN: oracle_gaussian(s.noisy, s.recorded_clean)}
            for label, model in models.items():
                ests[label] = denoise(s.noisy, model, device="cpu")
            for name, est in ests.items():
                e = errors(np.asarray(est, np.float64), truth) * PIXEL_NM * 1000
                col[name].setdefault(dose, []).append(e)

    def mean(name: str, ref: str, k: int) -> float:
        return float(np.mean([v[k] for vs in scores[name][ref].values() for v in vs]))

    def at(name: str, dose: float) -> float:
        return float(np.mean([v[0] for v in scores[name]["recorded"][dose]]))

    ncol = {d: sum(len(e) for e in col[GAUSSIAN][d]) for d in a.column_doses}
    print(
        f"STEM standard set, n={a.n} per dose; columns on {a.column_frames} frames "
        f"({', '.join(f'{ncol[d]} at {d:g} e/px' for d in a.column_doses)})\n"
    )
    head = ["PSNR scene", "PSNR recorded", "SSIM recorded"]
    head += [f"- Gaussian at {d:g}" for d in DOSES]
    head += [f"columns {d:g} e/px (pm)" for d in a.column_doses]
    print("| method | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for name in names:
        cells = [
            f"{mean(name, 'scene', 0):.2f}",
            f"{mean(name, 'recorded', 0):.2f}",
            f"{mean(name, 'recorded', 1):.3f}",
        ]
        cells += [f"{at(name, d) - at(GAUSSIAN, d):+.2f}" for d in DOSES]
        for d in a.column_doses:
            e = np.concatenate(col[name][d])
            cells.append(f"{np.median(e):.1f} / {np.percentile(e, 90):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
