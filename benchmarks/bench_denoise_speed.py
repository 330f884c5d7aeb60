"""Denoising speed and peak memory of the default bundled model.

    python benchmarks/bench_denoise_speed.py                 # CPU, 2 threads
    python benchmarks/bench_denoise_speed.py --device cuda   # GPU throughput as well

Measures, end to end through ``engine.denoise`` (normalisation, tiling, blending):
- megapixels per second and seconds for one 2048x2048 frame (target: <= 10 s on 2 CPU
  threads), for a few tile sizes;
- peak resident memory (VmHWM, reset just before denoising) of a fresh subprocess that denoises one
  8192x8192 float32 image (target: < 2.5 GB), next to the same subprocess's peak
  before denoising (Python, torch and the 256 MB input alone).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from bench_denoise_quality import add_orientations

from napari_temseg.engine import denoise, describe_device, select_device
from napari_temseg.models import DEFAULT_DENOISER, load_model

# The child reads its own high-water mark (VmHWM) from /proc: ru_maxrss would also count
# the parent's memory at fork, which Linux keeps across exec. The input is made in float32
# pieces so that making it does not set the peak; VmHWM is reset before denoising.
MEMORY_CHILD = """
import sys, json, numpy as np, torch
torch.set_num_threads({threads})
from napari_temseg.engine import denoise
from napari_temseg.models import load_model
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
model = load_model({model!r}, {device!r})
rng = np.random.default_rng(0)
img = np.empty((8192, 8192), np.float32)
for i in range(0, 8192, 512):
    img[i:i + 512] = rng.poisson(50.0, size=(512, 8192))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
out = denoise(img, model, device={device!r}, tile={tile})
print(json.dumps({{"before_mb": before, "peak_mb": status("VmHWM"),
                   "finite": bool(np.isfinite(out).all())}}))
"""


def frame(size: int, seed: int = 0) -> np.ndarray:
    from napari_temseg.synth import simulate

    return simulate("stem", size, dose=100.0, seed=seed).noisy


def throughput(
    img: np.ndarray,
    model,
    device: str,
    tile: int,
    batch: int | None,
    repeats: int,
    tta: bool | int = False,
) -> float:
    """Best wall time of ``repeats`` full denoising runs (after one warm-up run)."""
    denoise(img[:512, :512], model, device=device, tile=tile, batch_size=batch, tta=tta)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        denoise(img, model, device=device, tile=tile, batch_size=batch, tta=tta)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=DEFAULT_DENOISER)
    p.add_argument("--tiles", default="256,512")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--gpu-size", type=int, default=8192)
    add_orientations(p, "time the 2048² frame")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = select_device(args.device)
    device = str(dev)
    model = load_model(args.model, device)
    results: dict = {
        "device": describe_device(dev),
        "model": args.model,
        "torch": torch.__version__,
    }
    print(f"# {args.model} on {results['device']}, torch {torch.__version__}")
    img = frame(2048)
    print("| frame | tile | batch | seconds | MP/s |\n|---|---|---|---|---|")
    for tile in (int(t) for t in args.tiles.split(",")):
        secs = throughput(img, model, device, tile, None, args.repeats)
        mps = img.size / secs / 1e6
        results[f"2048_tile{tile}"] = {"seconds": secs, "mp_per_s": mps}
        print(f"| 2048² | {tile} | auto | {secs:.2f} | {mps:.2f} |", flush=True)
        for n in sorted(set(args.orientations)):
            secs = throughput(img, model, device, tile, None, args.repeats, tta=n)
            key = f"2048_tile{tile}_tta" + ("" if n == 8 else str(n))
            results[key] = {"seconds": secs, "mp_per_s": img.size / secs / 1e6}
            print(
                f"| 2048², {n} orientations | {tile} | auto | {secs:.2f} | "
                f"{img.size / secs / 1e6:.2f} |"
            )
    if dev.type == "cuda":
        big = np.tile(img, (args.gpu_size // 2048, args.gpu_size // 2048))
        for tile, batch in ((256, 64), (512, 32), (1024, 8), (2048, 2)):
            secs = throughput(big, model, device, tile, batch, args.repeats)
            mps = big.size / secs / 1e6
            results[f"{args.gpu_size}_tile{tile}_batch{batch}"] = {"seconds": secs, "mp_per_s": mps}
            print(f"| {args.gpu_size}² | {tile} | {batch} | {secs:.3f} | {mps:.1f} |", flush=True)
    if not args.no_memory:
        code = MEMORY_CHILD.format(threads=args.threads, model=args.model, device=device, tile=256)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        mem["seconds"] = time.perf_counter() - t0
        results["memory_8192"] = mem
        print(
            f"\n8192² float32 on {device}: peak RSS {mem['peak_mb']:.0f} MB "
            f"(before denoising: {mem['before_mb']:.0f} MB), {mem['seconds']:.0f} s, finite={mem['finite']}"
        )
    print("\n" + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
