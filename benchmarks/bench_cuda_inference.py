"""CUDA inference of the bundled denoisers: throughput, mixed precision, out-of-memory fallback.

    python benchmarks/bench_cuda_inference.py --json /tmp/cuda.json     # needs a CUDA GPU

Through ``engine.predict_tiled`` exactly as the Denoise dock and ``temseg denoise`` call
it, on an 8192² frame: megapixels per second for tile sizes 256-1024 with the automatic
batch, with bf16 autocast (the default on CUDA) and without it, and how far bf16 moves the
result (relative L2 difference to float32). Then the out-of-memory path: the process is
limited to a small share of the card and asked for a batch that cannot fit; the run must
finish by halving the batch, with the same result. CI never has a GPU: this is run by
``scripts/gpu_session.sh`` on a lent machine, and its numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_temseg.engine import Normalization, describe_device, predict_tiled
from napari_temseg.models import load_model
from napari_temseg.synth import simulate


def frame(size: int) -> np.ndarray:
    """A realistic test frame: simulated low-dose STEM tiles repeated to ``size``."""
    s = simulate("stem", 1024, dose=20.0, seed=5).noisy
    return np.tile(s, (size // 1024, size // 1024)).astype(np.float32)


def run(img, model, norm, tile: int, batch: int | None, amp: bool) -> tuple[float, np.ndarray]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = predict_tiled(
        img,
        model,
        tile=tile,
        overlap=32,
        device="cuda",
        batch_size=batch,
        normalization=norm,
        amp=amp,
    )
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="stem-denoise")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure")
        return 0
    model, meta = load_model(args.model, device="cuda")
    norm = Normalization.from_dict(meta.get("normalization"))
    img = frame(args.size)
    mp = img.size / 1e6
    res: dict = {"device": describe_device("cuda"), "torch": torch.__version__, "frame": args.size}
    run(img[:1024, :1024], model, norm, 256, None, True)  # warm-up: kernels, cuDNN plans
    print(f"# {args.model} on {res['device']}, {args.size}² frame\n")
    print("| tile | batch | autocast | seconds | MP/s |\n|---|---|---|---|---|")
    ref = None
    for tile in (256, 512, 1024):
        for amp in (True, False):
            secs, out = min(
                (run(img, model, norm, tile, None, amp) for _ in range(2)), key=lambda r: r[0]
            )
            if tile == 512 and not amp:
                ref = out
            res[f"tile{tile}_{'bf16' if amp else 'fp32'}"] = {
                "seconds": secs,
                "mp_per_s": mp / secs,
            }
            print(
                f"| {tile} | auto | {'bf16' if amp else 'off'} | {secs:.3f} | {mp / secs:.1f} |",
                flush=True,
            )
    _, bf = run(img, model, norm, 512, None, True)
    rel = float(np.linalg.norm(bf - ref) / np.linalg.norm(ref))
    res["bf16_vs_fp32_rel_l2"] = rel
    print(f"\nbf16 vs fp32 (tile 512): relative L2 difference {rel:.2e}")
    # out of memory: cap the process at ~3 GB and ask for 64 tiles of 1024² at once
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, 3e9 / total))
    t0 = time.perf_counter()
    try:
        out = predict_tiled(
            img,
            model,
            tile=1024,
            overlap=32,
            device="cuda",
            batch_size=64,
            normalization=norm,
            amp=False,
        )
        same = float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-12))
        res["oom_fallback"] = {
            "finished": True,
            "seconds": time.perf_counter() - t0,
            "max_rel_diff_to_tile512": same,
        }
        print(
            f"OOM fallback: finished in {time.perf_counter() - t0:.2f} s, "
            f"max difference to the uncapped run {same:.1e} of the range"
        )
    except torch.cuda.OutOfMemoryError as exc:
        res["oom_fallback"] = {"finished": False, "error": str(exc).splitlines()[0]}
        print(f"OOM fallback FAILED: {exc}")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
