"""Segmenting at scale: a frame larger than memory, a long stack, and a 2-worker cluster.

    python benchmarks/bench_scale.py                      # 8192² and 16384², 500 x 512², 8 files
    python benchmarks/bench_scale.py --sizes 4096 --frames 50 --files 4   # quick

Every row runs ``temseg segment`` (the command a user runs) in a fresh process with a
segmenter fine-tuned here from ``stem-denoise`` (the default U-Net), on 2 CPU threads:

1. one 2D float32 frame per size, uncompressed TIFF (read through a memory map), segmented
   band by band (``engine.large``) and written tile by tile; for sizes up to
   ``--whole-max`` also the old way for comparison: read whole, ``engine.segment`` on the
   whole frame, written whole;
2. a ``--frames``-frame stack, streamed frame by frame (``io.FrameStream``);
3. ``--files`` images of 1024² in one process (2 torch threads) and with
   ``--scheduler local --workers 2`` (two worker processes, 1 thread each), start-up of
   the cluster included.

Peak memory is sampled from the process's own /proc/self/status (RssAnon: what it
allocated; VmRSS adds file pages of the memory-mapped input, which the kernel may drop).
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_stack_memory import SAMPLER  # the child's own peak memory, every 20 ms

CLI = (
    SAMPLER
    + """
import sys
from napari_temseg.cli import main
rc = main(["segment", *sys.argv[1:], "--device", "cpu"])
time.sleep(0.05)
print(_peak["RssAnon"], _peak["VmRSS"], rc)
"""
)

WHOLE = (
    SAMPLER
    + """
import sys
import numpy as np
from napari_temseg.engine.segment import load_segmenter, segment
from napari_temseg.io import read, write_labels
img = read(sys.argv[1])[0]
frame = np.asarray(img.data, dtype=np.float32)
mask = segment(frame, load_segmenter(sys.argv[2]), device="cpu")
write_labels(sys.argv[3] + "/whole.tif", mask, scale=img.scale)
time.sleep(0.05)
print(_peak["RssAnon"], _peak["VmRSS"], 0)
"""
)


def child(code: str, args: list[str], threads: int) -> tuple[float, float, float]:
    """Run ``code`` in a fresh interpreter -> (peak anon MB, peak RSS MB, wall s)."""
    code = f"import torch; torch.set_num_threads({threads})\n" + code
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    lines = r.stdout.strip().splitlines()
    if r.returncode or not lines or lines[-1].split()[-1] != "0":
        raise RuntimeError(f"run failed ({r.returncode}): {r.stderr[-800:]}")
    anon, rss, _ = lines[-1].split()
    return float(anon), float(rss), wall


def make_segmenter(work: Path) -> Path:
    from napari_temseg.engine.finetune import FinetuneConfig
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import write_image, write_labels
    from napari_temseg.pipeline.training import finetune_files
    from napari_temseg.synth import simulate

    s = simulate("stem", 512, pixel_size_nm=0.1, dose=100, seed=0)
    write_image(work / "train.tif", s.noisy, scale=(0.1, 0.1))
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=6, length=40, seed=0)
    write_labels(work / "strokes.tif", strokes, scale=(0.1, 0.1))
    out, _ = finetune_files(
        [work / "train.tif"],
        [work / "strokes.tif"],
        work / "seg.safetensors",
        init="stem-denoise",
        steps=40,
        device="cpu",
        config=FinetuneConfig(steps=40, device="cpu", seed=0),
    )
    return out


def big_frame(path: Path, size: int) -> None:
    """A size² float32 micrograph (2048² simulated tiles, fresh noise each), uncompressed."""
    import tifffile

    from napari_temseg.synth import simulate

    base = simulate("stem", 2048, pixel_size_nm=0.1, dose=1e6, seed=1).clean
    rng = np.random.default_rng(0)
    res = 1e7 / 0.1  # pixels per cm
    out = tifffile.memmap(
        path,
        shape=(size, size),
        dtype=np.float32,
        photometric="minisblack",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )
    for y in range(0, size, 2048):
        for x in range(0, size, 2048):
            h, w = min(2048, size - y), min(2048, size - x)
            out[y : y + h, x : x + w] = rng.poisson(100 * base[:h, :w]).astype(np.float32)
    out.flush()
    del out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    p.add_argument("--whole-max", type=int, default=8192)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--frame-size", type=int, default=512)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args()
    from napari_temseg.io import write_image
    from napari_temseg.synth import simulate

    results: dict = {"large": [], "stack": None, "cluster": None}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seg = str(make_segmenter(work))
        for size in a.sizes:
            src = work / f"big{size}.tif"
            big_frame(src, size)
            banded = child(
                CLI,
                [str(src), "--model", seg, "-o", str(work / "o"), "--band-above", "4"],
                a.threads,
            )
            whole = None
            if size <= a.whole_max:
                (work / "w").mkdir(exist_ok=True)
                whole = child(WHOLE, [str(src), seg, str(work / "w")], a.threads)
            row = {"size": size, "mb": size * size * 4 / 2**20, "banded": banded, "whole": whole}
            results["large"].append(row)
            print(json.dumps(row), flush=True)
            src.unlink()
        if a.frames:
            rng = np.random.default_rng(1)
            base = simulate("stem", a.frame_size, pixel_size_nm=0.1, dose=1e6, seed=2).clean
            stack = np.empty((a.frames, a.frame_size, a.frame_size), np.float32)
            for k in range(a.frames):
                stack[k] = rng.poisson(100 * base)
            write_image(work / "stack.tif", stack, scale=(1.0, 0.1, 0.1))
            mb = stack.nbytes / 2**20
            del stack
            streamed = child(
                CLI, [str(work / "stack.tif"), "--model", seg, "-o", str(work / "s")], a.threads
            )
            results["stack"] = {
                "frames": a.frames,
                "size": a.frame_size,
                "mb": mb,
                "streamed": streamed,
            }
            print(json.dumps(results["stack"]), flush=True)
        if a.files:
            files = []
            for k in range(a.files):
                img = simulate("stem", 1024, pixel_size_nm=0.1, dose=100, seed=100 + k).noisy
                files.append(write_image(work / "many" / f"f{k}.tif", img, scale=(0.1, 0.1))[0])
            one = child(CLI, [*files, "--model", seg, "-o", str(work / "one")], a.threads)
            two = child(
                CLI,
                [
                    *files,
                    "--model",
                    seg,
                    "-o",
                    str(work / "two"),
                    "--scheduler",
                    "local",
                    "--workers",
                    "2",
                ],
                a.threads,
            )
            results["cluster"] = {"files": a.files, "one_process": one, "local_cluster_2": two}
            print(json.dumps(results["cluster"]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    print("\n| input | way | peak anon / peak RSS (MB) | time (s) |\n|---|---|---|---|")
    for r in results["large"]:
        name = f"{r['size']}² frame ({r['mb']:.0f} MB float32)"
        ba, br, bt = r["banded"]
        print(f"| {name} | band by band | {ba:.0f} / {br:.0f} | {bt:.0f} |")
        if r["whole"]:
            wa, wr, wt = r["whole"]
            print(f"| {name} | whole frame in memory | {wa:.0f} / {wr:.0f} | {wt:.0f} |")
    if results["stack"]:
        s = results["stack"]
        sa, sr, st = s["streamed"]
        print(
            f"| {s['frames']} x {s['size']}² stack ({s['mb']:.0f} MB) | frame by frame | "
            f"{sa:.0f} / {sr:.0f} | {st:.0f} |"
        )
    if results["cluster"]:
        c = results["cluster"]
        t1, t2 = c["one_process"][2], c["local_cluster_2"][2]
        print(f"| {c['files']} files of 1024² | one process, 2 threads | - | {t1:.1f} |")
        print(
            f"| {c['files']} files of 1024² | local cluster, 2 workers x 1 thread | - | "
            f"{t2:.1f} ({t1 / t2:.2f}x) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
