"""Segment the frames you did not paint: sessions that differ from the painted one.

    python benchmarks/bench_unseen_frames.py --kind stem --painted 2 --steps 600

A microscopist paints a few strokes on one to five frames of one session, then applies the
model to the rest of the series, and to the next session's frames. This paints ``--painted``
simulated frames of a reference session (imitated strokes, ``scribbles_from_mask``), trains
the fine-tuned U-Net (the Train dock's defaults, from ``--init``) and an ilastik-style random
forest on the same strokes, and scores the particle Dice on the full masks of unpainted
frames (seeds the painted frames do not use) of sessions that each change one thing:

- ``same``: the painted session's settings;
- ``dark``: a third of the dose (noisier), ``bright``: three times the dose with a detector
  gain of 3 and an offset of 20 % of the mean (a brighter session, as raw counts);
- ``gamma``: a detector response ``x ** 0.6`` (contrast compressed in the bright parts);
- ``drift``: a background ramp adding up to 60 % of the mean across the frame (thickness or
  illumination drift);
- ``magnified``: 1.5x the magnification (pixel size / 1.5, calibrated, so the segmenter can
  resample);
- ``blurred``: a Gaussian blur of 1.5 px (defocus or probe tail).

Also reports how often a frame comes back degenerate (one class over 97 % of the pixels
while the truth has both). Markdown on stdout, JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_finetune import add_segmenter_options, segmenter_options
from scipy import ndimage

from napari_temseg.engine.events import drain
from napari_temseg.engine.finetune import FinetuneConfig, Finetuner, dice_per_class
from napari_temseg.engine.prior import describe_balance
from napari_temseg.engine.segment import segment
from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.engine.tta import with_tta
from napari_temseg.synth import simulate

PIXEL = {"stem": 0.1, "hrtem": 0.05}


def session(name: str, kind: str, size: int, dose: float, seed: int):
    """(image, truth, pixel size nm) of one unpainted frame of session ``name``."""
    px = PIXEL[kind] / (1.5 if name == "magnified" else 1.0)
    d = dose / 3 if name == "dark" else dose * 3 if name == "bright" else dose
    s = simulate(kind, size, pixel_size_nm=px, dose=d, seed=seed)
    x = s.noisy.astype(np.float64)
    mean = float(np.mean(x)) or 1.0
    if name == "bright":
        x = 3 * x + 0.2 * mean
    elif name == "gamma":
        x = np.maximum(x, 0) ** 0.6
    elif name == "drift":
        ramp = np.linspace(0, 0.6 * mean, size)[None, :] * np.ones((size, 1))
        x = x + ramp
    elif name == "blurred":
        x = ndimage.gaussian_filter(x, 1.5)
    return x.astype(np.float32), s.recorded_semantic, px


SESSIONS = ("same", "dark", "bright", "gamma", "drift", "magnified", "blurred")


def forest(train_imgs, train_labels):
    from bench_finetune import fit_stroke_forest, forest_features

    rf = fit_stroke_forest(train_imgs, train_labels)

    def predict(img, _px):
        f = forest_features(img)
        return rf.predict(f.reshape(-1, f.shape[-1])).reshape(img.shape)

    return predict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=sorted(PIXEL), default="stem")
    p.add_argument("--init", default=None, help="default: the kind's bundled denoiser")
    p.add_argument("--painted", type=int, default=2)
    p.add_argument("--tests", type=int, default=2, help="unpainted frames per session")
    p.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--dose", type=float, default=100.0)
    p.add_argument("--strokes", type=int, default=4, help="strokes per class and frame")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--holdout-frames",
        type=int,
        default=FinetuneConfig.holdout_frames,
        help="validate on a whole painted frame from this many painted frames (0: never)",
    )
    p.add_argument("--invert", type=float, default=FinetuneConfig.invert_contrast)
    p.add_argument("--gamma", type=float, default=FinetuneConfig.gamma_jitter)
    p.add_argument("--blur", type=float, default=FinetuneConfig.blur_jitter)
    add_segmenter_options(p)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    init = a.init or f"{a.kind}-denoise"
    painted = [
        simulate(a.kind, a.size, pixel_size_nm=PIXEL[a.kind], dose=a.dose, seed=100 + i)
        for i in range(a.painted)
    ]
    imgs = [s.noisy.astype(np.float32) for s in painted]
    labels = [
        scribbles_from_mask(s.recorded_semantic, per_class=a.strokes, length=32, width=2, seed=i)
        for i, s in enumerate(painted)
    ]
    share = np.mean([(lab > 0).mean() for lab in labels])
    print(f"{a.kind}: {a.painted} painted frames ({share:.2%} of pixels), {a.tests} per session\n")

    t0 = time.perf_counter()
    cfg = FinetuneConfig(
        steps=a.steps,
        device="cpu",
        seed=a.seed,
        holdout_frames=a.holdout_frames,
        invert_contrast=a.invert,
        gamma_jitter=a.gamma,
        blur_jitter=a.blur,
        **segmenter_options(a),
    )
    tuner = Finetuner(imgs, labels, init=init, config=cfg, pixel_sizes=[PIXEL[a.kind]] * a.painted)
    result = drain(tuner.run())
    print(f"validated on {tuner.val_on}; kept {result.kept}\n")
    model = (tuner.best_model(), tuner.segmenter_meta())  # class-balanced, unless told not
    print(describe_balance(model[1].get("class_balance"), ["support", "particle"]) + "\n")
    unet_s = time.perf_counter() - t0

    def unet(img, px):
        return segment(img, model, device="cpu", pixel_size_nm=px)

    t0 = time.perf_counter()
    rf = forest(imgs, labels)
    rf_s = time.perf_counter() - t0

    methods = {f"fine-tuned U-Net ({init}, {a.steps} steps)": unet}
    if a.tta:
        averaged = with_tta(model)
        methods["same U-Net, 8 orientations averaged"] = lambda img, px: segment(
            img, averaged, device="cpu", pixel_size_nm=px
        )
    methods["random forest"] = rf
    results: dict[str, dict] = {m: {} for m in methods}
    degenerate = {m: 0 for m in methods}
    for name in ("painted", *SESSIONS):
        frames = (
            [(s.noisy, s.recorded_semantic, PIXEL[a.kind]) for s in painted]
            if name == "painted"
            else [session(name, a.kind, a.size, a.dose, 900 + j) for j in range(a.tests)]
        )
        for m, fn in methods.items():
            dice = []
            for img, truth, px in frames:
                pred = fn(img, px)
                dice.append(dice_per_class(pred, truth, 2)[1])
                both = (truth == 1).any() and (truth == 2).any()
                if name != "painted":
                    degenerate[m] += int(
                        both and max((pred == 1).mean(), (pred == 2).mean()) > 0.97
                    )
            results[m][name] = float(np.mean([d or 0.0 for d in dice]))
    # what a degenerate "everything is particle" answer scores, for reference
    every = []
    for name in SESSIONS:
        for j in range(a.tests):
            _, truth, _ = session(name, a.kind, a.size, a.dose, 900 + j)
            every.append(dice_per_class(np.full(truth.shape, 2), truth, 2)[1] or 0.0)
    print(
        "| method | painted frames | "
        + " | ".join(SESSIONS)
        + " | mean (unpainted) | degenerate frames |"
    )
    print("|---" * (len(SESSIONS) + 4) + "|")
    for m in methods:
        r = results[m]
        mean = float(np.mean([r[s] for s in SESSIONS]))
        r["mean"] = mean
        print(
            f"| {m} | {r['painted']:.3f} | "
            + " | ".join(f"{r[s]:.3f}" for s in SESSIONS)
            + f" | **{mean:.3f}** | {degenerate[m]} of {len(SESSIONS) * a.tests} |"
        )
    print(
        f"\nparticle Dice on unpainted frames; training {unet_s:.0f} s (U-Net), {rf_s:.0f} s (forest)"
    )
    if a.out:
        a.out.write_text(
            json.dumps(
                {"args": vars(a) | {"out": str(a.out)}, "dice": results, "degenerate": degenerate},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
