"""The one large / 2D / stack dispatch: what a file's result is written from.

A 2D frame is predicted whole; a stack becomes an ``io.FrameStream`` that predicts frame
by frame as the writer asks for each (the memory-mapped input's pages given back after
each frame); a 2D frame above the large-frame size becomes an ``io.TileStream`` that
predicts band by band (``engine.large``). Denoising and segmenting files differ only in
the two callables they pass, so neither has to fit a whole stack or frame in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from napari_temseg.engine.large import is_large, release_pages


def streamed(
    data: Any,
    dtype: Any,
    predict_frame: Callable[[Any, tuple, int], np.ndarray],
    predict_bands: Callable[[Any], Iterator[np.ndarray]],
    large_frame_px: int | None = None,
) -> Any:
    """``data``'s result, or what writes it piece by piece.

    ``predict_frame(frame, index, n)`` gets one 2D frame with its stack index (``()`` for
    a 2D input) and its number in reading order; ``predict_bands(frame)`` gets a frame
    larger than ``large_frame_px`` and yields its bands of result, top to bottom.
    """
    from napari_temseg.io import FrameStream, TileStream

    if is_large(data.shape, large_frame_px):
        return TileStream(data.shape, dtype, predict_bands(data))
    if data.ndim == 2:
        return predict_frame(data, (), 0)
    lead = data.shape[:-2]

    def frames() -> Iterator[np.ndarray]:
        for n, idx in enumerate(np.ndindex(*lead)):
            out = predict_frame(data[idx], idx, n)
            release_pages(data)  # a memory-mapped stack: drop the frame's pages
            yield out

    return FrameStream(data.shape, dtype, frames())


__all__ = ["streamed"]
