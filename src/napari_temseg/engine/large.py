"""Frames larger than memory: predicted band by band and handed on as each band is done.

A 16k x 16k float32 micrograph is 1 GB; its class probabilities are 2 GB more. Held whole,
that is more than a laptop has to spare, so a frame above :data:`LARGE_FRAME_PX` goes
through here instead: it is cut into bands of :data:`BAND_ROWS` full-width rows, each band
is read lazily (memory map, dask or any sliceable array) with a ``halo`` of extra rows
above and below, predicted by the usual tiled engine, cropped to its own rows and yielded;
the caller writes it (``io.TileStream``) before the next one is read. Memory is about one
band's input, output and probabilities, whatever the frame's height.

Two things keep the bands invisible in the result: every band is normalised with the
statistics of the whole frame (a strided sample of it, as for any frame), never its own;
and the halo gives the pixels next to a cut the same context a tile's inner edge gets, so
a banded result differs from a whole-frame one only where tiles are blended differently
(far below what the eye or a measurement sees; ``tests/test_large.py`` bounds it).
"""

from __future__ import annotations

import math
import mmap
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.finite import frame_padding
from napari_temseg.engine.tiling import Cancelled, model_overlap, tiles_per_frame
from napari_temseg.models.normalize import Normalization

#: frames with more pixels than this (8192 x 8192) are processed band by band by the CLI
LARGE_FRAME_PX = 8192 * 8192
#: rows per band: a multiple of every tile size the writers use
BAND_ROWS = 1024
#: rows of context read above and below each band
HALO = 64

Progress = Callable[[int, int], Any]


def is_large(shape: tuple[int, ...], limit_px: int | None = None) -> bool:
    """True for a single 2D frame too large to hold with its prediction in memory."""
    limit = LARGE_FRAME_PX if limit_px is None else limit_px
    return len(shape) == 2 and int(shape[0]) * int(shape[1]) > limit


def band_rows(height: int, band: int = BAND_ROWS, halo: int = HALO) -> list[tuple[int, ...]]:
    """``(r0, r1, h0, h1)`` per band: its own rows ``[r0, r1)`` and the rows read ``[h0, h1)``."""
    if band < 1 or halo < 0:
        raise ValueError(f"need band >= 1 and halo >= 0, got band {band}, halo {halo}")
    out = []
    for r0 in range(0, height, band):
        r1 = min(r0 + band, height)
        out.append((r0, r1, max(0, r0 - halo), min(height, r1 + halo)))
    return out


def release_pages(array: Any) -> None:
    """Let the kernel take back the pages a read-only memory map has touched so far.

    Reading a memory-mapped file band by band would otherwise leave every page read in
    the process's resident memory until the end (they are clean file pages, so dropping
    them costs nothing but a re-read from the page cache if they are needed again).
    """
    mm = getattr(array, "_mmap", None)
    if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def frame_stats(
    frame: Any, normalization: Normalization, rows: int = BAND_ROWS, bin: int = 1
) -> tuple[float, float]:
    """The whole frame's normalisation statistics (the same strided sample as
    ``normalization.stats(frame)``), read ``rows`` rows at a time; with ``bin`` > 1 those
    of the frame binned that many times (``engine.binning``), the same strided sample as
    ``normalization.stats(bin_frame(frame, bin))``.

    Read in one go, the sample of a memory-mapped 16k x 16k frame touched one pixel in
    every megabyte, and the kernel mapped the whole 1 GB file in (it maps page-cache
    folios whole): RSS jumped by the file's size for a moment. Block by block, with the
    pages given back after each block, it stays at one block's worth.
    """
    if bin == 1:
        return normalization.stats(frame, block_rows=rows, after_block=lambda: release_pages(frame))
    from napari_temseg.engine.binning import bin_frame

    # the strided sample normalization.stats takes of the binned frame, binning only the
    # sampled rows: a huge frame is not read once more in full just for its statistics
    rows = max(bin, rows - rows % bin)
    h, w = (int(s) for s in frame.shape[-2:])
    hb, wb = -(-h // bin), -(-w // bin)
    step = max(1, math.ceil(math.sqrt(hb * wb / normalization.max_samples)))
    parts = []
    for r0 in range(0, h, rows):
        for j in range(-(-(r0 // bin) // step) * step, min(hb, (r0 + rows) // bin), step):
            group = np.asarray(frame[j * bin : (j + 1) * bin], np.float32)
            parts.append(bin_frame(group, bin)[0, ::step])
        release_pages(frame)
    # the binned frame's strided grid, taken whole (stats must not thin it out once more):
    # 2D, so that its dead, stuck or padded columns and rows are found (engine.binning)
    sample = np.stack(parts)
    return replace(normalization, max_samples=max(1, sample.size)).stats(sample)


def iter_bands(
    frame: Any,
    predict: Callable[[np.ndarray, Progress, int], np.ndarray],
    *,
    tile: int = TILE,
    overlap: int = OVERLAP,
    band: int = BAND_ROWS,
    halo: int = HALO,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``predict(rows, report)`` band by band, top to bottom, cropped to each band.

    ``predict`` gets a band's rows with their halo as a float32 array, a progress
    callback and the frame's row the band starts at, and returns an array of the same
    height (and width), e.g. a denoised band or its class ids. ``progress``
    counts tiles over the whole frame; ``cancel`` stops before the next band (and between
    tiles inside one, when ``predict`` passes it on).
    """
    height, width = (int(s) for s in frame.shape[-2:])
    plan = band_rows(height, band, halo)
    per_band = [tiles_per_frame((h1 - h0, width), tile, overlap) for _, _, h0, h1 in plan]
    total = sum(per_band)
    base = 0
    for (r0, r1, h0, h1), n in zip(plan, per_band, strict=True):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {base} of {total} tiles")
        rows = np.asarray(frame[h0:h1], dtype=np.float32)  # a memory map stays a view

        def report(done: int, of: int, base: int = base, n: int = n) -> None:
            if progress is not None:  # scaled: a resampled band may count other tiles
                progress(base + min(n, math.ceil(done * n / max(of, 1))), total)

        out = predict(rows, report, h0)
        del rows
        release_pages(frame)  # the band's pages were touched while predicting
        yield np.ascontiguousarray(out[..., r0 - h0 : r1 - h0, :])
        base += n
        if progress is not None:
            progress(base, total)


def predict_bands(
    frame: Any,
    model: tuple[nn.Module, dict],
    predict_frame: Callable[..., np.ndarray],
    *,
    tile: int = TILE,
    overlap: int = OVERLAP,
    engine_kw: dict[str, Any] | None = None,
    **kw: Any,
) -> Iterator[np.ndarray]:
    """``predict_frame(rows, model, ..., stats=whole frame's)`` band by band (iter_bands).

    ``predict_frame`` is the engine's frame call (``denoise``, ``segment``) with its own
    ``engine_kw`` (device, pixel size); taking it as an argument keeps this module below
    them, so neither imports the other in a circle.
    """
    norm = Normalization.from_dict(model[1].get("normalization"))
    bin = kw.pop("bin", 1)
    rows = kw.get("band", BAND_ROWS)
    stats = frame_stats(frame, norm, rows=rows, bin=bin)
    # the whole frame's padding (values and data hull): each band is judged by it, as the
    # frame is (none: an empty array, so that no band looks for padding of its own)
    padding = frame_padding(frame, block_rows=rows, after_block=lambda: release_pages(frame))
    overlap = model_overlap(model[1], tile, overlap)  # the model's context, in tiles
    kw["halo"] = max(int(kw.get("halo", HALO)), overlap * bin)  # and across bands
    cancel = kw.get("cancel")

    def predict(rows: np.ndarray, report: Progress, row0: int) -> np.ndarray:
        return predict_frame(
            rows,
            model,
            tile=tile,
            overlap=overlap,
            progress=report,
            cancel=cancel,
            stats=stats,
            padding=padding.band(row0) if padding is not None else np.empty(0),
            **(engine_kw or {}),
        )

    return iter_bands(frame, predict, tile=tile, overlap=overlap, **kw)


__all__ = [
    "BAND_ROWS",
    "HALO",
    "LARGE_FRAME_PX",
    "band_rows",
    "is_large",
    "iter_bands",
    "predict_bands",
]
