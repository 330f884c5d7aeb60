"""CPU speed of the default U-Net by memory format, precision and compilation, side by side.

    python benchmarks/bench_cpu_modes.py --threads 2 --repeats 5

These CPUs report AMX-BF16; whether oneDNN uses it for a 16-channel U-Net's small
convolutions is measured, not assumed. Every mode runs on the same inputs, interleaved
(mode A, B, C, A, B, C, ...) so that a load change on the machine hits all of them alike;
the median of ``--repeats`` is reported with its ratio to the fp32 channels-first run.

- inference: a 1024² frame through the bundled ``stem-denoise`` in 256² tiles (batch 4);
- training: one optimiser step (forward, backward, Adam) on a batch of 8 patches of 128².

Modes: fp32 channels-first; fp32 channels-last (the engine's CPU default for inference and
training); bf16 autocast channels-last; ``torch.compile`` (fp32, channels-last), where a
C++ compiler is present. Also the relative L2 difference of each mode's output from fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import numpy as np
import torch

from napari_temseg.models import load_model


def modes(model: torch.nn.Module, compile_too: bool) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (model in that memory format, use bf16 autocast)."""
    cf = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out = {
        "fp32 channels-first": (cf, False),
        "fp32 channels-last": (cl, False),
        "bf16 autocast channels-last": (cl, True),
    }
    if compile_too:
        out["torch.compile fp32 channels-last"] = (torch.compile(copy.deepcopy(cl)), False)
    return out


def _ctx(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def infer(model: torch.nn.Module, bf16: bool, frame: torch.Tensor, tile: int = 256) -> np.ndarray:
    """The frame through the model in non-overlapping tiles, batch 4 (the network's cost)."""
    h, w = frame.shape[-2:]
    tiles = [
        frame[..., y : y + tile, x : x + tile] for y in range(0, h, tile) for x in range(0, w, tile)
    ]
    fmt = torch.channels_last if model_is_cl(model) else torch.contiguous_format
    outs = []
    with torch.inference_mode(), _ctx(bf16):
        for i in range(0, len(tiles), 4):
            batch = torch.cat(tiles[i : i + 4]).contiguous(memory_format=fmt)
            outs.append(model(batch).float())
    return torch.cat(outs).numpy()


def model_is_cl(model: torch.nn.Module) -> bool:
    p = next((p for p in model.parameters() if p.ndim == 4), None)
    return p is not None and p.is_contiguous(memory_format=torch.channels_last)


def train_step(model: torch.nn.Module, bf16: bool, x: torch.Tensor, y: torch.Tensor, opt) -> None:
    fmt = torch.channels_last if model_is_cl(model) else torch.contiguous_format
    opt.zero_grad(set_to_none=True)
    with _ctx(bf16):
        loss = torch.nn.functional.mse_loss(model(x.contiguous(memory_format=fmt)).float(), y)
    loss.backward()
    opt.step()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base, _ = load_model("stem-denoise", "cpu")
    base.eval()
    frame = torch.rand(1, 1, 1024, 1024)
    x, y = torch.rand(8, 1, 128, 128), torch.rand(8, 1, 128, 128)
    print(
        f"torch {torch.__version__}, {a.threads} threads, oneDNN {torch.backends.mkldnn.is_available()}"
    )

    # inference
    ms = modes(base, a.compile)
    ref = infer(ms["fp32 channels-first"][0], False, frame)
    times: dict[str, list[float]] = {k: [] for k in ms}
    diffs = {}
    for k, (m, bf16) in ms.items():  # warm-up (and compilation), and the output check
        out = infer(m, bf16, frame)
        diffs[k] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    for _ in range(a.repeats):
        for k, (m, bf16) in ms.items():
            t0 = time.perf_counter()
            infer(m, bf16, frame)
            times[k].append(time.perf_counter() - t0)
    first = statistics.median(times["fp32 channels-first"])
    print("\ninference, 1024² frame (16 tiles of 256², batch 4)\n")
    print(
        "| mode | median s | MP/s | vs fp32 channels-first | rel. L2 vs fp32 |\n|---|---|---|---|---|"
    )
    for k, t in times.items():
        med = statistics.median(t)
        print(f"| {k} | {med:.3f} | {1.048576 / med:.2f} | {first / med:.2f}x | {diffs[k]:.1e} |")

    # training
    trainers = {}
    for k, (m, bf16) in modes(base, a.compile).items():
        m = copy.deepcopy(m) if not k.startswith("torch.compile") else m
        m.train()
        trainers[k] = (m, bf16, torch.optim.Adam(m.parameters(), lr=1e-4))
    times = {k: [] for k in trainers}
    for m, bf16, opt in trainers.values():
        train_step(m, bf16, x, y, opt)  # warm-up
    for _ in range(a.repeats):
        for k, (m, bf16, opt) in trainers.items():
            t0 = time.perf_counter()
            train_step(m, bf16, x, y, opt)
            times[k].append(time.perf_counter() - t0)
    first = statistics.median(times["fp32 channels-first"])
    print("\ntraining step, batch 8 x 128² (forward, backward, Adam)\n")
    print("| mode | median s | patches/s | vs fp32 channels-first |\n|---|---|---|---|")
    for k, t in times.items():
        med = statistics.median(t)
        print(f"| {k} | {med:.3f} | {8 / med:.1f} | {first / med:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
