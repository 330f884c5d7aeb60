"""The headless end-to-end demo (``temseg demo``): what the plugin does, on simulated data.

The first command a user runs should show the whole loop, so the demo simulates a noisy
HAADF-STEM micrograph with its ground truth, denoises it with the bundled model, paints a
few strokes per class (drawn from the ground truth, as a careful user would), fine-tunes
the denoiser into a segmenter for a few seconds, segments the image and measures its
particles. Every result is written as a calibrated TIFF or CSV beside an overview figure
and a ``summary.json`` that compares each stage with the truth. Each stage calls the same
library functions as the napari widgets.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEMO_SEED = 7
DEMO_SIZE = 512
DEMO_DOSE = 20.0
#: a short fine-tuning (about 10 s on two CPU cores): the class head is fitted to the strokes
#: first (engine/probe.py). Steps, not a time budget: the demo's numbers must not depend on
#: how busy the machine is (9 steps in a 30 s budget on a loaded one gave Dice 0.75, not 0.97)
DEMO_STEPS = 40


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB with the reference's robust range (0.1-99.9 percentile) as peak."""
    lo, hi = np.percentile(reference, [0.1, 99.9])
    mse = float(np.mean((reference.astype(np.float64) - estimate) ** 2))
    return 10 * math.log10((hi - lo) ** 2 / mse) if mse > 0 else math.inf


def run_demo(outdir: str | Path, log: Callable[[str], Any] = print) -> dict[str, Any]:
    from napari_temseg.engine import denoise
    from napari_temseg.io import write_image, write_labels
    from napari_temseg.models import DEFAULT_DENOISER, list_models
    from napari_temseg.synth import simulate

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"outputs": {}}
    t0 = time.perf_counter()

    s = simulate(kind="stem", size=DEMO_SIZE, dose=DEMO_DOSE, seed=DEMO_SEED)
    scale = (s.pixel_size_nm, s.pixel_size_nm)
    about = {"source": "napari-temseg simulator", "dose_e_per_px": s.dose, "seed": DEMO_SEED}
    summary["sample"] = {"kind": s.kind, "pixel_size_nm": s.pixel_size_nm, "dose": s.dose}
    summary["outputs"]["noisy"] = write_image(out / "noisy.tif", s.noisy, scale, about)[0]
    summary["outputs"]["clean"] = write_image(out / "clean.tif", s.clean, scale, about)[0]
    summary["outputs"]["truth"] = write_labels(
        out / "ground_truth.tif", s.recorded_semantic, scale, class_names=["support", "particle"]
    )[0]
    log(f"[demo] simulated a {DEMO_SIZE}² HAADF-STEM image at {s.dose:g} e/px")

    denoised = None
    if any(m.name == DEFAULT_DENOISER for m in list_models()):
        t = time.perf_counter()
        denoised = denoise(s.noisy, DEFAULT_DENOISER, device="auto")
        summary["denoise"] = {
            "model": DEFAULT_DENOISER,
            "seconds": round(time.perf_counter() - t, 2),
            "psnr_noisy_db": round(psnr(s.clean, s.noisy), 2),
            "psnr_denoised_db": round(psnr(s.clean, denoised), 2),
        }
        summary["outputs"]["denoised"] = write_image(
            out / "denoised.tif", denoised, scale, {**about, "denoised_with": DEFAULT_DENOISER}
        )[0]
        d = summary["denoise"]
        log(
            f"[demo] denoised in {d['seconds']} s: PSNR {d['psnr_noisy_db']} dB -> "
            f"{d['psnr_denoised_db']} dB against the clean image"
        )
    else:
        log(f"[demo] bundled model {DEFAULT_DENOISER!r} not installed: skipping denoising")

    strokes, labels = _segment(s, out, summary, log)
    _measure(s, labels, out, summary, log)
    summary["outputs"]["overview"] = str(
        _overview(out / "overview.png", s, denoised, strokes, labels)
    )
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"[demo] results in {out.resolve()} (overview.png, summary.json)")
    return summary


def _segment(sample, out: Path, summary: dict, log: Callable[[str], Any]) -> tuple:
    """Strokes -> fine-tuned segmenter -> labels of the whole image, scored on the truth."""
    from napari_temseg.engine.finetune import FinetuneConfig, dice_per_class, finetune
    from napari_temseg.engine.segment import segment
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import write_labels

    names = ["support", "particle"]
    strokes = scribbles_from_mask(sample.recorded_semantic, per_class=4, length=30, seed=0)
    cfg = FinetuneConfig(steps=DEMO_STEPS, seed=DEMO_SEED)
    result = finetune(
        [sample.noisy], [strokes], names, "auto", cfg, pixel_sizes=[sample.pixel_size_nm]
    )
    labels = segment(sample.noisy, (result.model, result.meta), pixel_size_nm=sample.pixel_size_nm)
    dice = dice_per_class(labels, sample.recorded_semantic, len(names))
    summary["segment"] = {
        "init": result.meta.get("source_model"),
        "stroke_pixels": int((strokes > 0).sum()),
        "steps": result.steps_done,
        "seconds": round(result.elapsed_s, 2),
        "dice_vs_truth": {
            n: None if d is None else round(d, 3) for n, d in zip(names, dice, strict=True)
        },
    }
    scale = (sample.pixel_size_nm, sample.pixel_size_nm)
    summary["outputs"]["strokes"] = write_labels(out / "strokes.tif", strokes, scale, names)[0]
    summary["outputs"]["segmentation"] = write_labels(
        out / "segmentation.tif", labels, scale, class_names=names
    )[0]
    share = 100 * (strokes > 0).mean()
    log(
        f"[demo] fine-tuned {summary['segment']['init']} into a segmenter from strokes on "
        f"{share:.1f} % of the pixels ({result.steps_done} steps, {result.elapsed_s:.0f} s); "
        f"particle Dice {dice[1]:.2f} against the truth"
    )
    return strokes, labels


def _measure(sample, labels: np.ndarray, out: Path, summary: dict, log) -> None:
    """Particles of the segmentation and of the truth, measured the same way."""
    from napari_temseg.engine.measure import measure, write_csv

    scale = (sample.pixel_size_nm, sample.pixel_size_nm)
    found = measure(labels, scale=scale, return_labels=False)
    truth = measure(sample.recorded_semantic, scale=scale, return_labels=False).summary
    mine = found.summary
    key = "mean_equivalent_diameter_nm"
    summary["measure"] = {
        "count": mine["count"],
        "count_truth": truth["count"],
        key: round(mine[key], 3),
        f"{key}_truth": round(truth[key], 3),
    }
    summary["outputs"]["particles"] = str(
        write_csv(found.table, out / "particles.csv", overwrite=True)
    )
    log(
        f"[demo] measured {mine['count']} particles (truth: {truth['count']}), mean "
        f"equivalent diameter {mine[key]:.2f} nm (truth: {truth[key]:.2f} nm)"
    )


def _overview(
    path: Path,
    sample,
    denoised: np.ndarray | None,
    strokes: np.ndarray,
    labels: np.ndarray,
) -> Path:
    import matplotlib.pyplot as plt

    fig = overview_figure(sample, denoised, strokes, labels)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def overview_figure(
    sample, denoised: np.ndarray | None, strokes: np.ndarray, labels: np.ndarray
) -> Any:
    """The demo's figure: images, strokes, segmentation, truth; laid out so no title is cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from napari_temseg.display import display_limits

    classes = ListedColormap(["#1f77b4", "#ff7f0e"])  # support, particle: the dock's colours
    panels = [("noisy + strokes", sample.noisy), ("clean (truth)", sample.clean)]
    if denoised is not None:
        panels.insert(1, ("denoised", denoised))
    n = len(panels) + 2
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.0), layout="constrained")
    for ax, (title, img) in zip(axes, panels, strict=False):
        lo, hi = display_limits(img)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
    painted = np.ma.masked_equal(strokes, 0)
    axes[0].imshow(painted, cmap=classes, vmin=1, vmax=2, interpolation="nearest")
    for ax, (title, mask) in zip(
        axes[-2:],
        (("segmentation", labels), ("ground truth", sample.recorded_semantic)),
        strict=True,
    ):
        ax.imshow(mask, cmap=classes, vmin=1, vmax=2, interpolation="nearest")
        ax.set_title(title)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("temseg demo: blue support, orange particle", fontsize=10)
    return fig
