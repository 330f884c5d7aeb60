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
from napari_temseg.models.normalize import DEFECT_RUN, defect_runs, run_masks, subsample

FLOAT32_MAX = float(np.finfo(np.float32).max)
#: a border region is padding when what it leaves of the frame is convex (at most this
#: share of the region lies deeper than ``HULL_SLACK`` px inside that rest's convex hull)
#: and a polygon of at most ``MAX_CORNERS`` corners (``HULL_SLACK`` px off): the moved
#: frame's rectangle clipped by the frame has at most eight
HULL_SHARE = 0.02
HULL_SLACK = 2.0
MAX_CORNERS = 8
#: a border region with no pixel in runs both ways is padding when it lines an edge at
#: least this deep on average (the strip a shift along one axis leaves); a dead column or
#: two at the edge is not (the network fills them in)
MIN_STRIP = 4


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
    for padding, which :func:`padding_mask` finds pixel by pixel."""
    grid = subsample(frame, max_samples, block_rows, after_block, flat=False)
    runs = defect_runs(grid) if grid.ndim == 2 else None
    return None if runs is None else np.unique(grid[runs])


def padding_mask(frame: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Padding of a 2D frame (a whole frame, or a band of one): pixels that hold one of
    ``values`` in a run of ``DEFECT_RUN`` along their row or column, in a connected region
    that touches the frame's edge, and either somewhere runs that far both ways or lines
    an edge ``MIN_STRIP`` px deep on average; a region cut from the frame along straight
    lines (:func:`_straight_edged`). So the border of a shifted, aligned or rotated frame,
    with the thin tip of a rotation's wedge, and the strip a shift along one axis leaves;
    not a stuck column (a line, which a denoiser is trained to fill in), nor a flat region
    inside the frame (a particle clipped at 0 is specimen), nor vacuum that saturates the
    camera."""
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
    cored = set(np.unique(regions[runs & rows & cols]).tolist())
    sizes = ndimage.sum_labels(runs, regions, touching)
    lined = np.max([ndimage.sum_labels(side > 0, side, touching) for side in sides], axis=0)
    strips = (lined >= DEFECT_RUN) & (sizes >= MIN_STRIP * lined)
    keep = [k for k, strip in zip(touching, strips, strict=True) if strip or k in cored]
    if not keep:
        return none
    boxes = ndimage.find_objects(regions)
    keep = [k for k in keep if _straight_edged(regions, k, boxes[k - 1])]
    return np.isin(regions, keep)


def _straight_edged(regions: np.ndarray, label: int, box: tuple[slice, ...]) -> bool:
    """Whether region ``label`` is cut from the frame along straight lines, as an aligned
    or rotated frame's border is: what it leaves of the frame is then convex (the frame
    meets the moved frame's rectangle) and a polygon of a few corners.

    A detector's ceiling or floor is not: the saturated vacuum of a bright-field frame, or
    a dark-field vacuum clipped at 0, reaches the edge along the specimen's outline (a
    hole's arc, a ring around a particle). Taken for padding, it was left unclassified by a
    segmenter and made every particle beside it touch the border."""
    region = regions == label
    rest = ~region
    outline = rest & ~ndimage.binary_erosion(rest, border_value=0)  # with the frame's edge
    points = np.argwhere(outline)
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # the rest is a line or less: nothing to judge
        return True
    own = np.argwhere(region[box]) + [s.start for s in box]
    step = max(1, len(own) // 200_000)
    depth = own[::step] @ hull.equations[:, :2].T + hull.equations[:, 2]
    cut_in = np.count_nonzero(depth.max(axis=1) < -HULL_SLACK) * step
    if cut_in > HULL_SHARE * len(own):
        return False  # the rest is not convex: cut along the specimen, not a line
    ring = points[np.r_[hull.vertices, hull.vertices[:1]]]
    return len(approximate_polygon(ring, tolerance=HULL_SLACK)) - 1 <= MAX_CORNERS


def padding_of(frame: Any, values: np.ndarray | None = None) -> np.ndarray | None:
    """The padding mask of a 2D frame, or None when it has none. ``values``: the values
    its padding may hold, when known from a larger frame (``engine.large`` passes a whole
    frame's to its bands; empty: none); found on the frame itself when None."""
    values = padding_values(frame) if values is None else values
    if values is None or not len(values):
        return None
    mask = padding_mask(np.asarray(frame), values)
    return mask if mask.any() else None


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


def training_frame(
    img: np.ndarray, lab: np.ndarray, where: str, error: type[Exception] = ValueError
) -> tuple[np.ndarray, np.ndarray]:
    """A painted frame as float32 with its non-finite pixels filled and unlabelled.

    A frame with no finite pixel, or a constant one, holds nothing to learn from: it is
    refused (``error``, naming ``where``), rather than trained on and saved as a model
    that cannot work. -> (img, lab)
    """
    finite = np.isfinite(img)
    if not finite.all():
        if not finite.any():
            raise error(f"{where} has no finite pixel value (all NaN or infinite); check the file")
        img = median_filled(img)
        lab = np.where(finite, lab, 0).astype(np.uint8)  # strokes on them teach nothing
    if img.min() == img.max():
        raise error(
            f"{where} is constant (every pixel {float(img.flat[0]):g}): there is nothing "
            "in it to tell the classes apart; check that the right image was given"
        )
    return img.astype(np.float32), lab
