"""Pretraining on a user's own image: PSNR versus training time, and the viewer's stalls.

    xvfb-run -a python benchmarks/bench_pretrain.py                  # ~10 min on 2 CPU threads
    xvfb-run -a python benchmarks/bench_pretrain.py --steps 100 --no-stalls   # quick look

The "user's image" is a real HRSTEM frame (``tkrem_hrstem_example.ser`` from
../shared/testdata, 1024², uint16), a kind no bundled model was trained on (the bundled
denoisers learn from the simulator only). Its top 70 % is what the user pretrains on (the
engine holds out the bottom strip of that for validation); the bottom 30 % is never seen
and is the test: a copy of it at 10 % of its own estimated dose (Poisson) is denoised and
compared with the original frame (PSNR in dB, with the original's 0.5-99.5 percentile range
as peak). Both methods start from scratch; when a bundled denoiser is installed it is
measured as is and after pretraining on the user's image. Validation PSNR versus training
time comes from the runs' own validation events (noisy copies of the held-out strip).

The stall measurement starts the Pretrain widget in a napari viewer, lets it train, and
records the largest gap between ticks of a 10 ms QTimer (the viewer's event-loop stalls).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    lo, hi = np.percentile(ref, [0.5, 99.5])
    mse = float(np.mean(((pred - ref) / (hi - lo)) ** 2))
    return 10 * math.log10(1 / mse)


def corrected(p: float, ceiling: float) -> str:
    """PSNR against the unknown clean image: the reference's own noise taken out of the MSE
    (its input copy is a thinned version of the reference, so this is an estimate)."""
    mse = 10 ** (-p / 10) - 10 ** (-ceiling / 10)
    return f"{10 * math.log10(1 / mse):.2f}" if mse > 0 else "-"


def quality(args: argparse.Namespace) -> dict:
    from scipy import ndimage

    from napari_temseg.engine import denoise
    from napari_temseg.engine.pretrain import PretrainConfig, estimate_gain, run_pretrain
    from napari_temseg.io import read
    from napari_temseg.models import list_models

    frame = np.asarray(read(TESTDATA / args.file)[0].data, np.float32)
    cut = int(frame.shape[0] * 0.7)
    train_part, test_ref = frame[:cut], frame[cut:]
    est = estimate_gain(frame)
    rng = np.random.default_rng(123)
    e = est.electrons(test_ref)
    f = args.fraction
    test_in = rng.poisson(e * f).astype(np.float32) * np.float32(est.gain / f) + est.offset
    out: dict = {
        "file": args.file,
        "frame_dose_e_per_px": est.dose,
        "gain_fitted": est.fitted,
        "test_dose_e_per_px": est.dose * f,
        "rows": {},
        "curves": {},
    }
    rows = out["rows"]
    # the reference is itself a noisy frame: even the true clean image would score only
    # this (its shot-noise variance gain * (value - offset) sets the floor of the error)
    lo, hi = np.percentile(test_ref, [0.5, 99.5])
    ref_var = float(np.mean(est.gain * np.clip(test_ref - est.offset, 0, None)))
    rows["ceiling (the reference's own shot noise)"] = {
        "psnr": 10 * math.log10((hi - lo) ** 2 / ref_var),
        "train_s": 0,
    }
    rows["noisy input"] = {"psnr": psnr(test_in, test_ref), "train_s": 0}
    rows["Gaussian filter (sigma 1 px)"] = {
        "psnr": psnr(ndimage.gaussian_filter(test_in, 1.0), test_ref),
        "train_s": 0,
    }
    bundled = [m.name for m in list_models("denoise")]
    if bundled:
        name = "stem-denoise" if "stem-denoise" in bundled else bundled[0]
        rows[f"bundled {name}, as is"] = {
            "psnr": psnr(denoise(test_in, name, device="cpu"), test_ref),
            "train_s": 0,
        }
    runs = [] if args.only_bundled else [("poisson", "scratch"), ("pix2pix", "scratch")]
    if bundled:
        runs.append(("poisson", "auto"))
    for method, init in runs:
        label = f"{method}, {'from scratch' if init == 'scratch' else 'from bundled'}"
        path = Path(args.work) / f"{method}-{init}.safetensors"
        cfg = PretrainConfig(
            method=method,
            steps=args.steps,
            patch=args.patch,
            batch_size=args.batch,
            init=init,
            base=args.base,
            val_every=max(1, args.steps // 6),
            device="cpu",
            output=str(path),
            preview_every_s=0,
            seed=0,
        )
        curve = []

        def log(ev, curve=curve, label=label) -> None:
            if ev.kind == "val":
                curve.append((round(ev.elapsed_s, 1), ev.run_step, round(ev.val_psnr, 2)))
                print(
                    f"  {label}: step {ev.run_step} {ev.elapsed_s:.0f} s val {ev.val_psnr:.2f} dB"
                )

        t0 = time.perf_counter()
        result = run_pretrain([train_part], cfg, [args.file], log)
        secs = time.perf_counter() - t0
        restored = denoise(test_in, result.path, device="cpu")
        rows[label] = {"psnr": psnr(restored, test_ref), "train_s": round(secs, 1)}
        out["curves"][label] = curve
        print(f"{label}: test PSNR {rows[label]['psnr']:.2f} dB after {secs:.0f} s")
    return out


def stalls(seconds: float, threads: int) -> dict:
    """Largest gaps of a 10 ms QTimer in a napari viewer while the Pretrain widget trains,
    from its first training step on (``bench_stalls.py`` measures from the click, and
    every other kind of job)."""
    import napari
    from bench_stalls import Ticks, spin

    from napari_temseg.widgets.pretrain import PretrainWidget

    viewer = napari.Viewer(show=False)
    w = PretrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.poisson(40, (512, 512)).astype(np.float32), name="img")
    w._layers.value = ["img"]
    w._patch.value, w._batch.value, w._steps.value = 96, 8, 100_000
    w._device.value, w._start_model.value = "cpu", "scratch"
    w.advanced = {"preview_every_s": 2.0, "val_every": 20, "val_size": 16}
    w.start()
    spin(lambda: bool(w.curves.series("training")[0]), 120)
    ticks = Ticks()
    ticks.start()
    spin(lambda: False, seconds)
    gaps = ticks.stop()
    steps = w.curves.series("training")[0]
    w.stop()
    spin(lambda: not w.running, 120)
    viewer.close()
    return {
        "seconds": seconds,
        "ticks": gaps["ticks"],
        "max_gap_ms": gaps["max_ms"],
        "p99_gap_ms": gaps["p99_ms"],
        "median_gap_ms": gaps["median_ms"],
        "gaps_over_100_ms": gaps["over_100_ms"],
        "steps_seen": steps[-1] if steps else 0,
        "child_threads": threads,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default="tkrem_hrstem_example.ser")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--fraction", type=float, default=0.1, help="test dose / the frame's dose")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stall-seconds", type=float, default=30.0)
    p.add_argument("--no-stalls", action="store_true")
    p.add_argument("--stalls-only", action="store_true")
    p.add_argument("--only-bundled", action="store_true", help="skip the from-scratch runs")
    p.add_argument("--work", default="/tmp/bench_pretrain")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    report: dict = {
        "torch_threads": args.threads,
        "steps": args.steps,
        "patch": args.patch,
        "batch": args.batch,
        "base": args.base,
    }
    if not args.no_stalls:
        report["stalls"] = stalls(args.stall_seconds, args.threads)
        print("stalls:", report["stalls"])
    if args.stalls_only:
        pass
    elif (TESTDATA / args.file).is_file():
        report["quality"] = quality(args)
    else:
        print(f"{TESTDATA / args.file} not found: skipping the quality benchmark")
    if "quality" in report:
        q = report["quality"]
        print(
            f"\n{q['file']}: frame dose {q['frame_dose_e_per_px']:.1f} e/px, "
            f"test at {q['test_dose_e_per_px']:.2f} e/px"
        )
        ceiling = q["rows"]["ceiling (the reference's own shot noise)"]["psnr"]
        print("| method | test PSNR (dB) | vs clean, estimated (dB) | training time (s) |")
        print("| --- | --- | --- | --- |")
        for name, row in q["rows"].items():
            print(
                f"| {name} | {row['psnr']:.2f} | {corrected(row['psnr'], ceiling)} | "
                f"{row['train_s']} |"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
