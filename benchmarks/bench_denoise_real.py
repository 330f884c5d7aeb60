"""The bundled denoisers on real micrographs (../shared/testdata, an acstem frame): figures, numbers.

    python benchmarks/bench_denoise_real.py --out /tmp/denoise_real        # PNGs to look at
    python benchmarks/bench_denoise_real.py --figure docs/images/denoise_real.png
    python benchmarks/bench_denoise_real.py --weights DIR --figure /tmp/cmp.png  # a candidate

There is no clean truth for a real micrograph, so this reports what can be checked:
the largest difference between tiled (256 px tiles) and whole-frame inference (seams),
how much the output's mean differs from the input's (intensity kept), and the residual
(input - output) standard deviation against a Poisson estimate of the noise, and the
high-frequency power the output keeps (|k| > 0.25 cycles/px, output over input, Hann
window): at these samplings that band is almost all noise, so the figure is the noise
left as texture (the bundled STEM weights keep 2-3 %). The PNGs
(full frame and a 256 px crop, before and after, same contrast) are for looking at:
artefacts, seams, hallucinated lattice. ``--weights DIR [DIR ...]`` adds a candidate's
``<model>.safetensors`` from each DIR as a further row of the figure, on the same crops and
contrast, so a candidate is looked at beside the bundled weights before it ships; a bundled
denoiser's fine-tuning start (the weights it replaced) gets a row of its own.
``--crop 128`` shows a smaller crop at twice the scale, where noise left as texture is seen.
``--orientations 2 8`` adds the bundled model averaged over two and eight orientations
(``engine.tta``; two is what the Denoise dock and ``temseg denoise`` do by default) as
rows; ``--tta`` adds eight.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from bench_denoise_quality import add_orientations
from bench_noise_anisotropy import windowed_power

from napari_temseg.engine import denoise
from napari_temseg.models import FINETUNE_START, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
TESTDATA = SHARED / "testdata"
ACSTEM = SHARED / "realdata" / "acstem" / "images"
FILES = {
    "tkrem_hrstem_example.ser": ("tia", "stem-denoise", "real HRSTEM (HAADF), 0.052 nm/px"),
    "16_STOimage_1.ser": ("tia", "stem-denoise", "real HAADF-STEM of SrTiO3, 0.010 nm/px"),
    # a test frame of the real annotated set: single Pt atoms on carbon, raw counts
    "053_HAADF_15nm_Sample_PtNC_21Oct20.tif": (
        "tif",
        "stem-denoise",
        "real HAADF-STEM, Pt atoms on carbon (acstem), 0.029 nm/px",
    ),
    "velox_camera_ceta_imaging.emd": (
        "emd",
        "hrtem-denoise",
        "real TEM camera image (Ceta), 3.1 nm/px",
    ),
}


def read(path: Path, kind: str) -> np.ndarray:
    if kind == "tif":
        import tifffile

        return np.asarray(tifffile.imread(path), np.float32)
    if kind == "tia":
        from rsciio.tia import file_reader
    else:
        from rsciio.emd import file_reader
    return np.asarray(file_reader(str(path))[0]["data"], np.float32)


def crop_box(img: np.ndarray, size: int = 256) -> tuple[slice, slice]:
    h, w = img.shape
    y0, x0 = (h - min(size, h)) // 2, (w - min(size, w)) // 2
    return slice(y0, y0 + min(size, h)), slice(x0, x0 + min(size, w))


def limits(a: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def high_frequency_power(img: np.ndarray) -> float:
    """Mean power above 0.25 cycles/px of the Hann-windowed frame."""
    power, ky, kx = windowed_power(img)
    return float(power[np.broadcast_to(np.hypot(ky, kx) > 0.25, power.shape)].mean())


def stats(out: np.ndarray, img: np.ndarray, rng: float, img_high: float, noise: str = "") -> str:
    """The table's cells for one output: mean shift, residual std (``noise`` after it),
    high frequencies kept (``img_high``: the input's high-frequency power)."""
    shift = 100 * float(out.mean() - img.mean()) / rng
    resid = float((img - out).std())
    return f"{shift:+.2f} % | {resid:.1f}{noise} | {high_frequency_power(out) / img_high:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/denoise_real"))
    p.add_argument("--figure", type=Path, help="also write one combined before/after figure here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--weights",
        type=Path,
        nargs="*",
        default=[],
        help="folders of candidate <model>.safetensors",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=256,
        help="side of the centred crop the figures show, px (128: noise texture at 2x)",
    )
    add_orientations(p, "add the bundled model as a row")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not TESTDATA.is_dir():
        print(f"no real test data at {TESTDATA}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(
        "| file | model | tiled vs whole (max, % of range) | mean shift (% of range) "
        "| residual std / Poisson-ish std | high frequencies kept |"
    )
    print("|---|---|---|---|---|---|")
    for name, (kind, model_name, what) in FILES.items():
        path = (ACSTEM if kind == "tif" else TESTDATA) / name
        if not path.is_file():
            continue
        img = read(path, kind)
        model = load_model(model_name, "cpu")
        out = denoise(img, model, device="cpu", tile=256, overlap=32)
        whole = denoise(img, model, device="cpu", tile=max(img.shape))
        rng = np.ptp(np.percentile(img, [0.5, 99.5]))
        img_high = high_frequency_power(img)
        seam = 100 * float(np.abs(out - whole).max()) / rng
        poisson = f" / {np.sqrt(max(img.mean(), 1e-6)):.1f}"
        print(
            f"| {name} | {model_name} | {seam:.3f} % | {stats(out, img, rng, img_high, poisson)} |"
        )
        lo, hi = limits(out)
        ys, xs = crop_box(img, args.crop)
        fig, ax = plt.subplots(2, 2, figsize=(10, 10))
        for a, data, title in (
            (ax[0, 0], img, "input"),
            (ax[0, 1], out, f"{model_name}"),
            (ax[1, 0], img[ys, xs], "input (crop)"),
            (ax[1, 1], out[ys, xs], f"{model_name} (crop)"),
        ):
            a.imshow(data, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            a.set_title(title)
            a.axis("off")
        fig.suptitle(f"{name}: {what}")
        fig.tight_layout()
        fig.savefig(args.out / f"{Path(name).stem}_{model_name}.png", dpi=90)
        plt.close(fig)
        panels = [(f"{name}\n{what.split(',')[0]}", img[ys, xs]), (model_name, out[ys, xs])]
        others = [(f"{s} (bundled)", s, False) for s in [model[1].get(FINETUNE_START)] if s]
        others += [
            (f"{model_name} candidate ({folder.name})", folder / f"{model_name}.safetensors", False)
            for folder in args.weights
            if (folder / f"{model_name}.safetensors").is_file()
        ]
        for k, n in enumerate(args.orientations):
            others.insert(k, (f"{model_name}, {n} orientations", model_name, n))
        for label, spec, tta in others:
            other = denoise(
                img, load_model(spec, "cpu"), device="cpu", tile=256, overlap=32, tta=tta
            )
            print(f"| {name} | {label} | | {stats(other, img, rng, img_high)} |")
            panels.append((label, other[ys, xs]))
        rows.append((panels, (lo, hi)))
    if args.figure and rows:
        n = max(len(panels) for panels, _ in rows)
        fig, ax = plt.subplots(n, len(rows), figsize=(3.2 * len(rows), 3.3 * n))
        ax = np.asarray(ax).reshape(n, len(rows))
        for j, (panels, (lo, hi)) in enumerate(rows):
            for i in range(n):
                ax[i, j].axis("off")
                if i < len(panels):
                    title, data = panels[i]
                    ax[i, j].imshow(data, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                    ax[i, j].set_title(title, fontsize=7)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=80)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
