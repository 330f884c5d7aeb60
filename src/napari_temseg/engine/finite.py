"""Non-finite pixels (NaN, ±inf) and ranges a float32 network cannot hold.

Real frames carry NaN for dead or masked pixels and inf from overflowed detectors, and
float64 files can hold values far beyond float32. Left alone, a NaN or inf poisons the
normalisation and every tile it touches: an all-NaN frame "denoised" to zeros and
segmented into classes, two inf pixels pushed their neighbours outside the input's range,
1e300 became inf. So each float frame is screened once before it meets a network: a frame
with no finite pixel is refused, a few non-finite pixels are filled for the network with
draws of the frame's own pixels and reported, and masked in the result (NaN in a denoised image,
label 0 "not classified" in a segmentation).

Padding is data that is not there either: the border of one value around a
drift-corrected, aligned or rotated frame. A denoiser sees it filled the same way,
rather than a cliff at the clip of the normalisation, and gives it back as it was
(:func:`padding_values`, :func:`padding_mask`): fed as it was, a zero border came back as
a flat 124 on a simulated HRTEM frame around 370, with a ramp into the specimen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import approximate_polygon

from napari_temseg.io.model import DataWarning
from napari_temseg.models.normalize import (
    DEFECT_RUN,
    defect_runs,
    run_masks,
    sample_step,
    subsample,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
#: a border region is padding when at most this share of it lies deeper than
#: ``HULL_SLACK`` px inside the convex hull of the frame's data, and that hull is a
#: polygon of at most ``MAX_CORNERS`` corners (``HULL_SLACK`` px off): a shifted or
#: rotated frame's rectangle clipped by the frame has at most eight
HULL_SHARE = 0.02
HULL_SLACK = 2.0
MAX_CORNERS = 8
#: a border region with no pixel in runs both ways is padding when it lines a side for
#: ``DEFECT_RUN`` px and reaches at least this deep into the frame (a dead row does not)
MIN_STRIP = 2


@dataclass(frozen=True)
class Screen:
    """What one frame holds: how many pixels are not finite, and its finite range."""

    size: int
    nonfinite: int
    lo: float
    hi: float

    @property
    def any_finite(self) -> bool:
        return self.nonfinite < self.size


def median_filled(img: np.ndarray) -> np.ndarray:
    """``img`` with its non-finite pixels replaced by the median of the finite ones (0 when
    none is), in ``img``'s own dtype: what a network or a statistic may read."""
    finite = np.isfinite(img)
    if finite.all():
        return img
    return np.where(finite, img, float(np.median(img[finite])) if finite.any() else 0.0)


def padding_values(
    frame: Any,
    max_samples: int = 1_048_576,
    block_rows: int | None = None,
    after_block: Callable[[], Any] | None = None,
) -> np.ndarray | None:
    """The values that a frame's long runs hold (``models.normalize.defect_runs``, on a
    strided sample, read as ``models.normalize.subsample`` does), or None: the candidates
    for padding, which :func:`padding_mask` finds pixel by pixel. The frame's highest
    value, unless 0, is a detector's ceiling (vacuum that saturates a bright-field camera,
    whatever the outline it meets the specimen along), not padding."""
    return _run_values(subsample(frame, max_samples, block_rows, after_block, flat=False))


def _run_values(grid: np.ndarray) -> np.ndarray | None:
    """The values of a sample's defect runs that may be padding, or None."""
    runs = defect_runs(grid) if grid.ndim == 2 else None
    if runs is None:
        return None
    values = np.unique(grid[runs])
    # nothing above it: a ceiling, not padding (unless 0, the usual padding, above data
    # that are all negative)
    values = values[(values < np.nanmax(grid)) | (values == 0)]
    return values if len(values) else None


@dataclass(frozen=True, eq=False)  # arrays: compared by identity
class Padding:
    """What a whole frame's padding may be, so that its bands (``engine.large``) are
    judged as the frame is: the values it may hold, and the convex hull of the frame's
    data (facet equations in the frame's pixels, from a strided sample; None: each band
    judged on its own data; empty: no padding). A band alone sees a short piece of a
    hole's arc, which looks straight: judged on its own, the vacuum of a 1024 px frame
    with a wide hole was padding in every band and nowhere in the whole frame."""

    values: np.ndarray
    hull: np.ndarray | None = None
    slack: float = HULL_SLACK

    def band(self, row0: int) -> Padding:
        """The same for the band whose first row is the frame's ``row0``."""
        if self.hull is None or not len(self.hull):
            return self
        hull = self.hull.copy()
        hull[:, 2] += hull[:, 0] * row0
        return Padding(self.values, hull, self.slack)

    def scaled(self, sy: float, sx: float) -> Padding:
        """The same for the frame resampled by ``sy`` x ``sx`` (pixel centres mapped as
        ``ndimage.zoom(grid_mode=True)`` and block binning by 1/k map them)."""
        if self.hull is None or not len(self.hull):
            return self
        a, b, c = self.hull.T
        hull = np.stack([a / sy, b / sx, c + a * (0.5 / sy - 0.5) + b * (0.5 / sx - 0.5)], 1)
        norm = np.hypot(hull[:, 0], hull[:, 1])[:, None]
        return Padding(self.values, hull / norm, max(self.slack * min(sy, sx), HULL_SLACK))


def frame_padding(
    frame: Any,
    max_samples: int = 1_048_576,
    block_rows: int | None = None,
    after_block: Callable[[], Any] | None = None,
) -> Padding | None:
    """A large frame's :class:`Padding`, read on a strided sample as
    :func:`padding_values`; None when it has none."""
    grid = subsample(frame, max_samples, block_rows, after_block, flat=False)
    values = _run_values(grid)
    if values is None:
        return None
    step = sample_step(frame.shape, max_samples)
    hull = _data_hull(~np.isin(grid, values) & np.isfinite(grid))
    if hull is not None and len(hull):
        hull = hull * [1.0, 1.0, step]  # grid (i, j) is the frame's (i * step, j * step)
    return Padding(values, hull, HULL_SLACK + step - 1)


def padding_mask(
    frame: np.ndarray,
    values: np.ndarray,
    hull: np.ndarray | None = None,
    slack: float = HULL_SLACK,
) -> np.ndarray:
    """Padding of a 2D frame (a whole frame, or a band of one): pixels that hold one of
    ``values`` in a run of ``DEFECT_RUN`` along their row or column, in a connected region
    that touches the frame's edge and either somewhere runs that far both ways or lines an
    edge that far, ``MIN_STRIP`` px deep or more; and that lies outside the frame's data
    cut along straight lines (the data's convex hull, a polygon of at most
    ``MAX_CORNERS`` corners: a shifted or rotated frame's rectangle, clipped by the
    frame). With them, the value's pixels beside
    them outside that hull: the thin tips of a rotation's wedges, too short for runs.

    Not padding: a stuck column (a line, which a denoiser is trained to fill in), a flat
    region inside the frame (a particle clipped at 0 is specimen), vacuum that saturates
    the camera or is clipped at 0 along the specimen's outline (a hole's arc, a ring round
    a particle: taken for padding, a segmenter left it unclassified and every particle
    beside it touched the border)."""
    frame = np.asarray(frame)
    if len(values) > 8:  # many run values (a posterised image): one pass
        candidate = np.isin(frame, values)
    else:
        candidate = np.zeros(frame.shape, bool)
        for v in values:
            candidate |= frame == v
    none = np.zeros(frame.shape, bool)
    if not candidate.any():
        return none
    rows, cols = run_masks(frame, DEFECT_RUN)
    runs = candidate & (rows | cols)
    regions, _ = ndimage.label(runs)
    sides = [regions[0], regions[-1], regions[:, 0], regions[:, -1]]
    touching = np.unique(np.concatenate(sides))
    touching = touching[touching > 0]
    if not len(touching):
        return none
    cored = np.isin(touching, regions[runs & rows & cols])
    # a region with no pixel in runs both ways (the strip a shift along one axis leaves, a
    # small rotation's thin wedge) lines a side that far, and is deeper than a dead row
    lined = np.array([ndimage.sum_labels(side > 0, side, touching) for side in sides])
    boxes = ndimage.find_objects(regions)
    deep_px = np.array([[b[0].stop - b[0].start, b[1].stop - b[1].start] for b in boxes])
    depth = deep_px[touching - 1][:, [0, 0, 1, 1]].T  # across the top, bottom, left, right
    strip = ((lined >= DEFECT_RUN) & (depth >= MIN_STRIP)).any(axis=0)
    keep = touching[cored | strip]
    if not len(keep):
        return none
    if hull is None:  # the frame's own data (``hull``: a whole frame's, for a band)
        data = ~candidate & np.isfinite(frame) if frame.dtype.kind in "fc" else ~candidate
        hull = _data_hull(data)
    if hull is None:
        return np.isin(regions, keep)  # no data to cut from (a line of it, or none)
    if not len(hull):
        return none  # the data is no polygon of a few corners: not a frame moved
    deep = _inside(frame.shape, hull, slack) & runs
    # what reaches into the data thickly is specimen (vacuum along a hole's arc); a line
    # (a dead column crossing the border) is left out, and the border kept
    thick = np.zeros_like(deep)
    if deep.any():  # opened within the box that holds it (a border holds none)
        box = ndimage.find_objects(deep.astype(np.uint8))[0]
        thick[box] = ndimage.binary_opening(deep[box], np.ones((5, 5), bool))
    sizes = ndimage.sum_labels(runs, regions, keep)
    keep = keep[ndimage.sum_labels(thick, regions, keep) <= HULL_SHARE * sizes]
    if not len(keep):
        return none
    mask = np.isin(regions, keep) & ~deep
    beside = mask | (candidate & ~_inside(frame.shape, hull, 0.5))
    parts, _ = ndimage.label(beside)
    return np.isin(parts, np.unique(parts[mask]))


def _data_hull(data: np.ndarray) -> np.ndarray | None:
    """The equations of the convex hull of a mask's pixels (from each row's first and last
    pixel, which span the same hull); none (an empty array) when that hull is not a
    polygon of at most ``MAX_CORNERS`` corners (``HULL_SLACK`` px off); None when it has
    no area."""
    ys = np.flatnonzero(data.any(axis=1))
    if len(ys) < 2:
        return None
    first = data[ys].argmax(axis=1)
    last = data.shape[1] - 1 - data[ys, ::-1].argmax(axis=1)
    points = np.concatenate([np.c_[ys, first], np.c_[ys, last]])
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # a line: no area
        return None
    ring = points[np.r_[hull.vertices, hull.vertices[:1]]]
    if len(approximate_polygon(ring, tolerance=HULL_SLACK)) - 1 > MAX_CORNERS:
        return np.empty((0, 3))
    return hull.equations


def _inside(shape: tuple[int, ...], equations: np.ndarray, depth: float) -> np.ndarray:
    """Pixels whose centres lie more than ``depth`` px inside a convex hull (its facets'
    equations ``a_y y + a_x x + c <= 0``, unit normals), found row by row."""
    y = np.arange(shape[0], dtype=np.float64)[:, None]
    lo = np.full((shape[0], 1), -np.inf)
    hi = np.full((shape[0], 1), np.inf)
    for a_y, a_x, c in equations:
        bound = (-depth - c - a_y * y) / a_x if a_x else None
        if a_x > 0:
            hi = np.minimum(hi, bound)
        elif a_x < 0:
            lo = np.maximum(lo, bound)
        else:
            lo = np.where(a_y * y + c <= -depth, lo, np.inf)
    x = np.arange(shape[1], dtype=np.float64)[None, :]
    return (x >= lo) & (x <= hi)


def padding_of(frame: Any, values: np.ndarray | Padding | None = None) -> np.ndarray | None:
    """The padding mask of a 2D frame, or None when it has none. ``values``: the values
    its padding may hold, when known from a larger frame (empty: none), or a whole
    frame's :class:`Padding` for one of its bands; found on the frame itself when None."""
    hull, slack = None, HULL_SLACK
    if isinstance(values, Padding):
        values, hull, slack = values.values, values.hull, values.slack
    values = padding_values(frame) if values is None else values
    if values is None or not len(values):
        return None
    mask = padding_mask(np.asarray(frame), values, hull, slack)
    return mask if mask.any() else None


def fill_pool(frame: Any, pad: np.ndarray | None) -> np.ndarray:
    """A sample of the frame's data (finite, not padding; taken by position on a strided
    grid, so a counting frame's own zeros stay in it), shuffled once: what
    :func:`fill_at` draws from."""
    step = sample_step(tuple(frame.shape[-2:]), 65_536)
    grid = np.asarray(frame[::step, ::step], np.float64)
    ok = np.isfinite(grid)
    if pad is not None:
        ok &= ~pad[::step, ::step]
    pool = grid[ok]
    return np.random.default_rng(0).permutation(pool) if pool.size else np.zeros(1)


def fill_at(rows: np.ndarray, cols: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Values for the pixels at ``rows`` x ``cols`` of a frame, drawn from ``pool`` (a
    sample of its own data, :func:`fill_pool`) by position: the same in every tile that
    reads a pixel, so tiles agree, and noise like the frame's. A constant (the median) left
    the network a flat region beside noisy data, which it took for structure: on simulated
    HRTEM at 10 e/px the 16 px beside a filled border scored 7.9 dB, with these draws 17.2
    (17.5 without the border)."""
    z = (rows[:, None].astype(np.uint64) << np.uint64(32)) | cols[None, :].astype(np.uint64)
    return _draw(z, pool)


def _draw(z: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``pool`` indexed by a splitmix64 hash of the keys ``z`` (row << 32 | column)."""
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64
        z = (z ^ (z >> np.uint64(shift))) * np.uint64(mul)
    z ^= z >> np.uint64(31)
    return pool[(z % np.uint64(len(pool))).astype(np.int64)]


def filled(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A 2D frame with its pixels that hold no data (:func:`no_data`: NaN, ±inf, padding)
    filled as the tiles fill them for a network (:func:`fill_at`), and their mask (None
    when it has none): what a network trained on the frame should see, as it will at
    inference. -> (a float copy, or ``img`` itself when nothing is missing; the mask)"""
    missing = no_data(img)
    if not missing.any():
        return img, None
    out = np.array(img, np.float64 if np.dtype(img.dtype).itemsize > 4 else np.float32)
    rows, cols = np.nonzero(missing)
    keys = (rows.astype(np.uint64) << np.uint64(32)) | cols.astype(np.uint64)
    out[rows, cols] = _draw(keys, fill_pool(out, missing))
    return out, missing


def no_data(image: np.ndarray) -> np.ndarray:
    """Pixels of a 2D frame that hold no data: non-finite, or its padded border."""
    x = np.asarray(image)
    missing = ~np.isfinite(x) if x.dtype.kind in "fc" else np.zeros(x.shape, bool)
    pad = padding_of(x)
    return missing if pad is None else missing | pad


def screen(frame: Any, rows: int = 512) -> Screen | None:
    """Count the non-finite pixels of a float frame and find its finite range, reading
    ``rows`` rows at a time (memory maps and dask arrays are not loaded whole).
    None for integer frames, which cannot hold NaN or inf."""
    if np.dtype(frame.dtype).kind not in "fc":
        return None
    nonfinite, lo, hi = 0, np.inf, -np.inf
    for r0 in range(0, frame.shape[0], rows):
        block = np.asarray(frame[r0 : r0 + rows])
        finite = np.isfinite(block)
        nonfinite += int(block.size - np.count_nonzero(finite))
        if finite.any():
            values = block[finite]
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return Screen(int(np.prod(frame.shape)), nonfinite, lo, hi)


#: what a frame of a stack with no finite pixel (a dropped frame of a movie) gets: it is
#: left out, NaN when denoised and 0 (not classified) when segmented, so that one such
#: frame does not stop a run of the others; a 2D image with none is refused
LEFT_OUT = "every pixel is NaN or infinite: left out (NaN when denoised, 0 when segmented)"


def left_out(frame: Any, where: str) -> bool:
    """True, with a :class:`DataWarning` naming it (``where``: "frame 3: "), when a frame
    of a stack holds no finite pixel; see :data:`LEFT_OUT`."""
    found = screen(frame)
    if found is None or found.size == 0 or found.any_finite:
        return False
    warnings.warn(f"{where}{LEFT_OUT}", DataWarning, stacklevel=3)
    return True


def check_frame(found: Screen | None, where: str, whole: bool, output_float32: bool) -> None:
    """Refuse what cannot be processed; report the non-finite pixels that will be masked.

    ``whole`` is False for a band of a larger frame (an all-NaN band is masked, not
    refused); ``output_float32`` when the result is in the input's units (denoising).
    """
    if found is None or found.size == 0:
        return
    if not found.any_finite:
        if whole:
            raise ValueError(f"{where}every pixel is NaN or infinite: there is nothing to process")
        return
    if output_float32 and max(abs(found.lo), abs(found.hi)) > FLOAT32_MAX:
        raise ValueError(
            f"{where}pixel values reach {max(abs(found.lo), abs(found.hi)):.3g}, beyond what "
            f"a float32 result can hold ({FLOAT32_MAX:.3g}); rescale the image first"
        )
    if found.nonfinite:
        warnings.warn(
            f"{where}{found.nonfinite} of {found.size} pixels are NaN or infinite: filled "
            "from the frame's own pixels and masked in the result",
            DataWarning,
            stacklevel=3,
        )


#: a float32 result must hold at least this many steps across a frame's spread (its
#: 0.5-99.5 % range): at 75 a denoised frame came back 4 % of its spread off, at 5
#: flattened to a few values (docs/denoise.md, "Bad input")
MIN_FLOAT32_STEPS = 128


def check_float32_steps(frame: Any, where: str = "") -> None:
    """Refuse a frame whose contrast a float32 result cannot hold: a float64 or 32/64-bit
    integer frame with its variation on a large offset (1e8 plus a spread of 1 came back
    as two values). Frames a float32 holds exactly are not read at all."""
    dt = np.dtype(frame.dtype)
    if (dt.kind == "f" and dt.itemsize <= 4) or (dt.kind in "ui" and dt.itemsize < 4):
        return
    grid = subsample(frame, 65_536)  # float64, on the normalisation's strided grid
    grid = grid[np.isfinite(grid)]
    if not grid.size or grid.min() == grid.max():  # constant: given back as it is
        return
    lo, hi = np.percentile(grid, [0.5, 99.5])
    spread = float(hi - lo) or 4 * float(grid.std())  # a sparse frame: as the normalisation
    near = max(abs(float(lo)), abs(float(hi)))
    steps = spread / float(np.spacing(np.float32(near)))
    if steps < MIN_FLOAT32_STEPS:
        raise ValueError(
            f"{where}pixel values near {near:.6g} vary by only {spread:.3g}, {steps:.2g} "
            "float32 steps there: too coarse for a float32 result; subtract the offset first"
        )


def training_frame(
    img: np.ndarray, lab: np.ndarray, where: str, error: type[Exception] = ValueError
) -> tuple[np.ndarray, np.ndarray]:
    """A painted frame as float32 with its pixels that hold no data (non-finite, padding)
    filled as the tiles fill them at inference (:func:`filled`): trained on raw, a zero
    border was a cliff the segmenter never met when it segmented, and NaN pixels the
    median, a flat patch beside noisy data. Strokes on non-finite pixels are dropped;
    those on what reads as padding are kept (a dark-field vacuum clipped at 0 beyond a
    straight edge reads so, and its strokes may be a class's only ones).

    A frame with no finite pixel, or a constant one, holds nothing to learn from: it is
    refused (``error``, naming ``where``), rather than trained on and saved as a model
    that cannot work. -> (img, lab)
    """
    finite = np.isfinite(img)
    if not finite.any():
        raise error(f"{where} has no finite pixel value (all NaN or infinite); check the file")
    img, _ = filled(img)
    if not finite.all():
        lab = np.where(finite, lab, 0).astype(np.uint8)  # strokes on them teach nothing
    if img.min() == img.max():
        raise error(
            f"{where} is constant (every pixel {float(img.flat[0]):g}): there is nothing "
            "in it to tell the classes apart; check that the right image was given"
        )
    return img.astype(np.float32), lab
