"""Fine-tuning a segmenter from strokes: pretrained vs scratch, vs a random forest, speed.

    python benchmarks/bench_finetune.py curves --kind stem --init PATH_OR_NAME --steps 300
    python benchmarks/bench_finetune.py images --kind stem --init NAME --counts 1 2 4
    python benchmarks/bench_finetune.py forest --kind hrtem
    python benchmarks/bench_finetune.py speed --init NAME          # 1024^2 (--kind), 2 threads
    python benchmarks/bench_finetune.py speed --init NAME --real   # a real 1024^2 frame
    python benchmarks/bench_finetune.py scales --kind stem --init none   # other magnifications

Every experiment uses the project's simulator with fixed seeds: training images (seeds
100+i) carry imitated user strokes (``scribbles_from_mask``: ``--strokes`` straight strokes
per class, never crossing a boundary), and Dice is measured on the full masks of separate
test images (seeds 900+i) at the same pixel size and dose. ``curves`` records the particle
Dice of the best-by-validation model against steps for a pretrained init and from scratch
(same strokes, same seed, same architecture); ``images`` the final Dice against the number
of labelled images; ``forest`` an ilastik-style baseline (scikit-image multi-scale
intensity/edge/texture features + scikit-learn random forest on the stroke pixels); ``speed``
the wall-clock time from pressing Train to a first preview and to particle Dice 0.9 on
a 1024x1024 STEM image. Results: Markdown on stdout, JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_temseg.engine.finetune import FinetuneConfig, Finetuner, dice_per_class
from napari_temseg.engine.segment import segment
from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.synth import simulate

PIXEL = {"stem": 0.1, "hrtem": 0.05}


def data(kind: str, n: int, seed0: int, size: int, dose: float, strokes: int):
    out = []
    for i in range(n):
        s = simulate(kind, size, pixel_size_nm=PIXEL[kind], dose=dose, seed=seed0 + i)
        lab = scribbles_from_mask(
            s.recorded_semantic, per_class=strokes, length=32, width=2, seed=i
        )
        out.append((s, lab))
    return out


def test_dice(model, meta, tests) -> list[float]:
    """Mean over test images of the per-class Dice on their full masks."""
    per = [
        dice_per_class(
            segment(s.noisy, (model, meta), device="cpu", tile=256), s.recorded_semantic, 2
        )
        for s, _ in tests
    ]
    return [float(np.mean([p[c] for p in per])) for c in range(2)]


def run_curve(train, tests, init, cfg: FinetuneConfig, eval_at: list[int]) -> list[dict]:
    """Dice of the best-so-far model at the given steps (one training run).

    "painted": on the full masks of the painted training images (the ilastik use: paint a
    few strokes, segment that image or stack); "other": on the unseen test images, which
    the simulator draws with other contrast settings (a harder, cross-image test).
    """
    tuner = Finetuner([s.noisy for s, _ in train], [lab for _, lab in train], init=init, config=cfg)
    points, t0 = [], time.perf_counter()
    gen = tuner.run()
    for ev in gen:
        if ev.kind == "val" and ev.step in eval_at:
            model, meta = tuner.best_model(), tuner.segmenter_meta()
            own, other = test_dice(model, meta, train), test_dice(model, meta, tests)
            points.append(
                {
                    "step": ev.step,
                    "painted_support": own[0],
                    "painted_particle": own[1],
                    "other_support": other[0],
                    "other_particle": other[1],
                    "train_s": time.perf_counter() - t0,
                    "val_dice": ev.val_dice,
                }
            )
            print(
                f"  {init!s:>24} step {ev.step:4d}: painted images particle {own[1]:.3f} "
                f"support {own[0]:.3f} | other images particle {other[1]:.3f} "
                f"support {other[0]:.3f}"
            )
    return points


def recipe(a) -> dict:
    return {
        "backbone_lr_scale": a.backbone_lr,
        "head_warmup": a.warmup,
        "freeze_encoder": a.freeze_encoder,
        "head_fit": not a.no_head_fit,
    }


def cmd_curves(a) -> dict:
    cfg = FinetuneConfig(
        steps=a.steps,
        val_every=25,
        first_val=25,
        device="cpu",
        patience=0,
        seed=a.seed,
        **recipe(a),
    )
    train = data(a.kind, a.images, 100, a.size, a.dose, a.strokes)
    tests = data(a.kind, a.tests, 900, a.size, a.dose, 1)
    eval_at = [s for s in (25, 50, 75, 100, 150, 200, 300, 400, 600, 800) if s <= a.steps]
    eval_at = sorted({*eval_at, a.steps})
    res = {}
    for init in a.inits or (a.init, "none"):
        res[str(init)] = run_curve(train, tests, init, cfg, eval_at)
    return res


def cmd_images(a) -> dict:
    cfg = FinetuneConfig(
        steps=a.steps, val_every=25, device="cpu", patience=0, seed=a.seed, **recipe(a)
    )
    tests = data(a.kind, a.tests, 900, a.size, a.dose, 1)
    res: dict = {}
    for n in a.counts:
        train = data(a.kind, n, 100, a.size, a.dose, a.strokes)
        for init in a.inits or (a.init, "none"):
            pts = run_curve(train, tests, init, cfg, [a.steps])
            res.setdefault(str(init), {})[n] = pts[-1]
    return res


def forest_features(img: np.ndarray) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    from napari_temseg.models.normalize import Normalization

    norm = Normalization()
    x = norm.apply(img.astype(np.float32), norm.stats(img))
    return multiscale_basic_features(
        x, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16
    )


def fit_stroke_forest(images, labels):
    """The ilastik-style baseline every benchmark compares with: a random forest on
    ``forest_features``, trained on the painted pixels (label > 0) only."""
    from sklearn.ensemble import RandomForestClassifier

    xs, ys = [], []
    for img, lab in zip(images, labels, strict=True):
        f = forest_features(img)
        xs.append(f[lab > 0])
        ys.append(lab[lab > 0])
    rf = RandomForestClassifier(n_estimators=100, max_depth=12, n_jobs=1, random_state=0)
    return rf.fit(np.concatenate(xs), np.concatenate(ys))


def add_segmenter_options(p: argparse.ArgumentParser) -> None:
    """The fine-tuning choices the unpainted-frame benchmarks (bench_acstem,
    bench_unseen_frames) compare; :func:`segmenter_options` turns them into config."""
    p.add_argument(
        "--average-late",
        type=float,
        default=FinetuneConfig.average_late,
        help="keep the mean of the weights of this last share of the run (0: the best "
        "validated; FinetuneConfig.average_late)",
    )
    p.add_argument(
        "--keep-stroke-balance",
        action="store_true",
        help="the U-Net without the class-balance correction (FinetuneConfig.class_balance)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="also score the U-Net averaged over eight orientations (engine.tta.with_tta)",
    )


def segmenter_options(a: argparse.Namespace) -> dict:
    """``FinetuneConfig`` keywords from :func:`add_segmenter_options`' arguments."""
    return {"class_balance": not a.keep_stroke_balance, "average_late": a.average_late}


def cmd_forest(a) -> dict:
    train = data(a.kind, a.images, 100, a.size, a.dose, a.strokes)
    tests = data(a.kind, a.tests, 900, a.size, a.dose, 1)
    t0 = time.perf_counter()
    rf = fit_stroke_forest([s.noisy for s, _ in train], [lab for _, lab in train])
    out = {"seconds": time.perf_counter() - t0}
    for name, images in (("painted", train), ("other", tests)):
        per = []
        for s, _ in images:
            f = forest_features(s.noisy)
            pred = rf.predict(f.reshape(-1, f.shape[-1])).reshape(s.noisy.shape)
            per.append(dice_per_class(pred, s.recorded_semantic, 2))
        d = [float(np.mean([p[c] for p in per])) for c in range(2)]
        print(f"  random forest, {name} images: particle {d[1]:.3f} support {d[0]:.3f}")
        out.update({f"{name}_support": d[0], f"{name}_particle": d[1]})
    return out


def cmd_scales(a) -> dict:
    """Train at one pixel size, segment other magnifications with and without resampling."""
    train = data(a.kind, 1, 100, a.size, a.dose, a.strokes)
    px = PIXEL[a.kind]
    cfg = FinetuneConfig(steps=a.steps, device="cpu", patience=0, seed=a.seed, **recipe(a))
    tuner = Finetuner(
        [s.noisy for s, _ in train],
        [lab for _, lab in train],
        init=a.init,
        config=cfg,
        pixel_sizes=[px],
    )
    for _ in tuner.run():
        pass
    seg = (tuner.best_model(), tuner.segmenter_meta())
    res = {}
    for factor in (0.5, 1.0, 2.0):
        per: dict[str, list] = {"resampled": [], "as is": []}
        for i in range(a.tests):
            t = simulate(a.kind, a.size, pixel_size_nm=px * factor, dose=a.dose, seed=900 + i)
            for name, p in (("resampled", t.pixel_size_nm), ("as is", None)):
                pred = segment(t.noisy, seg, device="cpu", pixel_size_nm=p)
                per[name].append(dice_per_class(pred, t.recorded_semantic, 2)[1])
        res[factor] = {k: float(np.mean(v)) for k, v in per.items()}
        print(
            f"  pixel size x{factor}: particle Dice resampled {res[factor]['resampled']:.3f}, "
            f"as is {res[factor]['as is']:.3f}"
        )
    return res


TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def real_speed_frame(strokes: int):
    """A real 1024² HRSTEM frame (tkrem_hrstem_example.ser) with imitated strokes.

    Classes: the crystal (1) and the darkest 12 % of the frame smoothed at 16 px (2: the
    thin edge and two holes). That threshold is no ground truth: its Dice says only that
    the preview is a sensible mask; the time is the measurement.
    """
    from types import SimpleNamespace

    from scipy import ndimage

    from napari_temseg.io import read

    frame = np.asarray(read(TESTDATA / "tkrem_hrstem_example.ser")[0].data, np.float32)
    smooth = ndimage.gaussian_filter(frame, 16)
    mask = np.where(smooth > np.percentile(smooth, 12), 1, 2).astype(np.uint8)
    lab = scribbles_from_mask(mask, per_class=strokes, length=32, width=2, seed=0)
    return SimpleNamespace(noisy=frame, recorded_semantic=mask), lab


def cmd_speed(a) -> dict:
    torch.set_num_threads(2)
    if a.real:
        if not (TESTDATA / "tkrem_hrstem_example.ser").is_file():
            print(f"no {TESTDATA / 'tkrem_hrstem_example.ser'}: nothing to measure")
            return {}
        s, lab = real_speed_frame(a.strokes)
    else:
        ((s, lab),) = data(a.kind, 1, a.image_seed, 1024, a.dose, a.strokes)
    cfg = FinetuneConfig(
        steps=a.steps,
        val_every=10,
        first_val=5,
        device="cpu",
        patience=0,
        batch_size=a.batch,
        patch=a.patch,
        seed=a.seed,
        **recipe(a),
    )
    t0 = time.perf_counter()
    tuner = Finetuner([s.noisy], [lab], init=a.init, config=cfg)
    first_preview = reached = None
    log = []
    for ev in tuner.run():
        if ev.kind == "val" and ev.improved:
            seg = segment(s.noisy, (tuner.best_model(), tuner.segmenter_meta()), device="cpu")
            now = time.perf_counter() - t0
            d = dice_per_class(seg, s.recorded_semantic, 2)
            log.append({"step": ev.step, "s": now, "particle": d[1], "support": d[0]})
            print(f"  step {ev.step}: {now:.1f} s particle Dice {d[1]:.3f}")
            first_preview = first_preview or now
            if d[1] >= 0.9 and reached is None:
                reached = now
                break
    return {"first_preview_s": first_preview, "dice_0.9_s": reached, "log": log}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("curves", "images", "forest", "speed", "scales"))
    p.add_argument("--kind", choices=("stem", "hrtem"), default="stem")
    p.add_argument("--init", default="auto", help="denoiser name or checkpoint path")
    p.add_argument("--inits", nargs="+", help="compare these inits (default: --init and none)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--tests", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--dose", type=float, default=200.0)
    p.add_argument("--strokes", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone-lr", type=float, default=FinetuneConfig.backbone_lr_scale)
    p.add_argument("--warmup", type=int, default=FinetuneConfig.head_warmup)
    p.add_argument("--freeze-encoder", action="store_true")
    p.add_argument(
        "--no-head-fit", action="store_true", help="start the new head at zero (the old recipe)"
    )
    p.add_argument("--image-seed", type=int, default=100, help="speed: the image's seed")
    p.add_argument(
        "--real", action="store_true", help="speed: a real 1024² HRSTEM frame from ../shared"
    )
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"## {a.what}: {vars(a)}")
    commands = {
        "curves": cmd_curves,
        "images": cmd_images,
        "forest": cmd_forest,
        "speed": cmd_speed,
        "scales": cmd_scales,
    }
    res = commands[a.what](a)
    if a.out:
        a.out.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(a).items()}, "results": res},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
