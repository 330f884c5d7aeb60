"""Apply a segmenter to images and stacks; the headless fine-tune and segment commands.

Prediction is tiled exactly like denoising (``predict_tiled``: blended tiles, frame by
frame, lazy stacks, progress, cancel, GPU out-of-memory fallback); tiles are blended as
class probabilities and the class with the highest one wins. When the image's pixel size
is known and differs from the segmenter's training scale by more than a factor 2, each
frame is resampled to that scale, segmented, and the probabilities resampled back; within
a factor 2 the (scale-augmented) network is robust by itself (see ``docs/segment.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_temseg import defaults
from napari_temseg.engine.checks import (
    REMEDY,
    check_frame,
    describe_frame,
    frame_stats,
    outside_painted,
)
from napari_temseg.engine.device import select_device
from napari_temseg.engine.events import TrainEvent, drain
from napari_temseg.engine.finetune import (
    DEFAULT_CLASSES,
    FinetuneConfig,
    Finetuner,
    FinetuneResult,
    save_segmenter,
)
from napari_temseg.engine.strokes import SCALE_TOLERANCE, SegmentError, label_values
from napari_temseg.engine.tiling import predict_tiled, tiles_per_frame
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
    tile: int = 256,
    overlap: int = 32,
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | None = None,
    probabilities: bool = False,
    pixel_size_nm: float | None = None,
    stats: tuple[float, float] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class ids 1..K (uint8, shape of ``image``) of a 2D image or a stack (..., Y, X).

    ``model``: a checkpoint path or name, or a ``(module, meta)`` pair. With
    ``probabilities=True`` also returns float32 per-class probabilities (..., K, Y, X).
    ``pixel_size_nm`` (the image's, nm/px) lets frames be resampled to the segmenter's
    scale. ``progress(done, total)`` counts tiles; ``cancel`` raises ``engine.Cancelled``.
    ``stats`` fixes every frame's normalisation statistics (a band of a larger frame).
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

        if zoom != 1.0:
            f = np.asarray(frame, np.float32)
            frame = ndimage.zoom(f, (zh / h, zw / w), order=1, grid_mode=True, mode="reflect")
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
        )
        if zoom != 1.0:
            p = ndimage.zoom(p, (1, h / zh, w / zw), order=1, grid_mode=True, mode="nearest")
            p = p[:, :h, :w]
        _classes_into(p, labels[idx])
        if np.dtype(image.dtype).kind == "f":  # NaN/inf pixels: not classified (0)
            original = np.asarray(image[idx] if idx else image)
            labels[idx][~np.isfinite(original)] = 0
        if probs is not None:
            probs[idx] = p
    return (labels, probs) if probabilities else labels


def segment_checked(
    image: Any,
    model: Segmenter,
    device: str | torch.device = "auto",
    tile: int = 256,
    overlap: int = 32,
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
    from napari_temseg.engine.checks import uncertainty

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


# --------------------------------------------------------------------------- files (CLI)


def _first_image(path: str | Path):
    from napari_temseg.io import NotAnImageError, read_images

    try:
        return read_images(path)[0]
    except NotAnImageError as exc:
        raise SegmentError(f"{path}: {exc}") from exc


def finetune_files(
    images: Sequence[str | Path],
    labels: Sequence[str | Path],
    output: str | Path,
    init: str | Path | None = "auto",
    steps: int = defaults.FINETUNE_STEPS,
    class_names: Sequence[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    config: FinetuneConfig | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, FinetuneResult]:
    """``temseg finetune``: images and their stroke masks (same shapes) -> a segmenter file.

    Class names come from ``class_names``, else from the first label file's sidecar,
    else "support, particle" (as many as the highest label needs).
    """
    from dataclasses import replace

    from napari_temseg.io import read

    if len(images) != len(labels):
        raise SegmentError(f"got {len(images)} image file(s) but {len(labels)} label file(s)")
    from napari_temseg.io.outputs import check_output_file

    out = Path(output)
    if out.suffix == "" and not out.is_dir():
        out = out.with_suffix(".safetensors")
    check_output_file(out, overwrite)  # before training, which must not be lost to it
    imgs, labs, sizes = [], [], []
    names = list(class_names or [])
    for ip, lp in zip(images, labels, strict=True):
        im = _first_image(ip)
        lab = read(lp)[0]
        imgs.append(np.asarray(im.data))
        labs.append(np.asarray(lab.data))
        sizes.append(im.pixel_size_nm)
        if not names:
            names = _names_from(lab.metadata)
    kmax = max(
        int(label_values(lab, f"the labels in {Path(lp).name}").max(initial=0))
        for lab, lp in zip(labs, labels, strict=True)
    )
    if not names:
        names = list(DEFAULT_CLASSES) + [f"class {i}" for i in range(3, kmax + 1)]
    cfg = replace(config or FinetuneConfig(), steps=int(steps), device=device)
    tuner = Finetuner(imgs, labs, names, init=init, config=cfg, pixel_sizes=sizes)
    result = drain(tuner.run(cancel=cancel), progress)
    save_segmenter(out, result.model, result.meta, overwrite=overwrite, rescue=True)
    return out, result


def _names_from(meta: dict) -> list[str]:
    """Class names stored by ``io.write_labels`` (sidecar "classes") or napari metadata."""
    if meta.get("class_names"):
        return [str(n) for n in meta["class_names"]]
    if isinstance(meta.get("sidecar"), dict):
        return _names_from(meta["sidecar"])
    classes = meta.get("classes")
    if isinstance(classes, dict):
        items = sorted((int(k), v) for k, v in classes.items() if int(k) > 0)
        return [str(v.get("name", v)) if isinstance(v, dict) else str(v) for _, v in items]
    if isinstance(classes, list):
        named = sorted(
            (int(c.get("value", i + 1)), str(c.get("name", f"class {i + 1}")))
            for i, c in enumerate(classes)
            if isinstance(c, dict)
        )
        return [n for v, n in named if v > 0]
    return []


def _painted(meta: dict) -> list[dict]:
    """The painted frames' intensity statistics stored in a segmenter (may be none)."""
    return list((meta.get("training_data") or {}).get("intensity") or [])


def _segment_streamed(
    data: Any,
    seg: tuple[nn.Module, dict],
    dev: torch.device,
    tile: int,
    overlap: int,
    progress: Callable[[int, int], Any] | None,
    pixel_size_nm: float | None,
    large_frame_px: int | None = None,
    warn: Callable[[str], Any] | None = None,
) -> Any:
    """A 2D mask, or what writes one piece by piece: for a stack a ``FrameStream`` that
    segments frame by frame as it is written, for a frame larger than ``large_frame_px``
    a ``TileStream`` that segments it band by band (``engine.large``), so neither has to
    fit in memory; progress counts the whole file's tiles. ``warn(line)`` gets each
    frame's warnings (``engine/checks.py``) as soon as the frame is segmented; a frame
    segmented band by band gets the intensity check only (its mask is never whole)."""
    from napari_temseg.engine.large import is_large, release_pages, segment_bands
    from napari_temseg.io import FrameStream, TileStream

    kw = {"device": dev, "tile": tile, "overlap": overlap, "pixel_size_nm": pixel_size_nm}
    k = int(seg[0].config.get("out_channels", 2)) if hasattr(seg[0], "config") else 2
    dtype = np.uint8 if k < 256 else np.uint16

    def check(idx: tuple, frame: Any, mask: Any) -> None:
        if warn is None:
            return
        where = describe_frame(idx)
        lines = check_frame(frame, mask, seg[1]) if mask is not None else []
        if mask is None:  # band by band: compare the intensities only
            why = outside_painted(frame_stats(frame), _painted(seg[1]))
            lines = [f"{why}; {REMEDY}"] if why else []
        for line in lines:
            warn(f"{where}: {line}" if where else line)

    if is_large(data.shape, large_frame_px):
        if data.ndim == 2:
            check((), data, None)
        return TileStream(data.shape, dtype, segment_bands(data, seg, progress=progress, **kw))
    if data.ndim == 2:
        mask = segment(data, seg, progress=progress, **kw)
        check((), data, mask)
        return mask
    lead = data.shape[:-2]
    per_frame = tiles_per_frame(data.shape[-2:], tile, overlap)
    total = per_frame * int(np.prod(lead))

    def frames():
        for n, idx in enumerate(np.ndindex(*lead)):

            def report(done: int, _total: int, base: int = n * per_frame) -> None:
                if progress is not None:
                    progress(base + done, total)

            mask = segment(data[idx], seg, progress=report, **kw)
            check(idx, data[idx], mask)
            release_pages(data)  # a memory-mapped stack: drop the frame's pages
            yield mask

    return FrameStream(data.shape, dtype, frames())


def segment_file(
    path: str | Path,
    seg: tuple[nn.Module, dict],
    outdir: str | Path,
    device: str | torch.device = "auto",
    tile: int = 256,
    overlap: int = 32,
    progress: Callable[[int, int], Any] | None = None,
    source: str = "in memory",
    large_frame_px: int | None = None,
    stem: str | None = None,
    warn: Callable[[str], Any] | None = None,
) -> Path:
    """One file's first image -> ``OUTDIR/<stem>.tif`` (labels 1..K, calibrated, classes named).

    ``stem`` defaults to the input's (a batch gives inputs that share one their own).

    Stacks are written frame by frame and frames above ``large_frame_px`` pixels band by
    band, as they are segmented. ``warn(line)``: one line per frame that looks unlike the
    painted frames or came out degenerate (``engine/checks.py``).
    """
    from napari_temseg.io import write_labels

    dev = select_device(device)
    im = _first_image(path)
    mask = _segment_streamed(
        im.data, seg, dev, tile, overlap, progress, im.pixel_size_nm, large_frame_px, warn
    )
    target = Path(outdir) / ((stem or Path(path).stem) + ".tif")
    write_labels(
        target,
        mask,
        axes=im.axes,  # exactly the input's: uncalibrated stays uncalibrated (pixels)
        class_names=seg[1].get("class_names"),
        class_colors=seg[1].get("class_colors"),
        metadata={"segmented_with": source},
    )
    return target


def segment_files(
    inputs: Sequence[str | Path],
    model: Segmenter,
    outdir: str | Path,
    device: str = "auto",
    tile: int = 256,
    overlap: int = 32,
    progress: Callable[[int, int], Any] | None = None,
) -> list[Path]:
    """``temseg segment``: each input's first image -> ``OUTDIR/<stem>.tif`` (labels 1..K).

    ``model``: a segmenter file, or a ``(module, meta)`` pair already loaded (a batch loads
    it once).
    """
    dev = select_device(device)
    seg = model if isinstance(model, tuple) else load_segmenter(model, device=str(dev))
    source = str(model) if not isinstance(model, tuple) else seg[1].get("name", "in memory")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return [
        segment_file(path, seg, outdir, dev, tile, overlap, progress, source) for path in inputs
    ]
