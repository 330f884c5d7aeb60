"""Denoise or restore micrographs with a bundled or own model: the call widgets and CLI share."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_temseg.engine.device import select_device
from napari_temseg.engine.normalize import Normalization
from napari_temseg.engine.tiling import predict_tiled
from napari_temseg.models import DEFAULT_DENOISER, load_model, resolve_model


@lru_cache(maxsize=4)
def _cached_model(path: str, mtime_ns: int, device: str) -> tuple[nn.Module, dict]:
    """Loaded checkpoints, keyed by file and modification time (re-running is instant)."""
    return load_model(path, device=device)


def get_model(
    model_or_name: str | Path | nn.Module | tuple[nn.Module, dict] | None,
    device: torch.device,
) -> tuple[nn.Module, dict]:
    """Resolve a name, a checkpoint path, a module or a ``(module, meta)`` pair."""
    if model_or_name is None:
        model_or_name = DEFAULT_DENOISER
    if isinstance(model_or_name, tuple):
        model, meta = model_or_name
    elif isinstance(model_or_name, nn.Module):
        model, meta = model_or_name, {}
    else:
        path = resolve_model(model_or_name)
        return _cached_model(str(path), path.stat().st_mtime_ns, str(device))
    return model.eval().to(device), meta


def _check_image(image: Any) -> None:
    shape = getattr(image, "shape", None)
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if shape is None or len(shape) < 2:
        raise ValueError(f"expected a 2D image or a stack (..., Y, X), got shape {shape}")
    if dtype.kind not in "uif":
        raise ValueError(f"expected a grayscale image of numbers, got dtype {dtype}")
    if shape[-1] in (3, 4) and len(shape) == 3 and shape[0] > 4:
        raise ValueError(
            f"shape {tuple(shape)} looks like an RGB(A) picture; denoising expects a "
            "grayscale micrograph or a stack of them"
        )


def denoise(
    image: Any,
    model_or_name: str | Path | nn.Module | tuple[nn.Module, dict] | None = None,
    device: str | torch.device = "auto",
    tile: int = 256,
    overlap: int = 32,
    batch_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | None = None,
    *,
    out: np.ndarray | None = None,
    stats: tuple[float, float] | None = None,
) -> np.ndarray:
    """Denoise a 2D image or a stack (..., Y, X), frame by frame; float32, input's units.

    ``model_or_name`` is a bundled model's name (see ``models.list_models``; None = the
    default STEM denoiser), a checkpoint path, a loaded module (default normalisation)
    or a ``(module, meta)`` pair as returned by ``models.load_model``. ``image`` may be
    numpy or dask (only one frame's tiles are read at a time). ``progress(done, total)``
    counts tiles; setting ``cancel`` stops between tiles with ``engine.Cancelled``.
    ``stats`` overrides each frame's normalisation statistics (``engine.large`` passes a
    whole frame's to each of its bands). A frame with no finite pixel, or with values
    beyond float32, is a ``ValueError``; a few NaN/inf pixels are reported
    (``io.DataWarning``) and NaN in the result, which never leaves the input's range.
    """
    _check_image(image)
    dev = select_device(device)
    model, meta = get_model(model_or_name, dev)
    if meta.get("task", "denoise") != "denoise":
        raise ValueError(
            f"this model was trained to {meta.get('task')!r}, not to denoise; "
            "choose a denoising model"
        )
    norm = Normalization.from_dict(meta.get("normalization"))
    if dev.type == "cpu":  # oneDNN convolutions are faster channels-last; same numbers
        model = model.to(memory_format=torch.channels_last)
    return predict_tiled(
        image,
        model,
        tile=tile,
        overlap=overlap,
        out_channels=1,
        device=dev,
        batch_size=batch_size,
        normalization=norm,
        denormalize=True,
        progress=progress,
        cancel=cancel,
        out=out,
        stats=stats,
        within_input=True,  # no value outside the input's range; NaN where it had none
    )
