"""Make the simulator figures in docs/images/.

simulator_doses.png: clean, noisy at three doses and the mask, for STEM and HRTEM.
simulator_gallery.png: random draws of each kind (what the training data look like).

Usage: python scripts/make_simulator_figure.py [--outdir docs/images] [--size 512]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from napari_temseg.synth import simulate
from napari_temseg.synth.distortions import DistortionConfig, distort

DOSES = (5.0, 50.0, 1000.0)
SETTINGS = {  # kind: (seed, pixel size nm) chosen to show lattice and particles together
    "stem": (3, 0.04),
    "hrtem": (5, 0.03),
}


def _show(ax, img, title, crop=None, **kw):
    if crop is not None:
        img = img[crop]
    lo, hi = np.percentile(img, [1, 99]) if img.dtype.kind == "f" else (None, None)
    ax.imshow(
        img,
        cmap=kw.pop("cmap", "gray"),
        vmin=kw.pop("vmin", lo),
        vmax=kw.pop("vmax", hi),
        interpolation="nearest",
        **kw,
    )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path, dpi: int, grey: bool) -> None:
    """Save as an 8-bit grey or 256-colour PNG: a quarter of matplotlib's RGBA size."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB")
    img = img.convert("L") if grey else img.quantize(256)
    img.save(path, optimize=True)


def _crop_around_largest(instances: np.ndarray, n: int) -> tuple[slice, slice]:
    """An n x n window centred on the largest particle (clipped to the image)."""
    h, w = instances.shape
    cy, cx = h // 2, w // 2
    if instances.max() > 0:
        ids, counts = np.unique(instances[instances > 0], return_counts=True)
        ys, xs = np.nonzero(instances == ids[np.argmax(counts)])
        cy, cx = int(ys.mean()), int(xs.mean())
    y0 = min(max(cy - n // 2, 0), h - n)
    x0 = min(max(cx - n // 2, 0), w - n)
    return slice(y0, y0 + n), slice(x0, x0 + n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", default="docs/images")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    fig, axes = plt.subplots(4, 5, figsize=(15, 12.4))
    for row, (kind, (seed, px)) in enumerate(SETTINGS.items()):
        base = simulate(kind, args.size, pixel_size_nm=px, dose=DOSES[0], seed=seed)
        crop = _crop_around_largest(base.instances, args.size // 4)
        # the same detector and distortion draw at every dose, so only the dose changes
        noisy = [
            distort(
                base.ideal, d, kind, np.random.default_rng(seed + 100), DistortionConfig.full()
            )[0]
            for d in DOSES
        ]
        for zoom, r in ((None, 2 * row), (crop, 2 * row + 1)):
            tag = "" if zoom is None else " (zoom)"
            _show(axes[r, 0], base.clean, f"{kind.upper()} clean, {px:g} nm/px{tag}", zoom)
            for j, (d, n) in enumerate(zip(DOSES, noisy, strict=True)):
                _show(axes[r, j + 1], n, f"noisy, {d:g} e/px{tag}", zoom)
            inst = base.instances.astype(float)
            inst[inst == 0] = np.nan
            _show(
                axes[r, 4],
                base.semantic,
                f"mask: {base.instances.max()} particles{tag}",
                zoom,
                cmap="gray",
                vmin=0,
                vmax=2,
            )
            shown = inst if zoom is None else inst[zoom]
            axes[r, 4].imshow(shown, cmap="tab20", alpha=0.5, interpolation="nearest")
        print(kind, f"{base.pixel_size_nm:.3f} nm/px, {base.instances.max()} particles")
    fig.suptitle(
        f"napari-temseg simulator: HAADF-STEM (rows 1-2) and HRTEM (rows 3-4), "
        f"{args.size}² px; doses {', '.join(f'{d:g}' for d in DOSES)} e/px; full distortion set",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    _save(fig, outdir / "simulator_doses.png", dpi=80, grey=False)
    print("wrote", outdir / "simulator_doses.png")
    gallery(outdir / "simulator_gallery.png", args.size)


def gallery(out: Path, size: int, n: int = 6) -> None:
    """``n`` random draws per kind with every parameter random (defaults of ``simulate``)."""
    fig, axes = plt.subplots(4, n, figsize=(3 * n, 12.6))
    for row, kind in enumerate(("stem", "hrtem")):
        for i in range(n):
            s = simulate(kind, size, seed=1000 + i)
            sp = s.params["specimen"]
            mode = f", {sp['contrast_mode']}" if kind == "hrtem" else ""
            _show(
                axes[2 * row, i],
                s.noisy,
                f"{kind.upper()} {s.pixel_size_nm:.3f} nm/px, {s.dose:.0f} e/px",
            )
            _show(
                axes[2 * row + 1, i],
                s.clean,
                f"clean: {sp['layout']}, {sp['n_particles']} particles{mode}",
            )
    fig.suptitle("Random draws of simulate(kind, size) (noisy above, clean below)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    _save(fig, out, dpi=70, grey=True)
    print("wrote", out)


if __name__ == "__main__":
    main()
