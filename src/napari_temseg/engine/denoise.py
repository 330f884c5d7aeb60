"""Denoise or restore micrographs with a bundled or own model: the call widgets and CLI share."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.binning import MIN_BINNED, bin_frame, check_bin, unbin_frame
from napari_temseg.engine.device import select_device
from napari_temseg.engine.finite import (
    Padding,
    check_float32_steps,
    check_frame,
    padding_of,
    screen,
)
from napari_temseg.engine.large import BAND_ROWS, HALO, predict_bands
from napari_temseg.engine.postfilter import apply_postfilter
from napari_temseg.engine.tiling import model_overlap, predict_tiled, tiles_per_frame
from napari_temseg.engine.tta import orientation_count, with_orientations, with_tta
from napari_temseg.io.model import DataWarning
from napari_temseg.models.normalize import Normalization
from napari_temseg.models.resolve import ModelSpec, cached_model


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
    if 0 < min(shape[-2:]) < MIN_BINNED:  # a 2 x 2 "image" came back averaged, called done
        raise ValueError(
            f"a {shape[-2]}x{shape[-1]} frame is too small to denoise (at least "
            f"{MIN_BINNED} px a side: the network reads each pixel from those around it)"
        )


#: what a denoised result records about how it was made (with the orientation keys of
#: ``engine.tta.with_orientations``): set anew for each result, never inherited from an
#: input that was itself denoised
DENOISED_KEYS = ("denoised_with", "denoised_binning", "adapted")


def denoised_metadata(
    meta: dict,
    model: str,
    *,
    bin: int = 1,
    orientations: int = 1,
    adapted: dict | None = None,
) -> dict:
    """``meta`` of an input, for its result denoised by ``model`` (a name or checkpoint
    path) with ``bin``, over ``orientations``, ``adapted`` as the adapted model records;
    what a denoised input had recorded about its own denoising is replaced. One place for
    the Denoise dock and ``temseg denoise``."""
    kept = {k: v for k, v in meta.items() if k not in DENOISED_KEYS}
    made = {
        "denoised_with": model,
        **({"denoised_binning": bin} if bin > 1 else {}),
        **({"adapted": adapted} if adapted else {}),
    }
    return with_orientations({**kept, **made}, orientations)


def denoise(
    image: Any,
    model_or_name: ModelSpec = None,
    device: str | torch.device = "auto",
    tile: int = TILE,
    overlap: int = OVERLAP,
    batch_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | None = None,
    *,
    out: np.ndarray | None = None,
    stats: tuple[float, float] | None = None,
    bin: int = 1,
    tta: bool | int = False,
    amp: bool | None = True,
    padding: np.ndarray | Padding | None = None,
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
    ``bin`` 2 or 4 denoises each frame binned that many times coarser and interpolates
    the result back (``engine.binning``); ``stats`` are then the binned frame's.
    ``tta`` averages each tile's result over its eight rotations and mirrorings (True or
    8) or over the tile and the tile turned by 90 degrees (2), and smooths the detail they
    disagree on, at 4 px and at 16 px (``engine.tta``): that many times the time, less of
    the grain a network invents at low dose. False or 1: one pass.
    ``amp``: the network runs in bfloat16 where that is native (a CUDA GPU, or a CPU with
    AVX512-BF16 or AMX): about twice as fast on these CPUs, within 0.06 dB of float32 on
    held-out simulated images (docs/benchmarks.md, "Two orientations by default, in
    bfloat16"); None: mixed precision on CUDA only; False: float32 throughout.
    A padded border (the zeros around an aligned or rotated frame, ``engine.finite``) is
    filled for the network and given back as it was; ``padding`` gives the values it may
    hold, or a whole frame's ``engine.finite.Padding`` for a band of it (``engine.large``
    passes one to each band); found per frame when None.
    """
    _check_image(image)
    check_bin(bin, tuple(image.shape))
    dev = select_device(device)
    model, meta = cached_model(model_or_name, dev)
    n = orientation_count(tta)
    if n > 1:
        model, meta = with_tta((model, meta), probabilities=False, orientations=n)
    if meta.get("task", "denoise") != "denoise":
        raise ValueError(
            f"this model was trained to {meta.get('task')!r}, not to denoise; "
            "choose a denoising model"
        )
    norm = Normalization.from_dict(meta.get("normalization"))
    if dev.type == "cpu":  # oneDNN convolutions are faster channels-last; same numbers
        model = model.to(memory_format=torch.channels_last)
    kw = dict(
        tile=tile,
        overlap=model_overlap(meta, tile, overlap),
        out_channels=1,
        device=dev,
        batch_size=batch_size,
        normalization=norm,
        denormalize=True,
        cancel=cancel,
        stats=stats,
        within_input=True,  # no value outside the input's range; NaN where it had none
        amp=amp,
        padding=padding,
    )
    post = meta.get("postfilter")  # an adapted model's calibrated smoothing
    if bin == 1:
        out = predict_tiled(image, model, progress=progress, out=out, **kw)
        if post:
            for idx in np.ndindex(*out.shape[:-2]):
                out[idx] = apply_postfilter(out[idx], post)
                _keep_padding(out[idx], image[idx] if idx else image, padding)
        return out
    return _denoise_binned(image, model, bin, progress, out, kw, post)


def _denoise_binned(
    image: Any,
    model: nn.Module,
    k: int,
    progress: Callable[[int, int], Any] | None,
    out: np.ndarray | None,
    kw: dict[str, Any],
    post: dict[str, Any] | None = None,
) -> np.ndarray:
    """``denoise`` with ``bin=k``: frame by frame, binned, denoised, interpolated back
    (a model's post-filter works on the binned frame, where it was fitted)."""
    shape = tuple(int(s) for s in image.shape)
    lead, (h, w) = shape[:-2], shape[-2:]
    frames = list(np.ndindex(*lead)) if lead else [()]
    per_frame = tiles_per_frame((-(-h // k), -(-w // k)), kw["tile"], kw["overlap"])
    total = per_frame * len(frames)
    if out is None:
        out = np.empty(shape, np.float32)
    for n, idx in enumerate(frames):

        def report(done: int, _total: int, base: int = n * per_frame) -> None:
            if progress is not None:
                progress(base + done, total)

        where = f"frame {', '.join(map(str, idx))}: " if idx else ""
        check_float32_steps(image[idx] if idx else image, where)  # before it is made float32
        frame = np.asarray(image[idx] if idx else image, np.float32)
        # binning averages a few NaN pixels away: say so here, as an unbinned frame does
        # (an all-NaN frame is refused here too, a block of them left to the tiles)
        found = screen(frame)
        said = found is not None and 0 < found.nonfinite < found.size
        if said:
            check_frame(found, where, whole=True, output_float32=True)
        pad = kw.get("padding")
        tiles_kw = (
            kw if not isinstance(pad, Padding) else {**kw, "padding": pad.scaled(1 / k, 1 / k)}
        )
        with warnings.catch_warnings():
            if said:  # a block of them, still NaN when binned, is not counted again
                warnings.simplefilter("ignore", DataWarning)
            small = predict_tiled(bin_frame(frame, k), model, progress=report, **tiles_kw)
        small = apply_postfilter(small, post)
        out[idx] = unbin_frame(small, k, (h, w), frame)
        _keep_padding(out[idx], frame, kw.get("padding"))
    return out


def _keep_padding(result: np.ndarray, frame: Any, values: np.ndarray | Padding | None) -> None:
    """Put a frame's padding back into its denoised ``result`` after what the tiles'
    own restoring cannot see: interpolating a binned result back, an adapted model's
    smoothing (both spread the specimen into the border's edge)."""
    frame = np.asarray(frame)
    mask = padding_of(frame, values)
    if mask is not None:
        result[mask] = frame[mask]


def denoise_bands(
    frame: Any,
    model: tuple[nn.Module, dict],
    device: str | torch.device = "cpu",
    tile: int = TILE,
    overlap: int = OVERLAP,
    bin: int = 1,
    amp: bool | None = True,
    **kw: Any,
) -> Iterator[np.ndarray]:
    """Denoised bands of a large 2D frame (float32, the frame's units); see
    ``engine.large.iter_bands`` for ``band``, ``halo``, ``progress`` and ``cancel``.
    ``bin``, ``amp``: as in :func:`denoise` (bands start on whole blocks; the statistics
    are the binned frame's). To average orientations, pass a model wrapped by
    ``engine.tta.with_tta(..., probabilities=False)``, as ``FileJob(tta=True)`` does."""
    check_bin(bin, tuple(frame.shape))
    check_float32_steps(frame)  # the bands are read as float32
    for key, default in (("band", BAND_ROWS), ("halo", HALO)):  # bands on whole blocks
        kw[key] = -(-int(kw.get(key, default)) // bin) * bin
    return predict_bands(
        frame,
        model,
        denoise,
        tile=tile,
        overlap=overlap,
        engine_kw={"device": device, "bin": bin, "amp": amp},
        bin=bin,
        **kw,
    )
