"""Time the simulator: ms per image (specimen + full distortion set) for each kind and size.

Usage: python benchmarks/bench_synth.py [--sizes 256 1024] [--repeat 5]
Runs on one core (the simulator is single-threaded numpy/scipy; FFTs use workers=1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_temseg.synth import DistortionConfig, distort, simulate, specimen


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up (imports, FFT plans)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts)), 1e3 * float(np.max(ts))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'kind':6} {'size':>5} {'what':28} {'median ms':>10} {'max ms':>8}")
    for kind in ("stem", "hrtem"):
        for size in args.sizes:
            seeds = iter(range(10_000))
            rows = [
                (
                    "simulate (random scene)",
                    lambda k=kind, s=size, it=seeds: simulate(k, s, seed=next(it)),
                ),
                (
                    "specimen only, 0.04 nm/px",
                    lambda k=kind, s=size: specimen(k, s, 0.04, np.random.default_rng(1)),
                ),
            ]
            ideal = specimen(kind, size, 0.04, np.random.default_rng(1))[0]
            full = DistortionConfig.full()
            for f in (
                "xray",
                "dead_pixels",
                "dead_columns",
                "row_jitter",
                "fly_back",
                "drift",
                "scan_blur",
                "camera_mtf",
            ):
                getattr(full, f).probability = 1.0
            rows.append(
                (
                    "distort, every distortion on",
                    lambda k=kind, i=ideal, c=full: distort(
                        i, 100.0, k, np.random.default_rng(2), c
                    ),
                )
            )
            for name, fn in rows:
                med, mx = _time(fn, args.repeat)
                print(f"{kind:6} {size:5d} {name:28} {med:10.1f} {mx:8.1f}")


if __name__ == "__main__":
    main()
