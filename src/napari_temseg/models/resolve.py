"""Every name, path or "auto" that stands for a model becomes a network here, and only here.

Denoising, segmenting, fine-tuning, pretraining and the batch jobs all take "a model" as a
bundled name, a checkpoint path, a loaded module or a ``(module, meta)`` pair, and the
training commands also take "auto" and "scratch". Each used to resolve these on its own,
and "auto" came to mean different models in two of them; one rule (:func:`auto_denoiser`)
and one cache (:func:`cached_model`) keep every entry point giving the same answer.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from napari_temseg.models.bundled import (
    DEFAULT_DENOISER,
    FINETUNE_START,
    derived_meta,
    list_models,
    load_model,
    resolve_model,
)
from napari_temseg.models.checkpoint import CheckpointError
from napari_temseg.models.unet import UNet

#: "the bundled denoiser that fits, if one is installed"
AUTO = "auto"
#: a fresh network
SCRATCH = "scratch"
#: what users type for "no starting model" (compared stripped and lower-cased)
SCRATCH_WORDS = ("none", "scratch", "from scratch", "")

ModelSpec = str | Path | nn.Module | tuple[nn.Module, dict] | None


def auto_denoiser(kind: str | None = None) -> str | None:
    """What "auto" means everywhere: the bundled ``<kind>-denoise`` when installed, else
    the default denoiser when installed, else None (start from scratch)."""
    names = {m.name for m in list_models("denoise")}
    wanted = ([f"{kind}-denoise"] if kind else []) + [DEFAULT_DENOISER]
    return next((n for n in wanted if n in names), None)


def resolve_init(init: ModelSpec, kind: str | None = None) -> ModelSpec:
    """A training run's starting point with "auto" and the scratch words resolved:
    None for a fresh network, else a name, path, module or ``(module, meta)`` pair."""
    if isinstance(init, str) and init.strip().lower() in SCRATCH_WORDS:
        return None
    if isinstance(init, str) and init == AUTO:
        return auto_denoiser(kind)
    return init


def load_start(init: ModelSpec, kind: str | None = None) -> tuple[nn.Module | None, dict, str]:
    """A training run's starting network -> (module or None for scratch, its meta, a name
    for the new checkpoint's record). A file is loaded afresh on the CPU: training changes
    the module, so it must never be the cached one."""
    init = resolve_init(init, kind)
    if init is None:
        return None, {}, "none"
    if isinstance(init, tuple):
        return init[0], dict(init[1]), str(init[1].get("name", "in-memory model"))
    if isinstance(init, nn.Module):
        return init, {"task": "denoise"}, "in-memory model"
    model, meta = load_model(resolve_model(init), device="cpu")
    return model, meta, str(init)


def start_denoiser(
    init: ModelSpec, kind: str | None, base: int, depth: int
) -> tuple[nn.Module, dict]:
    """The network a denoiser's training starts from, and its checkpoint metadata ({} from
    scratch: a fresh U-Net of ``base`` and ``depth``); a segmenter cannot start one."""
    model, meta, name = load_start(init, kind)
    if model is None:
        return UNet(base=base, depth=depth), {}
    if meta.get("task", "denoise") != "denoise":
        raise ValueError(f"{name}: a {meta.get('task')!r} model cannot start a denoiser")
    return model, {**derived_meta(meta), "init": name}


def load_segmenter_start(init: ModelSpec) -> tuple[nn.Module | None, dict, str, str | None]:
    """:func:`load_start` for a segmenter -> (module, meta, name, start): a bundled denoiser
    that names its fine-tuning start (``FINETUNE_START``) gives that file's network, and
    ``start`` says which; a missing start file falls back to the denoiser itself."""
    model, meta, name = load_start(init)
    start = meta.get(FINETUNE_START) if model is not None else None
    if not start or meta.get("task", "denoise") != "denoise":
        return model, meta, name, None
    try:
        start_model, start_meta, _ = load_start(str(start))
    except CheckpointError:
        return model, meta, name, None
    return start_model, start_meta, name, str(start)


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, device: str) -> tuple[nn.Module, dict]:
    """Loaded checkpoints, keyed by file and modification time (re-running is instant)."""
    return load_model(path, device=device)


def cached_model(spec: ModelSpec, device: str | torch.device) -> tuple[nn.Module, dict]:
    """A model to predict with, on ``device``, in eval mode: a name or path is loaded once
    per process and device (None: the default denoiser); a module or pair is moved there."""
    if spec is None:
        spec = DEFAULT_DENOISER
    if isinstance(spec, tuple):
        model, meta = spec
    elif isinstance(spec, nn.Module):
        model, meta = spec, {}
    else:
        path = resolve_model(spec)
        return _cached(str(path), path.stat().st_mtime_ns, str(device))
    return model.eval().to(device), meta


def loaded_count() -> int:
    """How many checkpoints this process holds loaded (a batch worker should hold one)."""
    return _cached.cache_info().currsize


__all__ = [
    "AUTO",
    "SCRATCH",
    "ModelSpec",
    "auto_denoiser",
    "cached_model",
    "load_segmenter_start",
    "load_start",
    "loaded_count",
    "resolve_init",
    "start_denoiser",
]


def model_reference(model: str | None) -> str:
    """What names a model across runs: a bundled name as it is, a file by its absolute
    path (two files called ``mine.safetensors`` are two models; ``out/m.safetensors`` and
    ``/abs/out/m.safetensors`` one)."""
    ref = str(model or DEFAULT_DENOISER)
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_file() else ref
