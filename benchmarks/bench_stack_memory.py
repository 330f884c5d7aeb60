"""Peak memory of denoising a long stack: streamed to disk frame by frame vs. in memory.

    python benchmarks/bench_stack_memory.py --frames 50 200 --size 256

For each stack length, a fresh process runs (a) ``temseg denoise`` on an uncompressed
stack TIFF (read lazily when large, denoised and written one frame at a time through
``io.FrameStream``) and (b) the same file read into memory and passed whole to
``engine.denoise``, which returns the whole float32 result. Peak resident memory is
sampled in that process (see SAMPLER). Streaming should stay flat as the stack grows; in memory
grows with input + output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Peak memory is sampled from /proc/self/status every 20 ms in the child: ru_maxrss would
# also count the parent's memory at fork (Linux keeps it across exec). RssAnon is what
# the process itself allocated; VmRSS adds file-backed pages (a memory-mapped input),
# which the kernel can drop at any time.
SAMPLER = """
import threading, time
_peak = {"VmRSS": 0, "RssAnon": 0}
def _status():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in _peak:
            out[key] = int(line.split()[1]) / 1024
    return out
def _sample():
    while True:
        for k, v in _status().items():
            _peak[k] = max(_peak[k], v)
        time.sleep(0.02)
threading.Thread(target=_sample, daemon=True).start()
"""

STREAMED = (
    SAMPLER
    + """
import sys
from napari_temseg.cli import main
rc = main(["denoise", sys.argv[1], "-o", sys.argv[2], "--device", "cpu"])
time.sleep(0.05)
print(_peak["RssAnon"], _peak["VmRSS"], rc)
"""
)

IN_MEMORY = (
    SAMPLER
    + """
import sys
import numpy as np, tifffile
from napari_temseg.engine import denoise
stack = tifffile.imread(sys.argv[1])
out = denoise(stack, "stem-denoise", device="cpu")
tifffile.imwrite(sys.argv[2] + "/whole.tif", out)
time.sleep(0.05)
print(_peak["RssAnon"], _peak["VmRSS"], int(not np.isfinite(out).all()))
"""
)


def run(code: str, stack: Path, out: Path, threads: int) -> tuple[float, float, float]:
    out.mkdir(parents=True, exist_ok=True)
    env_code = f"import torch; torch.set_num_threads({threads})\n" + code
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", env_code, str(stack), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    anon, rss, rc = r.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise RuntimeError(f"run failed: {r.stderr[-500:]}")
    return float(anon), float(rss), time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[50, 200])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from napari_temseg.io import write_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        for n in a.frames:
            stack = work / f"stack{n}.tif"
            data = rng.poisson(50.0, (n, a.size, a.size)).astype(np.float32)
            write_image(stack, data, scale=(1.0, 0.1, 0.1))
            del data
            streamed = run(STREAMED, stack, work / f"s{n}", a.threads)
            in_memory = run(IN_MEMORY, stack, work / f"m{n}", a.threads)
            mb = n * a.size * a.size * 4 / 2**20
            rows.append((n, mb, *streamed, *in_memory))
            print(json.dumps({"frames": n, "mb": mb, "streamed": streamed, "in_memory": in_memory}))
    print(
        f"\n| frames ({a.size}²) | float32 stack (MB) | streamed: peak anon / peak RSS (MB), "
        "time (s) | in memory: peak anon / peak RSS (MB), time (s) |\n|---|---|---|---|"
    )
    for n, mb, sa, sr, st, ma, mr, mt in rows:
        print(f"| {n} | {mb:.0f} | {sa:.0f} / {sr:.0f}, {st:.0f} | {ma:.0f} / {mr:.0f}, {mt:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
