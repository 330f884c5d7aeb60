"""Which device to compute on, and how to name it for a person."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device was asked for that this machine or this torch build does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(pref: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if present, else Apple MPS, else CPU; or check an explicit choice.

    Explicit ``"cuda"``/``"cuda:N"``/``"mps"`` that is not available raises
    :class:`DeviceError` saying what was found instead, rather than silently using the CPU.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {pref!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU found"
            )
            raise DeviceError(
                f"CUDA was requested but is not available ({why}); use 'auto' or 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{pref} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps" and not _mps_available():
        raise DeviceError("Apple MPS was requested but is not available; use 'auto' or 'cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {pref!r}; use auto, cpu, cuda or mps")
    return dev


def describe_device(device: str | torch.device) -> str:
    """A short human name: ``"CUDA: NVIDIA H200"``, ``"Apple MPS"``, ``"CPU (2 threads)"``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"CUDA: {torch.cuda.get_device_name(index)}"
    if dev.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles).

    There, bf16 autocast trains the default U-Net 1.7-2.3x faster than float32
    (``benchmarks/bench_cpu_modes.py``); elsewhere bf16 is emulated and slower.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def bf16_is_native(dev: torch.device) -> bool:
    """Whether bf16 autocast pays on ``dev``: a GPU, or a CPU that computes it natively
    (:func:`cpu_has_fast_bf16`). Training and the distillation teacher both ask."""
    return dev.type == "cuda" or (dev.type == "cpu" and cpu_has_fast_bf16())
