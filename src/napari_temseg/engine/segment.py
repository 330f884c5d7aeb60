"""Apply a segmenter to images, stacks and frames larger than memory (band by band).

Prediction is tiled exactly like denoising (``predict_tiled``: blended tiles, frame by
frame, lazy stacks, progress, cancel, GPU out-of-memory fallback); tiles are blended as
class probabilities and the class with the highest one wins. When the image's pixel size
is known and differs from the segmenter's training scale by more than a factor 2, each
frame is resampled to that scale, segmented, and the probabilities resampled back; within
a factor 2 the (scale-augmented) network is robust by itself (see ``docs/segment.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.checks import (
    check_frame,
)
from napari_temseg.engine.device import select_device
from napari_temseg.engine.finite import LEFT_OUT, Padding, left_out, padding_of
from napari_temseg.engine.large import predict_bands
from napari_temseg.engine.strokes import SCALE_TOLERANCE, SegmentError
from napari_temseg.engine.tiling import model_overlap, predict_tiled, tiles_per_frame
from napari_temseg.models import load_model
from napari_temseg.models.normalize import Normalization
from napari_temseg.models.resolve import cached_model

Segmenter = str | Path | tuple[nn.Module, dict]


def check_segmenter(meta: dict, name: str | Path) -> None:
    """Refuse a model that is not a segmenter, naming it and the remedy."""
    if meta.get("task") != "segment":
        raise SegmentError(
            f"{Path(str(name)).name} is a {meta.get('task', 'unknown')} model, not a "
            "segmenter; fine-tune it on painted strokes first"
        )


def load_segmenter(name_or_path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Load a segmenter checkpoint afresh (the caller may train it); a denoiser is refused."""
    model, meta = load_model(name_or_path, device=device)
    check_segmenter(meta, name_or_path)
    return model, meta


def _segmenter(model: Segmenter, dev: torch.device) -> tuple[nn.Module, dict]:
    if isinstance(model, tuple):
        net, meta = model
        if meta.get("task", "segment") != "segment":
            raise SegmentError("this model is a denoiser, not a segmenter")
        return net.eval().to(dev), meta
    net, meta = cached_model(model, dev)
    check_segmenter(meta, model)
    return net, meta


def segment(
    image: Any,
    model: Segmenter,
    device: str | torch.device = "auto",
    tile: int = TILE,
    overlap: int = OVERLAP,
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | None = None,
    probabilities: bool = False,
    pixel_size_nm: float | None = None,
    stats: tuple[float, float] | None = None,
    padding: np.ndarray | Padding | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class ids 1..K (uint8, shape of ``image``) of a 2D image or a stack (..., Y, X).

    ``model``: a checkpoint path or name, or a ``(module, meta)`` pair. With
    ``probabilities=True`` also returns float32 per-class probabilities (..., K, Y, X).
    ``pixel_size_nm`` (the image's, nm/px) lets frames be resampled to the segmenter's
    scale. ``progress(done, total)`` counts tiles; ``cancel`` raises ``engine.Cancelled``.
    ``stats`` fixes every frame's normalisation statistics (a band of a larger frame),
    ``padding`` the values its padding may hold, or a whole frame's
    ``engine.finite.Padding`` for a band of it (found per frame when None). Padding and
    NaN pixels are not classified (0).
    """
    shape = tuple(int(s) for s in getattr(image, "shape", ()))
    if len(shape) < 2 or min(shape) == 0:
        raise SegmentError(f"expected a 2D image or a stack (..., Y, X), got shape {shape}")
    if np.dtype(getattr(image, "dtype", np.float32)).kind not in "uif":
        raise SegmentError(f"expected a grayscale image of numbers, got {image.dtype}")
    dev = select_device(device)
    net, meta = _segmenter(model, dev)
    k = int(getattr(net, "config", {}).get("out_channels", len(meta.get("class_names", []))))
    norm = Normalization.from_dict(meta.get("normalization"))
    zoom = 1.0
    trained_px = meta.get("pixel_size_nm")
    if pixel_size_nm and trained_px:
        zoom = float(pixel_size_nm) / float(trained_px)
        if abs(np.log(zoom)) <= np.log(SCALE_TOLERANCE) + 1e-9:
            zoom = 1.0
        zoom = float(np.clip(zoom, 0.125, 8.0))

    def fn(x: torch.Tensor) -> torch.Tensor:
        return net(x).float().softmax(1)

    overlap = model_overlap(meta, tile, overlap)  # as engine.denoise and the bands do
    lead, (h, w) = shape[:-2], shape[-2:]
    frames = list(np.ndindex(*lead)) if lead else [()]
    zh, zw = max(1, round(h * zoom)), max(1, round(w * zoom))
    per_frame = tiles_per_frame((zh, zw), tile, overlap)
    total = per_frame * len(frames)
    labels = np.empty(shape, np.uint8)
    probs = np.empty((*lead, k, h, w), np.float32) if probabilities else None
    for n, idx in enumerate(frames):
        frame = image[idx] if idx else image

        def report(done: int, _total: int, base: int = n * per_frame) -> None:
            if progress is not None:
                progress(base + done, total)

        if idx and left_out(frame, f"frame {', '.join(map(str, idx))}: "):
            labels[idx] = 0  # a dropped frame of the stack: not classified, stops no other
            if probs is not None:
                probs[idx] = 1.0 / k
            report(per_frame, total)
            continue

        seen_padding = padding  # a whole frame's hull, in the frame the tiles see
        if zoom != 1.0:
            f = np.asarray(frame, np.float32)
            frame = ndimage.zoom(f, (zh / h, zw / w), order=1, grid_mode=True, mode="reflect")
            if isinstance(padding, Padding):
                seen_padding = padding.scaled(zh / h, zw / w)
        try:
            p = predict_tiled(
                frame,
                fn,
                tile=tile,
                overlap=overlap,
                out_channels=k,
                device=dev,
                normalization=norm,
                denormalize=False,
                progress=report,
                cancel=cancel,
                stats=stats,
                padding=seen_padding,
            )
        except ValueError as e:  # name the frame of a stack, as denoising does
            if not idx:
                raise
            raise ValueError(f"frame {', '.join(map(str, idx))}: {e}") from None
        if zoom != 1.0:
            p = ndimage.zoom(p, (1, h / zh, w / zw), order=1, grid_mode=True, mode="nearest")
            p = p[:, :h, :w]
        _classes_into(p, labels[idx])
        original = np.asarray(image[idx] if idx else image)
        if np.dtype(image.dtype).kind == "f":  # NaN/inf pixels: not classified (0)
            labels[idx][~np.isfinite(original)] = 0
        pad = padding_of(original, padding)  # nor is a padded border (engine.finite)
        if pad is not None:
            labels[idx][pad] = 0
        if probs is not None:
            probs[idx] = p
    return (labels, probs) if probabilities else labels


def segment_checked(
    image: Any,
    model: Segmenter,
    device: str | torch.device = "auto",
    tile: int = TILE,
    overlap: int = OVERLAP,
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | None = None,
    pixel_size_nm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple, str]]]:
    """Labels, uncertainty and warnings of a 2D image or stack: what "Apply" shows.

    -> (labels 1..K uint8, uncertainty in percent uint8 (``checks.uncertainty`` x 100),
    [(frame index, warning)] from ``checks.check_frame``). Frame by frame, so only one
    frame's class probabilities (K floats a pixel) are held at a time; the uncertainty is
    kept as whole percents (one byte a pixel) for the same reason.
    """
    from napari_temseg.engine.checks import describe_frame, uncertainty

    dev = select_device(device)
    seg = _segmenter(model, dev)
    shape = tuple(int(s) for s in image.shape)
    lead = shape[:-2]
    frames = list(np.ndindex(*lead)) if lead else [()]
    labels = np.empty(shape, np.uint8)
    unsure = np.empty(shape, np.uint8)
    found: list[tuple[tuple, str]] = []
    for n, idx in enumerate(frames):

        def report(done: int, total: int, n: int = n) -> None:
            if progress is not None:
                progress(n * total + done, len(frames) * total)

        frame = np.asarray(image[idx] if idx else image)
        if idx and left_out(frame, f"{describe_frame(idx)}: "):  # stops no other frame
            labels[idx], unsure[idx] = 0, 100
            found.append((idx, LEFT_OUT))
            report(1, 1)
            continue
        lab, probs = segment(
            frame,
            seg,
            device=dev,
            tile=tile,
            overlap=overlap,
            progress=report,
            cancel=cancel,
            probabilities=True,
            pixel_size_nm=pixel_size_nm,
        )
        labels[idx] = lab
        unsure[idx] = np.round(uncertainty(probs) * 100).astype(np.uint8)
        found += [(idx, w) for w in check_frame(frame, lab, seg[1])]
    return labels, unsure, found


def _classes_into(probs: np.ndarray, out: np.ndarray, rows: int = 256) -> None:
    """``out = argmax(probs) + 1`` in row blocks: argmax's int64 result for a whole large
    frame would be 8 bytes a pixel (150 MB for a 1k x 16k band) on top of everything else."""
    for r0 in range(0, probs.shape[1], rows):
        out[r0 : r0 + rows] = probs[:, r0 : r0 + rows].argmax(0) + 1


def segment_bands(
    frame: Any,
    model: tuple[nn.Module, dict],
    device: str | torch.device = "cpu",
    tile: int = TILE,
    overlap: int = OVERLAP,
    pixel_size_nm: float | None = None,
    **kw: Any,
) -> Iterator[np.ndarray]:
    """Class ids (uint8) of a large 2D frame, band by band; see ``engine.large.iter_bands``."""
    engine_kw = {"device": device, "pixel_size_nm": pixel_size_nm}
    return predict_bands(
        frame, model, segment, tile=tile, overlap=overlap, engine_kw=engine_kw, **kw
    )
