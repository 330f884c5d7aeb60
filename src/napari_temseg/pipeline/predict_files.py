"""One file in, its prediction on disk: ``temseg denoise`` and ``temseg segment`` per file.

Each reads a file (``io.read_images``), predicts through the one large / 2D / stack
dispatch (``streams.streamed``) and writes under the one naming rule
(``naming.output_path``) with the input's axes and calibration exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.checks import (
    REMEDY,
    check_frame,
    describe_frame,
    frame_stats,
    outside_painted,
)
from napari_temseg.engine.denoise import denoise, denoise_bands, denoised_metadata
from napari_temseg.engine.device import select_device
from napari_temseg.engine.finite import left_out
from napari_temseg.engine.segment import Segmenter, load_segmenter, segment, segment_bands
from napari_temseg.engine.strokes import SegmentError
from napari_temseg.engine.tiling import tiles_per_frame
from napari_temseg.engine.tta import DihedralMean
from napari_temseg.io.model import ResultWarning
from napari_temseg.pipeline.naming import output_path
from napari_temseg.pipeline.streams import streamed

Progress = Callable[[int, int], Any]


def first_image(path: str | Path) -> Any:
    """A file's first image dataset; a file without one is a ``SegmentError`` naming it."""
    from napari_temseg.io import NotAnImageError, read_images

    try:
        return read_images(path)[0]
    except NotAnImageError as exc:
        raise SegmentError(f"{path}: {exc}") from exc


def denoise_file(
    path: str | Path,
    model: tuple[nn.Module, dict],
    outdir: str | Path,
    device: str | torch.device = "auto",
    tile: int = TILE,
    overlap: int = OVERLAP,
    *,
    bin: int = 1,
    name: str = "in memory",
    frame_progress: Callable[[str], Progress] | None = None,
    large_frame_px: int | None = None,
    stem: str | None = None,
) -> list[Path]:
    """Every image of one file -> ``OUTDIR/<stem>.tif`` (``<stem>_1.tif``, ... for more).

    ``stem`` defaults to the input's (a batch gives inputs that share one their own).

    Float32 in the input's units, with the input's axes and calibration exactly (an
    uncalibrated input stays uncalibrated), the file's metadata and the model's name. A
    stack streams to disk frame by frame and a frame above ``large_frame_px``
    band by band, so neither has to fit in memory.
    """
    from napari_temseg.io import read_images, write_image

    path = Path(path)
    dev = select_device(device)

    def report(label: str) -> Progress | None:
        return frame_progress(label) if frame_progress else None

    written = []
    for i, img in enumerate(read_images(path)):
        n = int(np.prod(img.data.shape[:-2]))

        def frame(data: Any, idx: tuple, k: int, n: int = n) -> np.ndarray:
            if idx and left_out(data, f"{describe_frame(idx)}: "):  # stops no other frame
                return np.full(data.shape, np.nan, np.float32)
            label = f"{path.name} [{k + 1}/{n}]" if idx else path.name
            kw = {"tile": tile, "overlap": overlap, "progress": report(label), "bin": bin}
            return denoise(data, model, device=dev, **kw)

        def bands(data: Any) -> Iterator[np.ndarray]:
            return denoise_bands(
                data, model, dev, tile, overlap, bin=bin, progress=report(path.name)
            )

        out = streamed(img.data, np.float32, frame, bands, large_frame_px)
        target = output_path(outdir, stem or path.stem, i)
        averaged = isinstance(model[0], DihedralMean)  # FileJob(tta=2 or 8)
        turns = model[0].orientations if averaged else 1
        adapted = model[1].get("adapted")  # which adaptation: a rerun may adapt anew
        meta = denoised_metadata(img.metadata, name, bin=bin, orientations=turns, adapted=adapted)
        written += [Path(p) for p in write_image(target, out, axes=img.axes, metadata=meta)]
    return written


def _painted(meta: dict) -> list[dict]:
    """The painted frames' intensity statistics stored in a segmenter (may be none)."""
    return list((meta.get("training_data") or {}).get("intensity") or [])


def _segment_streamed(
    data: Any,
    seg: tuple[nn.Module, dict],
    dev: torch.device,
    tile: int,
    overlap: int,
    progress: Progress | None,
    pixel_size_nm: float | None,
    large_frame_px: int | None = None,
) -> Any:
    """A 2D mask, or what writes one piece by piece (``streams.streamed``); progress counts
    the whole file's tiles. Each frame's warnings (``engine/checks.py``) are a
    ``ResultWarning`` as soon as the frame is segmented (a batch's summary keeps them); a
    frame segmented band by band gets the intensity check only (its mask is never whole)."""
    kw = {"device": dev, "tile": tile, "overlap": overlap, "pixel_size_nm": pixel_size_nm}
    k = int(seg[0].config.get("out_channels", 2)) if hasattr(seg[0], "config") else 2
    dtype = np.uint8 if k < 256 else np.uint16
    per_frame = tiles_per_frame(data.shape[-2:], tile, overlap)
    total = per_frame * int(np.prod(data.shape[:-2]))

    def check(idx: tuple, frame: Any, mask: Any) -> None:
        where = describe_frame(idx)
        lines = check_frame(frame, mask, seg[1]) if mask is not None else []
        if mask is None:  # band by band: compare the intensities only
            why = outside_painted(frame_stats(frame), _painted(seg[1]))
            lines = [f"{why}; {REMEDY}"] if why else []
        for line in lines:
            warnings.warn(f"{where}: {line}" if where else line, ResultWarning, stacklevel=2)

    def frame(image: Any, idx: tuple, n: int) -> np.ndarray:
        def report(done: int, _total: int, base: int = n * per_frame) -> None:
            if progress is not None:
                progress(base + done, total)

        if idx and left_out(image, f"{describe_frame(idx)}: "):  # stops no other frame
            report(per_frame, total)
            return np.zeros(image.shape, dtype)
        mask = segment(image, seg, progress=report if idx else progress, **kw)
        check(idx, image, mask)
        return mask

    def bands(image: Any) -> Iterator[np.ndarray]:
        check((), image, None)
        return segment_bands(image, seg, progress=progress, **kw)

    return streamed(data, dtype, frame, bands, large_frame_px)


def segment_file(
    path: str | Path,
    seg: tuple[nn.Module, dict],
    outdir: str | Path,
    device: str | torch.device = "auto",
    tile: int = TILE,
    overlap: int = OVERLAP,
    progress: Progress | None = None,
    source: str = "in memory",
    large_frame_px: int | None = None,
    stem: str | None = None,
) -> Path:
    """One file's first image -> ``OUTDIR/<stem>.tif`` (labels 1..K, calibrated, classes named).

    ``stem`` defaults to the input's (a batch gives inputs that share one their own).

    Stacks are written frame by frame and frames above ``large_frame_px`` pixels band by
    band, as they are segmented. A frame that looks unlike the painted frames or came out
    degenerate is a ``ResultWarning`` (``engine/checks.py``).
    """
    from napari_temseg.io import write_labels

    dev = select_device(device)
    im = first_image(path)
    mask = _segment_streamed(
        im.data, seg, dev, tile, overlap, progress, im.pixel_size_nm, large_frame_px
    )
    target = output_path(outdir, stem or Path(path).stem)
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
    tile: int = TILE,
    overlap: int = OVERLAP,
    progress: Progress | None = None,
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


__all__ = ["denoise_file", "first_image", "segment_file", "segment_files"]
