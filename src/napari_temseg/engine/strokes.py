"""Training patches from sparse painted strokes: the data side of fine-tuning a segmenter.

A user paints a few strokes per class in a napari Labels layer (0 = not labelled, 1..K =
classes). :class:`StrokeSource` turns one or more (image, labels) pairs into batches of
``(normalised patch, target)``, where target 0 means "no label here" and is ignored by the
loss. What it does, and why:

- only frames with strokes are used (a stack may be labelled on any frames);
- every frame is normalised with its own whole-frame statistics (exactly like inference)
  and, when pixel sizes are known and a frame is more than a factor 2 off the common
  pixel size, resampled to it (see ``docs/segment.md``);
- a held-out share of the strokes (whole connected strokes, or the far end of a class's
  only stroke) is kept aside for validation, so "best model" means best on strokes the
  network never trained on;
- patches are centred on strokes most of the time, class-balanced (a rare class is drawn
  as often as a common one), and augmented: the 8 square symmetries, small scale changes,
  intensity gain/offset and extra noise (a dose jitter in normalised units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from napari_temseg.engine.checks import frame_stats
from napari_temseg.engine.finite import training_frame
from napari_temseg.models.normalize import Normalization

#: frames within this factor of the common pixel size are used as they are: the network,
#: trained with scale augmentation, is robust over a factor 2 either way, and resampling
#: a finer image down lost Dice (docs/benchmarks.md, "Other magnifications")
SCALE_TOLERANCE = 2.0


class SegmentError(ValueError):
    """A segmentation request that cannot work as given; the message says what to change."""


class StrokeError(SegmentError):
    """The strokes cannot train a segmenter; the message says what to paint or fix."""


#: more classes than this is not a stroke mask but a mistake (an image or a 0/255 mask)
MAX_CLASSES = 32
LABELS_ARE = "labels are 0 = not labelled and 1..K = the classes, as painted in napari"


def check_image(image: Any, name: str = "the image") -> None:
    """Refuse what cannot be a grayscale micrograph before anything is computed on it."""
    dtype = np.dtype(getattr(image, "dtype", np.float32))
    if dtype.kind == "c":
        raise StrokeError(
            f"{name} is complex-valued ({dtype}); training needs a real grayscale image: "
            "take its magnitude or real part first"
        )
    if dtype.kind not in "buif":
        raise StrokeError(f"{name} holds {dtype} values, not a grayscale image of numbers")


def label_values(labels: Any, name: str = "the labels") -> np.ndarray:
    """The distinct values of a label image, checked to be stroke labels (0..K, K <= 32).

    A 0/255 mask, an image passed as labels or a label -1 would otherwise train a
    255-class (or 4095-class) segmenter, or fail with a message about something else.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "buif":
        raise StrokeError(f"{name} hold {arr.dtype} values; {LABELS_ARE}")
    values = np.unique(arr)
    if arr.dtype.kind == "f" and not (
        np.isfinite(values).all() and (values == np.round(values)).all()
    ):
        raise StrokeError(
            f"{name} hold fractional or NaN values, so they look like an image; {LABELS_ARE}"
        )
    if len(values) > MAX_CLASSES + 1:
        raise StrokeError(
            f"{name} hold {len(values)} different values, so they look like an image, not "
            f"painted strokes; {LABELS_ARE} (at most {MAX_CLASSES} classes)"
        )
    if len(values) and values[0] < 0:
        raise StrokeError(
            f"{name} use the negative label {values[0]:g}; {LABELS_ARE}: relabel or erase it"
        )
    if len(values) and values[-1] > MAX_CLASSES:
        raise StrokeError(
            f"{name} use label {values[-1]:g}, but {LABELS_ARE}, with at most {MAX_CLASSES} "
            f"classes; a 0/{values[-1]:g} mask must be relabelled ({values[-1]:g} -> 2, "
            "background -> 1) or painted as strokes"
        )
    return values.astype(np.int64)


@dataclass
class StrokeFrame:
    """One labelled 2D frame, normalised and at the common scale."""

    image: np.ndarray  # float32, normalised
    train: np.ndarray  # uint8, 0 = unlabelled, training strokes only
    val: np.ndarray  # uint8, held-out strokes only
    origin: tuple[int, ...]  # (image index, *frame index)
    stats: dict[str, float] | None = None  # raw intensity statistics (engine/checks.py)


def _frames(image: Any, labels: Any) -> list[tuple[tuple[int, ...], Any, np.ndarray]]:
    """(frame index, image frame, label frame) for every frame that has strokes."""
    ishape, lshape = tuple(image.shape), tuple(labels.shape)
    if ishape != lshape:
        raise StrokeError(
            f"the labels (shape {lshape}) and the image (shape {ishape}) differ in shape; "
            "paint the strokes in a Labels layer made for this image"
        )
    if len(ishape) < 2:
        raise StrokeError(f"expected a 2D image or a stack, got shape {ishape}")
    lead = ishape[:-2]
    found = []
    for idx in np.ndindex(*lead) if lead else [()]:
        lab = np.asarray(labels[idx] if idx else labels)
        if lab.any():
            found.append((idx, image[idx] if idx else image, lab))
    return found


def _split_val(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of held-out stroke pixels: whole strokes where a class has several, else a tail."""
    held = np.zeros(labels.shape, bool)
    if fraction <= 0:
        return held
    for c in np.unique(labels[labels > 0]):
        comps, n = ndimage.label(labels == c, structure=np.ones((3, 3)))
        if n >= 3:
            order = rng.permutation(n) + 1
            sizes = ndimage.sum_labels(np.ones_like(comps), comps, order)
            total, acc = sizes.sum(), 0.0
            for comp, size in zip(order, sizes, strict=True):
                if acc >= fraction * total:
                    break
                if acc + size > 0.5 * total:  # never hold out most of a class
                    continue
                held |= comps == comp
                acc += size
        else:  # one or two strokes: hold out the far end of each along its long axis
            for comp in range(1, n + 1):
                ys, xs = np.nonzero(comps == comp)
                if len(ys) < 8:
                    continue
                coord = ys if np.ptp(ys) >= np.ptp(xs) else xs
                cut = np.quantile(coord, 1 - fraction)
                sel = coord > cut
                held[ys[sel], xs[sel]] = True
    return held


def _resample(img: np.ndarray, lab: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    if abs(np.log(zoom)) <= np.log(SCALE_TOLERANCE) + 1e-9:
        return img, lab
    img = ndimage.zoom(img, zoom, order=1, mode="reflect", grid_mode=True)
    lab = ndimage.zoom(lab, zoom, order=0, mode="nearest", grid_mode=True)
    return img.astype(np.float32), lab


class StrokeSource:
    """Patches of (normalised image, stroke labels) from painted images; see module doc.

    ``images``/``labels``: sequences of arrays of equal shapes (2D or stacks, numpy or
    dask). ``pixel_sizes``: nm/px per image (None entries: unknown, not resampled);
    ``pixel_size_nm``: the common scale (None: the median of the known ones).
    """

    def __init__(
        self,
        images: list[Any],
        labels: list[Any],
        n_classes: int,
        patch: int = 128,
        normalization: Normalization | None = None,
        pixel_sizes: list[float | None] | None = None,
        pixel_size_nm: float | None = None,
        val_fraction: float = 0.2,
        holdout_frames: int = 0,
        augment: bool = True,
        scale_jitter: float = 0.15,
        noise_jitter: float = 0.1,
        invert: float = 0.0,
        gamma_jitter: float = 0.0,
        blur_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        if len(images) != len(labels):
            raise StrokeError(f"got {len(images)} image(s) but {len(labels)} label layer(s)")
        if not images:
            raise StrokeError("no image to train on")
        if patch < 32:
            raise StrokeError(f"patch must be at least 32 pixels, got {patch}")
        side = max(max(int(s) for s in np.shape(im)[-2:] or (0,)) for im in images)
        if patch > max(256, side):
            raise StrokeError(
                f"patch {patch} px is larger than the images (largest side {side} px); "
                f"use a patch of at most {max(256, side)} px"
            )
        for i, (image, lab) in enumerate(zip(images, labels, strict=True)):
            check_image(image, f"image {i + 1}")
            values = label_values(lab, f"the labels of image {i + 1}")
            if len(values) and values[-1] > n_classes:
                raise StrokeError(
                    f"the strokes use label {values[-1]} but only {n_classes} classes are "
                    f"named (labels 1..{n_classes}); add a class name or erase those strokes"
                )
        self.patch = patch
        self.n_classes = n_classes
        self.normalization = normalization or Normalization()
        self.augment = augment
        self.val_fraction = val_fraction
        self.scale_jitter = scale_jitter
        self.noise_jitter = noise_jitter
        self.invert = invert
        self.gamma_jitter = gamma_jitter
        self.blur_jitter = blur_jitter
        sizes = list(pixel_sizes) if pixel_sizes is not None else [None] * len(images)
        if len(sizes) != len(images):
            raise StrokeError(f"got {len(sizes)} pixel size(s) for {len(images)} image(s)")
        sizes = [float(s) if s and np.isfinite(s) and s > 0 else None for s in sizes]
        known = [s for s in sizes if s]
        self.pixel_size_nm = pixel_size_nm or (float(np.median(known)) if known else None)
        rng = np.random.default_rng([seed, 7])
        self.frames: list[StrokeFrame] = []
        self._on_no_data: set[int] = set()  # classes whose strokes lay on NaN pixels only
        for k, (image, lab) in enumerate(zip(images, labels, strict=True)):
            for idx, frame, lab2 in _frames(image, lab):
                self.frames.append(self._prepare(frame, lab2, sizes[k], (k, *idx), rng))
        self.held_out_frame: tuple[int, ...] | None = None
        if holdout_frames and len(self.frames) >= holdout_frames and val_fraction > 0:
            self._hold_out_a_frame(rng)
        self._check_classes()
        self._index_strokes()

    # ------------------------------------------------------------------ preparation

    def _prepare(
        self, frame: Any, lab: np.ndarray, size: float | None, origin: tuple, rng
    ) -> StrokeFrame:
        if lab.min() < 0 or lab.max() > self.n_classes:
            raise StrokeError(
                f"the strokes use label {int(lab.max())} but only {self.n_classes} classes are "
                f"named (labels 1..{self.n_classes}); add a class name or erase those strokes"
            )
        where = f"image {origin[0] + 1}" + (f", frame {origin[1:]}" if len(origin) > 1 else "")
        painted = set(np.unique(lab).tolist()) - {0}
        img, lab = training_frame(np.asarray(frame), lab.astype(np.uint8), where, StrokeError)
        self._on_no_data |= painted - set(np.unique(lab).tolist())  # all on NaN here
        raw = frame_stats(img)  # before normalising: what other frames are compared with
        img = self.normalization.apply(img, self.normalization.stats(img)).astype(np.float32)
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
        if size and self.pixel_size_nm:
            img, lab = _resample(img, lab, size / self.pixel_size_nm)
        held = _split_val(lab, self.val_fraction, rng)
        val = np.where(held, lab, 0).astype(np.uint8)
        train = np.where(held, 0, lab).astype(np.uint8)
        return StrokeFrame(img, train, val, origin, raw)

    def _hold_out_a_frame(self, rng: np.random.Generator) -> None:
        """Validate on all strokes of one painted frame and train on the others' strokes.

        "Best" then means best on a frame the network never trained on: what applying the
        model to the rest of a series needs, and what held-out strokes of the painted
        frames overstate. Only when the other frames still hold every painted class.
        """
        classes = [set(np.unique(np.maximum(f.train, f.val))) - {0} for f in self.frames]
        every = set().union(*classes)
        for k in rng.permutation(len(self.frames)):
            rest = set().union(*(c for i, c in enumerate(classes) if i != k))
            if rest == every and len(classes[k]) >= 2:
                for i, f in enumerate(self.frames):
                    whole = np.maximum(f.train, f.val)
                    none = np.zeros_like(whole)
                    f.train, f.val = (none, whole) if i == k else (whole, none)
                self.held_out_frame = self.frames[k].origin
                return

    def _check_classes(self) -> None:
        if not self.frames:
            raise StrokeError(
                "no strokes found: paint a few strokes of every class in the Labels layer "
                "(label 0 means 'not labelled')"
            )
        counts = np.zeros(self.n_classes + 1, np.int64)
        for f in self.frames:
            counts += np.bincount(np.maximum(f.train, f.val).ravel(), minlength=self.n_classes + 1)
        painted = [c for c in range(1, self.n_classes + 1) if counts[c] > 0]
        if len(painted) < 2:
            lost = sorted(c for c in self._on_no_data if counts[c] == 0)
            if lost:
                raise StrokeError(
                    f"the strokes of class {', '.join(map(str, lost))} lie only on NaN or "
                    "infinite pixels, which hold no data; paint them where the image has data"
                )
            which = f"only class {painted[0]}" if painted else "no class"
            raise StrokeError(
                f"strokes of {which} were painted; paint at least two classes "
                "(e.g. support and particle) so the network can tell them apart"
            )
        self.counts = counts[1:]
        # named classes with no stroke (painted 1 and 3, or a class named ahead): trained
        # with weight 0, never predicted until painted; the faces say so (Finetuner.notes)
        self.unpainted = [c for c in range(1, self.n_classes + 1) if counts[c] == 0]

    def _index_strokes(self) -> None:
        """Per class, the (frame, y, x) of its training pixels, for class-balanced sampling."""
        self._where: list[list[np.ndarray]] = [[] for _ in range(self.n_classes)]
        for i, f in enumerate(self.frames):
            for c in range(1, self.n_classes + 1):
                ys, xs = np.nonzero(f.train == c)
                if len(ys):
                    self._where[c - 1].append(np.stack([np.full_like(ys, i), ys, xs], 1))
        self._where = [np.concatenate(w) if w else np.zeros((0, 3), np.int64) for w in self._where]
        self.train_counts = np.array([len(w) for w in self._where])

    # ------------------------------------------------------------------ sampling

    def class_weights(self, power: float = 0.5, max_ratio: float = 20.0) -> np.ndarray:
        """Loss weight per class, ~ count^-power, mean 1: a rare class is not drowned."""
        counts = np.maximum(self.train_counts.astype(np.float64), 1.0)
        w = counts**-power
        w = np.minimum(w, w.min() * max_ratio)
        present = self.train_counts > 0
        w[~present] = 0.0
        return (w / w[present].mean()).astype(np.float32)

    def _crop(self, f: StrokeFrame, cy: int, cx: int, size: int, which: str) -> tuple:
        """A ``size`` window centred near (cy, cx), reflect-padded where it leaves the frame."""
        h, w = f.image.shape
        y0, x0 = cy - size // 2, cx - size // 2
        pads = ((max(0, -y0), max(0, y0 + size - h)), (max(0, -x0), max(0, x0 + size - w)))
        ys, xs = slice(max(0, y0), min(h, y0 + size)), slice(max(0, x0), min(w, x0 + size))
        img, lab = f.image[ys, xs], getattr(f, which)[ys, xs]
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(img.shape) > max(max(pads)) else "symmetric"
            img = np.pad(img, pads, mode=mode)
            lab = np.pad(lab, pads)  # padding is unlabelled
        return img, lab

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches: float32 (n, 1, P, P) and int64 targets (n, P, P), 0 = ignore."""
        p = self.patch
        xs = np.empty((n, 1, p, p), np.float32)
        ys = np.empty((n, p, p), np.int64)
        present = np.nonzero(self.train_counts)[0]
        for i in range(n):
            zoom = 1.0
            if self.augment and self.scale_jitter > 0:
                zoom = float(np.exp(rng.uniform(-1, 1) * np.log1p(self.scale_jitter)))
            size = max(16, round(p / zoom))
            if rng.random() < 0.85:  # centred on a stroke pixel of a random class
                pts = self._where[int(rng.choice(present))]
                fi, cy, cx = pts[int(rng.integers(len(pts)))]
                cy += int(rng.integers(-size // 4, size // 4 + 1))
                cx += int(rng.integers(-size // 4, size // 4 + 1))
            else:
                fi = int(rng.integers(len(self.frames)))
                h, w = self.frames[fi].image.shape
                cy, cx = int(rng.integers(h)), int(rng.integers(w))
            img, lab = self._crop(self.frames[int(fi)], int(cy), int(cx), size, "train")
            if size != p:
                img = ndimage.zoom(img, p / size, order=1, grid_mode=True, mode="reflect")[:p, :p]
                lab = ndimage.zoom(lab, p / size, order=0, grid_mode=True, mode="nearest")[:p, :p]
            if self.augment:
                img, lab = _symmetry(img, lab, int(rng.integers(8)))
                img = self._imaging(img, rng)
                img = img * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
                if self.noise_jitter > 0 and rng.random() < 0.5:
                    img = img + rng.normal(0, rng.uniform(0, self.noise_jitter), img.shape)
            xs[i, 0] = img
            ys[i] = lab
        return xs, ys

    def _imaging(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Another session's imaging on a normalised patch: blur, detector gamma, polarity.

        Each is off at 0 and draws nothing from ``rng`` then, so turning one on leaves
        the others' patches as they were.
        """
        if self.blur_jitter > 0 and rng.random() < 0.3:
            img = ndimage.gaussian_filter(img, rng.uniform(0.3, self.blur_jitter), mode="reflect")
        if self.gamma_jitter > 0 and rng.random() < 0.5:
            g = float(np.exp(rng.uniform(-1, 1) * np.log1p(self.gamma_jitter)))
            inside = np.clip(img, 0.0, 1.0)  # the frame's percentile range; spikes kept as is
            img = inside**g + (img - inside)
        if self.invert > 0 and rng.random() < self.invert:
            img = 1.0 - img  # the frame's own percentile range, mirrored
        return img

    def validation(
        self, max_windows: int = 24, which: str = "val"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fixed windows covering the held-out strokes: (m, 1, P, P) images, (m, P, P) labels.

        ``which="train"`` covers the training strokes instead (the fallback when too few
        strokes were painted to hold any out).
        """
        p = self.patch
        wins_x, wins_y = [], []
        for f in self.frames:
            remaining = getattr(f, which) > 0
            while remaining.any() and len(wins_x) < max_windows:
                ys, xs = np.nonzero(remaining)
                cy, cx = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
                img, lab = self._crop(f, cy, cx, p, which)
                wins_x.append(img)
                wins_y.append(lab)
                y0, x0 = cy - p // 2, cx - p // 2
                remaining[max(0, y0) : max(0, y0 + p), max(0, x0) : max(0, x0 + p)] = False
        if not wins_x:
            return np.zeros((0, 1, p, p), np.float32), np.zeros((0, p, p), np.int64)
        return (
            np.stack(wins_x)[:, None].astype(np.float32),
            np.stack(wins_y).astype(np.int64),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": "painted strokes",
            "frames": [list(map(int, f.origin)) for f in self.frames],
            "stroke_pixels_per_class": [int(c) for c in self.counts],
            "patch": self.patch,
            "pixel_size_nm": self.pixel_size_nm,
            "augment": self.augment,
            "held_out_frame": None if self.held_out_frame is None else list(self.held_out_frame),
            "scale_jitter": self.scale_jitter,
            "invert": self.invert,
            "gamma_jitter": self.gamma_jitter,
            "blur_jitter": self.blur_jitter,
            "intensity": [f.stats for f in self.frames if f.stats],  # engine/checks.py
        }


def _symmetry(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k & 1:
        a, b = a[::-1], b[::-1]
    if k & 2:
        a, b = a[:, ::-1], b[:, ::-1]
    if k & 4:
        a, b = a.T, b.T
    return a, b


def scribbles_from_mask(
    mask: np.ndarray,
    per_class: int = 4,
    length: int = 24,
    width: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Imitate a user's strokes on a ground-truth mask (tests and benchmarks).

    For every class ``c`` > 0 of ``mask``: ``per_class`` straight strokes of up to
    ``length`` pixels in random directions, started at random pixels well inside the class
    and kept inside it (so a stroke never crosses a boundary, as a careful user paints).
    """
    from skimage.draw import line

    rng = np.random.default_rng(seed)
    out = np.zeros(mask.shape, np.uint8)
    h, w = mask.shape
    for c in np.unique(mask[mask > 0]):
        inside = ndimage.binary_erosion(mask == c, iterations=max(1, width + 1))
        if not inside.any():
            inside = mask == c
        ys, xs = np.nonzero(inside)
        for _ in range(per_class):
            j = int(rng.integers(len(ys)))
            angle = rng.uniform(0, np.pi)
            dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
            rr, cc = line(
                int(np.clip(ys[j] - dy, 0, h - 1)),
                int(np.clip(xs[j] - dx, 0, w - 1)),
                int(np.clip(ys[j] + dy, 0, h - 1)),
                int(np.clip(xs[j] + dx, 0, w - 1)),
            )
            keep = inside[rr, cc]
            seg = np.zeros(mask.shape, bool)
            seg[rr[keep], cc[keep]] = True
            comps, _ = ndimage.label(seg, structure=np.ones((3, 3)))
            seg = comps == comps[ys[j], xs[j]] if comps[ys[j], xs[j]] else seg
            if width > 1:
                seg = ndimage.binary_dilation(seg, iterations=width - 1) & (mask == c)
            out[seg] = c
    return out
