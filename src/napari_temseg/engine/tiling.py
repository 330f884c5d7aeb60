"""Tiled inference for images of any size: the one loop behind denoising and segmentation.

Frames are processed one at a time (stacks frame by frame), and each frame tile by tile,
reading only the region a tile needs (numpy, dask, zarr, memmaps all slice lazily). Tiles
overlap and are blended with raised-cosine weights that fall to (almost) zero at a tile's
inner edges, where the network saw padding instead of context. The image border gets
context too: the frame is extended by the overlap, mirrored, and the extension is
cropped away. Without it a network with zero-padded convolutions answers differently
along the border: a segmenter fine-tuned on real HAADF frames put 12-21 % of its atoms
within 2 px of the edge, where annotators marked none (``docs/benchmarks.md``). The
weights of a tile are the outer product of a row and a column window, so their sum over the
tile grid is separable too: dividing by it needs no full weight map.
The accumulator is the output frame itself (on the CPU) or one frame on the GPU, so memory
stays at about input + output + one batch of tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.device import cpu_has_fast_bf16, select_device
from napari_temseg.engine.finite import (
    Padding,
    check_float32_steps,
    check_frame,
    fill_at,
    fill_pool,
    left_out,
    padding_of,
    screen,
)
from napari_temseg.models.normalize import Normalization

Progress = Callable[[int, int], Any]
MIN_TILE = 32


class Cancelled(Exception):
    """Raised between tiles (or training steps) when the caller's cancel event is set."""


class _ShrinkTile(Exception):
    """Internal: out of GPU memory at batch 1; restart the frame with smaller tiles."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles covering ``[0, length)``; the last one ends at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _window(start: int, size: int, length: int, overlap: int) -> np.ndarray:
    """1D blending weights of one tile, toward inner neighbours only.

    Over the ``overlap`` pixels at an inner edge the weight is ~0 for the outer quarter
    (padding-affected pixels, left to the neighbour), a raised-cosine ramp across the
    middle half and 1 in the inner quarter; with the neighbour's mirror-image ramp every
    pixel of the overlap has total weight >= 0.5 and the blend is smooth.
    """
    w = np.ones(size, np.float32)
    ramp_len = min(overlap, size // 2)
    if ramp_len > 0:
        margin = ramp_len // 4
        d = np.arange(ramp_len, dtype=np.float64) + 0.5
        t = np.clip((d - margin) / max(ramp_len - 2 * margin, 1), 0.0, 1.0)
        ramp = np.maximum(np.sin(0.5 * np.pi * t) ** 2, 1e-6).astype(np.float32)
        if start > 0:
            w[:ramp_len] = ramp
        if start + size < length:
            w[size - ramp_len :] = ramp[::-1]
    return w


def border_margin(overlap: int, height: int, width: int) -> int:
    """Pixels of mirrored context added on every side of a frame: the overlap, as an
    inner tile edge gets, but no more than the frame's own size."""
    return max(0, min(overlap, height, width))


def _grid(
    height: int, width: int, tile: int, overlap: int
) -> tuple[int, int, int, int, list[int], list[int]]:
    """``(margin, th, tw, ov, ys, xs)``: how a frame is tiled. Tiles of ``th x tw`` start at
    ``ys x xs`` in the frame extended by ``margin`` mirrored pixels, overlapping by ``ov``;
    one place, so that prediction and the progress totals always agree."""
    margin = border_margin(overlap, height, width)
    ph, pw = height + 2 * margin, width + 2 * margin
    th, tw = min(tile, ph), min(tile, pw)
    ov = min(overlap, max(0, min(th, tw) // 2 - 1))
    return margin, th, tw, ov, tile_starts(ph, th, ov), tile_starts(pw, tw, ov)


def _mirror(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``[0, length)`` by mirroring at the ends
    (numpy's ``reflect``: the edge pixel is not repeated), as often as needed."""
    i = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(i)
    period = 2 * (length - 1)
    i = np.abs(i) % period
    return np.where(i >= length, period - i, i)


def _read(frame: Any, y: int, x: int, th: int, tw: int, margin: int) -> np.ndarray:
    """The ``th x tw`` tile at ``(y, x)`` of the frame extended by ``margin`` mirrored
    pixels, read as one slice of the frame (lazy arrays stay lazy outside it)."""
    height, width = frame.shape[-2:]
    y0, x0 = y - margin, x - margin
    if y0 >= 0 and x0 >= 0 and y0 + th <= height and x0 + tw <= width:
        return np.asarray(frame[y0 : y0 + th, x0 : x0 + tw], dtype=np.float64)
    rows, cols = _mirror(y0, y0 + th, height), _mirror(x0, x0 + tw, width)
    r0, c0 = int(rows.min()), int(cols.min())
    block = np.asarray(frame[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1], np.float64)
    return block[np.ix_(rows - r0, cols - c0)]


def _weight_sum(starts: list[int], size: int, length: int, overlap: int) -> np.ndarray:
    total = np.zeros(length, np.float32)
    for s in starts:
        total[s : s + size] += _window(s, size, length, overlap)
    return total


def _default_batch(device: torch.device, th: int, tw: int) -> int:
    if device.type == "cpu":
        return 2
    return int(np.clip(64 * (256 * 256) / (th * tw), 1, 256))


def _amp_dtype(device: torch.device, cpu: bool = False) -> torch.dtype | None:
    """The autocast type on ``device``: CUDA's, or with ``cpu`` bfloat16 on a CPU that
    computes it natively (``engine.device.cpu_has_fast_bf16``); None for none."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu and cpu_has_fast_bf16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_tiling(tile: int, overlap: int) -> None:
    """The tile and overlap every tiled run accepts (ValueError saying which is wrong)."""
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} pixels, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"overlap must be in [0, tile/2), got {overlap} for tile {tile}")


def model_overlap(meta: dict[str, Any], tile: int, overlap: int) -> int:
    """The overlap to tile with: at least the model's recorded ``context_px``.

    A network that looks far around each pixel gives different answers near a tile's
    inner edge than inside a whole frame; ``context_px`` (written by
    ``scripts/measure_context.py``) is the overlap at which its tiled and whole-frame
    results agree on real frames. A smaller request is raised to it, never beyond what
    the tile allows (less than half of it).
    """
    need = int(meta.get("context_px", 0) or 0)
    return max(overlap, min(need, tile // 2 - 1))


def _check_args(shape: tuple[int, ...], tile: int, overlap: int, out_channels: int) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"expected an image of at least 2 dimensions (..., Y, X), got shape {shape}"
        )
    if min(shape) == 0:
        raise ValueError(f"the image is empty (shape {shape})")
    check_tiling(tile, overlap)
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}")


def predict_tiled(
    image: Any,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: int = TILE,
    overlap: int = OVERLAP,
    out_channels: int = 1,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    normalization: Normalization | None = None,
    denormalize: bool = True,
    amp: bool | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    out: np.ndarray | None = None,
    stats: tuple[float, float] | None = None,
    within_input: bool = False,
    padding: np.ndarray | Padding | None = None,
) -> np.ndarray:
    """Apply ``fn`` to an image of any size, tile by tile, and blend the tiles seamlessly.

    ``image`` is (..., Y, X): every leading index is a frame. ``fn`` maps a batch of
    normalised tiles ``(B, 1, h, w)`` on ``device`` to ``(B, out_channels, h, w)``; it runs
    under ``torch.inference_mode`` and, on CUDA when ``amp`` is not False, autocast; with
    ``amp`` True also in bfloat16 on a CPU that computes it natively.
    Each frame is normalised with its own robust statistics (``normalization``; None = as
    is) and, when ``denormalize``, the result is mapped back to the frame's intensity range
    (denoising); segmentation passes ``denormalize=False`` and gets ``fn``'s values.

    Returns float32 of shape (..., Y, X) for one output channel, else (..., C, Y, X)
    (written into ``out`` when given, e.g. a memmap for huge stacks). ``progress(done,
    total)`` is called after every batch of tiles; ``cancel`` is checked before every
    batch and raises :class:`Cancelled`. On CUDA out-of-memory the batch is halved, then
    the tile, and the run continues. ``stats`` fixes the normalisation statistics of
    every frame (a band of a larger frame must use the whole frame's, see ``engine.large``),
    and ``padding`` the values its padding may hold (``engine.finite.padding_values``),
    or a whole frame's ``engine.finite.Padding`` for a band of it (found on each frame
    when None).

    Float frames are screened first (``engine.finite``): a frame with no finite pixel is a
    ``ValueError``, a few NaN/inf pixels are filled from the frame's own pixels and reported as
    a ``DataWarning``. With ``within_input`` (denoising) they are NaN in the result, which
    is clipped to the frame's finite input range: no output value lies outside what the
    input allows. Padding (``engine.finite.padding_mask``) is filled the same way, and
    with ``within_input`` given back as it was.
    """
    shape = tuple(int(s) for s in image.shape)
    _check_args(shape, tile, overlap, out_channels)
    dev = select_device(device)
    lead, (height, width) = shape[:-2], shape[-2:]
    out_shape = (
        (*lead, height, width) if out_channels == 1 else (*lead, out_channels, height, width)
    )
    if out is None:
        out = np.empty(out_shape, np.float32)
    elif out.shape != out_shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {out_shape}, got {out.dtype} {out.shape}")
    amp_dtype = None if amp is False else _amp_dtype(dev, cpu=amp is True)
    state = {"tile": tile, "batch": batch_size, "done": 0}
    frames = list(np.ndindex(*lead)) if lead else [()]
    for k, idx in enumerate(frames):
        target = out[idx] if idx else out
        done_before = state["done"]
        label = f"frame {', '.join(map(str, idx))}: " if idx else ""
        if idx and left_out(image[idx], label):  # a dropped frame stops no other
            target[...] = np.nan if within_input else 1.0 / out_channels
            per_frame = tiles_per_frame((height, width), state["tile"], overlap)
            state["done"] += per_frame
            if progress is not None:
                progress(state["done"], state["done"] + (len(frames) - k - 1) * per_frame)
            continue
        while True:
            try:
                _predict_frame(
                    image[idx] if idx else image,
                    target,
                    fn,
                    dev,
                    state,
                    overlap,
                    out_channels,
                    normalization,
                    denormalize,
                    amp_dtype,
                    progress,
                    cancel,
                    remaining_frames=len(frames) - k,
                    stats=stats,
                    within_input=within_input,
                    padding=padding,
                    label=label,
                )
                break
            except _ShrinkTile:
                state["done"] = done_before
                state["tile"] = max(MIN_TILE, state["tile"] // 2)
    return out


def _predict_frame(
    frame: Any,
    target: np.ndarray,
    fn: Callable[[torch.Tensor], torch.Tensor],
    dev: torch.device,
    state: dict,
    overlap: int,
    out_channels: int,
    normalization: Normalization | None,
    denormalize: bool,
    amp_dtype: torch.dtype | None,
    progress: Progress | None,
    cancel: threading.Event | None,
    remaining_frames: int,
    stats: tuple[float, float] | None = None,
    within_input: bool = False,
    padding: np.ndarray | Padding | None = None,
    label: str = "",
) -> None:
    """Predict one frame into ``target`` ((Y, X) or (C, Y, X) float32)."""
    height, width = frame.shape[-2:]
    found = screen(frame)
    check_frame(found, label, whole=stats is None, output_float32=within_input)
    if within_input:  # a result in the frame's units, as float32
        check_float32_steps(frame, label)
    nonfinite = found is not None and found.nonfinite > 0  # an all-NaN band too
    pad = padding_of(frame, padding)  # filled for the network; a denoiser gives it back
    fill = fill_pool(frame, pad) if nonfinite or pad is not None else None
    seen = [np.inf, -np.inf]  # the frame's finite input range, from the tiles as read
    margin, th, tw, ov, ys, xs = _grid(height, width, state["tile"], overlap)
    ph, pw = height + 2 * margin, width + 2 * margin  # the frame with its mirrored border
    tiles = [(y, x) for y in ys for x in xs]
    total = state["done"] + remaining_frames * len(tiles)
    if stats is None:
        stats = normalization.stats(frame) if normalization is not None else (0.0, 1.0)
    wy = {y: torch.from_numpy(_window(y, th, ph, ov)) for y in ys}
    wx = {x: torch.from_numpy(_window(x, tw, pw, ov)) for x in xs}
    acc_dev = _accumulator_device(dev, out_channels, height, width)
    in_place = acc_dev.type == "cpu" and target.flags.c_contiguous and target.flags.writeable
    if in_place:
        acc = torch.from_numpy(target).view(out_channels, height, width)  # blend in place
        acc.zero_()
    else:
        acc = torch.zeros((out_channels, height, width), dtype=torch.float32, device=acc_dev)
    wy = {k: v.to(acc_dev) for k, v in wy.items()}
    wx = {k: v.to(acc_dev) for k, v in wx.items()}
    batch = state["batch"] or _default_batch(dev, th, tw)
    i = 0
    while i < len(tiles):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {state['done']} of {total} tiles")
        chunk = tiles[i : i + batch]
        x = _gather(frame, chunk, th, tw, margin, dev, stats, normalization, fill, seen, pad)
        try:
            with (
                torch.inference_mode(),
                torch.autocast(
                    dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ),
            ):
                y = fn(x)
        except torch.cuda.OutOfMemoryError:
            del x
            _free(dev)
            if batch > 1:
                batch = state["batch"] = max(1, batch // 2)
                continue
            if min(th, tw) > MIN_TILE:
                raise _ShrinkTile() from None
            raise
        if y.shape != (len(chunk), out_channels, th, tw):
            raise ValueError(
                f"the model returned shape {tuple(y.shape)} for tiles of "
                f"{(len(chunk), 1, th, tw)}; expected {out_channels} channel(s) of the same size"
            )
        y = torch.nan_to_num(y.float()).to(acc_dev)
        for (ty, tx), yk in zip(chunk, y, strict=True):
            ry, rx = _inside(ty, th, margin, height), _inside(tx, tw, margin, width)
            weight = wy[ty][ry][:, None] * wx[tx][rx][None, :]
            acc[
                :,
                ty - margin + ry.start : ty - margin + ry.stop,
                tx - margin + rx.start : tx - margin + rx.stop,
            ] += yk[:, ry, rx] * weight
        i += len(chunk)
        state["done"] += len(chunk)
        if progress is not None:
            progress(state["done"], total)
    norm_y = torch.from_numpy(_weight_sum(ys, th, ph, ov)[margin : margin + height]).to(acc_dev)
    norm_x = torch.from_numpy(_weight_sum(xs, tw, pw, ov)[margin : margin + width]).to(acc_dev)
    in_range = within_input and seen[0] <= seen[1]
    for r0 in range(0, height, 1024):  # row blocks: no full-frame temporary
        block = acc[:, r0 : r0 + 1024]
        block /= norm_y[r0 : r0 + 1024, None] * norm_x[None, :]
        if denormalize and normalization is not None:
            block.mul_(stats[1]).add_(stats[0])
        if in_range:
            block.clamp_(seen[0], seen[1])
        if within_input and nonfinite:  # no data there: masked, not invented
            bad = ~np.isfinite(np.asarray(frame[r0 : r0 + 1024]))
            block[:, torch.from_numpy(bad).to(acc_dev)] = float("nan")
        if within_input and pad is not None:  # padding comes back as it was
            _restore_padding(block, frame, pad, r0)
    if not in_place:
        target[...] = acc.cpu().numpy().reshape(target.shape)


def _restore_padding(block: torch.Tensor, frame: Any, pad: np.ndarray, r0: int) -> None:
    """Put the padding (``pad``, the frame's mask) of rows ``r0 ...`` back into ``block``."""
    mask = pad[r0 : r0 + block.shape[1]]
    if mask.any():
        src = np.asarray(frame[r0 : r0 + block.shape[1]])
        values = torch.from_numpy(src[mask].astype(np.float32)).to(block.device)
        block[:, torch.from_numpy(mask).to(block.device)] = values


def _inside(start: int, size: int, margin: int, length: int) -> slice:
    """The part of a tile starting at ``start`` (in the extended frame) that lies in the frame."""
    return slice(max(0, margin - start), min(size, length + margin - start))


def _gather(
    frame: Any,
    chunk: list[tuple[int, int]],
    th: int,
    tw: int,
    margin: int,
    dev: torch.device,
    stats: tuple[float, float],
    normalization: Normalization | None,
    fill: np.ndarray | None = None,
    seen: list[float] | None = None,
    pad: np.ndarray | None = None,
) -> torch.Tensor:
    """Read the tiles of a batch from the frame (extended by ``margin``, mirrored) and
    normalise them for ``dev``.

    Normalised in float64, so float64 frames far beyond float32's range (1e300) reach
    the network as ordinary numbers; non-finite pixels, and the frame's padding (``pad``,
    its mask), are filled from ``fill`` (a sample of the frame's data, :func:`engine.finite.fill_at`)
    first; ``seen`` grows to the finite range of every pixel read.
    """
    arr = np.stack([_read(frame, y, x, th, tw, margin) for y, x in chunk])
    finite = np.isfinite(arr)
    if seen is not None and finite.any():
        values = arr if finite.all() else arr[finite]
        seen[0], seen[1] = min(seen[0], float(values.min())), max(seen[1], float(values.max()))
    if fill is not None:  # the frame has non-finite pixels or padding
        height, width = frame.shape[-2:]
        for k, (y, x) in enumerate(chunk):
            rows = _mirror(y - margin, y - margin + th, height)
            cols = _mirror(x - margin, x - margin + tw, width)
            data = finite[k] if pad is None else finite[k] & ~pad[np.ix_(rows, cols)]
            if not data.all():
                arr[k] = np.where(data, arr[k], fill_at(rows, cols, fill))
    if normalization is not None:
        arr = normalization.apply(arr, stats)
    x = torch.from_numpy(arr.astype(np.float32)).to(dev, non_blocking=True)[:, None]
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # dead/NaN pixels: neutral


def _accumulator_device(dev: torch.device, channels: int, height: int, width: int) -> torch.device:
    """Blend on the GPU when a frame's accumulator fits comfortably, else in host memory."""
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        if 4 * channels * height * width < free // 4:
            return dev
    return torch.device("cpu")


def _free(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def tiles_per_frame(shape: tuple[int, ...], tile: int, overlap: int) -> int:
    """How many tiles one frame of ``shape`` takes (for progress bars and estimates)."""
    _, _, _, _, ys, xs = _grid(int(shape[-2]), int(shape[-1]), tile, overlap)
    return len(ys) * len(xs)


__all__ = ["Cancelled", "model_overlap", "predict_tiled", "tile_starts", "tiles_per_frame"]
