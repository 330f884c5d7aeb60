"""Adapt a denoiser to the frames at hand: a short fine-tune at their own noise and sampling.

A bundled denoiser is trained for 0.5-5000 electrons per pixel and a wide range of pixel
sizes, so it spends its capacity on noise levels and scales a user's session never has.
This fine-tunes a copy, for a time budget, on simulated images whose noise level
(:func:`noise_level`) is the one measured on the user's frames and, when the frames are
calibrated, around their pixel size; then it fits a final smoothing on such images
(``engine.postfilter``). The targets are
clean simulated images, so the network cannot learn the frames' own noise. A share of
each batch (``AdaptConfig.own_share``) is cut from the frames themselves, with the
starting model's own output averaged over eight orientations as the target: the single
pass learns what the average shows on this detector (:class:`OwnAverage`).

Why not a self-supervised loss on the frames themselves (what issue 13 first asked for)?
Measured on ``../shared/realdata/lowdose_pair`` (``benchmarks/bench_adapt_pair.py``), every
such recipe made the result worse, and worse the longer it ran: Noise2Void, Noise2Self
with 3x3 blocks or whole rows hidden, Neighbor2Neighbor, binomial thinning and
Noisier2Noise. That detector's noise is not shot noise alone (13 % of the pixels clip at
0; each row carries its own offset, 4 % of the noise variance), so a blind spot smaller
than a row lets it through and the network learns to keep it. Why match the noise level
and not the dose? The dose estimated from one frame's mean-variance line
(``engine.pretrain.estimate_gain``) was off by up to 1000 times on simulated HRTEM.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from napari_temseg import defaults
from napari_temseg.engine.binning import MIN_BINNED, bin_frame, check_bin
from napari_temseg.engine.data import MixedSource, PairSource
from napari_temseg.engine.events import TrainEvent, drain
from napari_temseg.engine.finite import filled, median_filled
from napari_temseg.engine.train import TrainConfig, iter_train
from napari_temseg.engine.tta import orientation_count
from napari_temseg.io.model import DataWarning
from napari_temseg.models.bundled import derived_meta
from napari_temseg.models.normalize import Normalization, defect_runs
from napari_temseg.models.resolve import ModelSpec, cached_model

#: simulated doses stay within these (electrons per pixel)
DOSE_LIMITS = (0.05, 5.0e4)
#: a simulated image whose noise level is within this log-ratio of the frames' is kept
MATCH_TOLERANCE = 0.1
#: the noise level is read in blocks of this many Haar coefficients a side, from the
#: quieter ones (this percentile)
LEVEL_BLOCK = 16
LEVEL_PERCENTILE = 20
#: simulated images the final smoothing (engine.postfilter) is fitted on, and the gain on
#: them it must bring to be kept: on simulated HRTEM at 100 e/px blends fitted at +0.0 and
#: +0.1 dB cost 0.2-0.7 dB on the images themselves, while on the real pair one fitted at
#: +0.2 dB (stem-denoise) cut the error 728 / 914 -> 469 / 638 (without it 645 / 811)
FIT_IMAGES = 8
MIN_POSTFILTER_GAIN_DB = 0.15
#: a blend may take at most this many times more from the frames than from the simulated
#: images, relative to what the network took (``_fit_postfilter``); the frames' centres
#: (this side, this many frames) are checked
MAX_REMOVED_RATIO = 2.0
CHECK_SIDE = 512
CHECK_FRAMES = 4
#: frames whose noise is measured (a long series needs no more than a few)
MAX_FRAMES = 8
#: a calibrated pixel size is drawn within this factor of the frames' own
PIXEL_SPAN = 1.3
#: the share of each batch cut from the frames themselves (:class:`OwnAverage`) when the
#: output is one pass; measured on the real low-dose pair against 0, 0.5 and 0.75
#: (docs/denoise.md, "Learning from the frames themselves")
OWN_SHARE = 0.25
#: with the frames' patches, an adaptation is kept when they gain and the simulated
#: patches lose at most this (dB of validation PSNR)
SIM_TOLERANCE_DB = 0.1
#: the frames' own patches: centre crops of this side, from this many frames spread over
#: the series, averaged once by the starting model (about 7 s a crop on 2 CPU threads;
#: no more crops once a quarter of the budget is spent)
OWN_SIDE = 1024
OWN_FRAMES = 2
KINDS = ("stem", "hrtem")


@dataclass
class AdaptConfig:
    """How long and how an adaptation runs (all JSON-able)."""

    seconds: float = defaults.ADAPT_SECONDS
    #: at most this many steps as well (None: the time budget alone); a budget in steps
    #: does the same work on a busy machine as on an idle one
    steps: int | None = None
    lr: float = 3e-4  # low: the bundled weights are the starting point (1e-4 and 1e-3 did worse)
    batch_size: int = 8
    patch: int = 96
    bin: int = 1  # adapt (and then denoise) binned KxK, as the Denoise dock's Binning
    #: share of each batch cut from the frames themselves, whose targets are the starting
    #: model's own output averaged over eight orientations (:class:`OwnAverage`); the rest
    #: are simulated images at the frames' noise level with clean targets. 0: simulated
    #: images only
    own_share: float = OWN_SHARE
    #: the orientations the adapted model's output will be averaged over (1, 2 or 8,
    #: ``engine.tta``): its final smoothing is fitted and checked on that output
    orientations: int = 1
    kind: str | None = None  # None: the model's own modality
    val_every: int = 50
    val_size: int = 16
    seed: int = defaults.SEED
    device: str = defaults.DEVICE

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"the adaptation needs a positive time budget, got {self.seconds} s")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"the adaptation needs at least one step, got {self.steps}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_bin(self.bin)
        if not 0 <= self.own_share < 1:
            raise ValueError(f"own_share must be in [0, 1), got {self.own_share}")
        orientation_count(self.orientations)

    @classmethod
    def for_output(cls, tta: bool | int, **kw: Any) -> AdaptConfig:
        """The configuration for an output averaged over orientations (``tta``: True or
        8, or 2; ``engine.tta.orientation_count``) or not: an averaged output takes no
        patches from the frames, whose targets are such an average (it got worse with
        them on the real pair: docs/denoise.md), and the final smoothing is fitted on
        the averaged output."""
        n = orientation_count(tta)
        return cls(**{"own_share": 0.0 if n > 1 else OWN_SHARE, "orientations": n, **kw})


@dataclass
class AdaptResult:
    """The adapted model with its header (``load_model``'s pair), and what was measured."""

    model: nn.Module
    meta: dict[str, Any]
    noise_level: float  # the frames' noise as the network sees it (``noise_level``)
    dose_e_per_px: float  # the simulated dose that gives it (at the adaptation's binning)
    pixel_size_range_nm: tuple[float, float]
    steps_done: int
    elapsed_s: float
    val_psnr_before: float
    val_psnr_after: float
    stopped: bool
    message: str

    @property
    def spec(self) -> tuple[nn.Module, dict[str, Any]]:
        """What ``engine.denoise`` takes as its model."""
        return self.model, self.meta


def noise_level(frame: np.ndarray) -> float:
    """The frame's noise in the units the network sees: the robust standard deviation of
    the diagonal Haar detail of the normalised frame (``Normalization()``), read in blocks
    and taken from the quieter ones (lattice fringes raise the busy blocks, not the noise).

    It is what the adaptation matches, not the dose: estimating electrons per pixel from
    one frame's mean-variance line (``engine.pretrain.estimate_gain``) was off by up to 1000
    times on simulated HRTEM (gain variation, detector blur, read-out noise). Matching the
    share of noise in the frame's variance instead was measured too and matched the real
    low-dose pair to 127 e/px, where this finds 7-8 (docs/denoise.md).
    """
    raw = np.asarray(frame, np.float64)
    if min(raw.shape[-2:]) < 2:  # no 2 x 2 block: no Haar detail to read the noise from
        h, w = raw.shape[-2:]
        raise ValueError(f"a frame of {h} x {w} pixels is too small to measure its noise")
    x = median_filled(raw)
    norm = Normalization()
    z = norm.apply(x, norm.stats(x))
    h, w = (z.shape[0] // 2) * 2, (z.shape[1] // 2) * 2
    z = z[:h, :w]
    hh = np.abs(z[0::2, 0::2] - z[0::2, 1::2] - z[1::2, 0::2] + z[1::2, 1::2]) / 2
    b = LEVEL_BLOCK
    hb, wb = hh.shape[0] // b, hh.shape[1] // b
    if hb * wb < 4:
        return float(_robust_sigma(hh.reshape(1, -1))[0])
    blocks = hh[: hb * b, : wb * b].reshape(hb, b, wb, b).transpose(0, 2, 1, 3)
    sigmas = _robust_sigma(blocks.reshape(hb * wb, b * b))
    # blocks that touch no data (NaN, or a drift-corrected frame's zero border) have no
    # noise: a fifth of them made the level 0 and the adaptation simulate noiseless images
    missing = ~np.isfinite(raw)
    runs = defect_runs(x)
    if runs is not None:
        missing |= runs
    if missing.any():
        m = missing[: hb * b * 2, : wb * b * 2].reshape(hb, 2 * b, wb, 2 * b).any((1, 3))
        if not m.all():
            sigmas = sigmas[~m.ravel()]
    sigmas = sigmas[np.isfinite(sigmas)]
    return float(np.percentile(sigmas, LEVEL_PERCENTILE)) if sigmas.size else 0.0


def _robust_sigma(detail: np.ndarray) -> np.ndarray:
    """The noise of each row of absolute Haar details: their median / 0.6745. In a sparse
    counting frame (below about 0.5 counts a pixel) the details are mostly exactly 0, and
    the median read it as noiseless (adapting to it was refused): where most rows are like
    that, their mean * sqrt(pi / 2) instead; where fewer are (sparse vacuum beside a
    specimen), those rows are NaN (left out), not read as a level 50 times too low."""
    sigma = np.median(detail, axis=1) / 0.6745
    flat = sigma == 0
    if flat.mean() > 0.5:
        sigma[flat] = detail[flat].mean(axis=1) * math.sqrt(math.pi / 2)
    elif flat.any():
        sigma[flat] = np.nan
    return sigma


class NoiseMatchedPairs:
    """``make_pair`` for ``PairSource``: simulated (noisy, clean) images whose noise level
    (:func:`noise_level`) is the user's frames'.

    Each image is simulated at a first dose (drawn around the doses that matched so far),
    its level measured, and the same scene simulated again at the dose that corrects it
    (shot noise: level ~ dose^-1/2). The doses used are recorded, so the run can say
    which simulated dose its frames look like.
    """

    def __init__(
        self,
        kind: str,
        size: int,
        level: float,
        pixels: tuple[float, float],
        counting_fraction: float = 0.0,
        target: str = "recorded",
        decay_fraction: float = 0.0,
    ) -> None:
        if not level > 0:
            raise ValueError(
                "these frames show no noise to measure (a constant or synthetic image?); "
                "denoise without adapting"
            )
        self.kind, self.size, self.level, self.pixels = kind, size, level, pixels
        self.counting_fraction, self.target = counting_fraction, target
        self.decay_fraction = decay_fraction
        self.doses: list[float] = []

    def _simulate(self, seed: int, dose: float, pixel: float, counting: bool) -> Any:
        from napari_temseg.synth import DistortionConfig, simulate

        cfg = DistortionConfig.poisson_only() if counting else DistortionConfig.full()
        if self.decay_fraction > 0 and not counting:  # as the model's training drew them
            cfg.detector_decay.enabled = True
            cfg.detector_decay.probability = self.decay_fraction
        return simulate(self.kind, self.size, pixel, dose, seed, cfg)

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        seed = int(rng.integers(2**63))
        lo, hi = self.pixels
        pixel = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo
        counting = self.counting_fraction > 0 and rng.random() < self.counting_fraction
        centre = float(np.median(self.doses[-64:])) if self.doses else 10.0
        dose = float(np.clip(centre * np.exp(rng.normal(0, 0.5)), *DOSE_LIMITS))
        for attempt in range(2):
            s = self._simulate(seed, dose, pixel, counting)
            level = noise_level(s.noisy)
            if attempt or not level > 0 or abs(np.log(level / self.level)) < MATCH_TOLERANCE:
                break
            dose = float(np.clip(dose * (level / self.level) ** 2, *DOSE_LIMITS))
        self.doses.append(dose)  # the dose ``s`` was simulated at
        return s.noisy, (s.recorded_clean if self.target == "recorded" else s.clean)

    def dose_estimate(self, rng: np.random.Generator, n: int = 8) -> float:
        """The median matched dose, drawing ``n`` images if none were yet."""
        while len(self.doses) < n:
            self(rng)
        return float(np.median(self.doses))

    def describe(self) -> dict[str, Any]:
        return {
            "source": "napari_temseg.synth.simulate, dose matched to the frames' noise level",
            "kind": self.kind,
            "image_size": self.size,
            "noise_level": self.level,
            "pixel_size_range_nm": list(self.pixels),
            "counting_detector_fraction": self.counting_fraction,
            "detector_decay_fraction": self.decay_fraction,
        }


class OwnAverage:
    """``make_pair`` for ``PairSource``: the user's frames (centre crops of
    :data:`OWN_SIDE`) with, as targets, a model's own output on them averaged over eight
    orientations (``engine.denoise(tta=True)``, the detail the orientations disagree on
    shrunk): in ``iter_adapt``, the starting model.

    Why: on the real low-dose pair the average of ``hrtem-denoise`` is far closer to the
    other frame than its single pass (158 / 305 against 300 / 425), and so is an adapted
    model averaged, but eight passes cost eight times the time on a whole series.
    Distilled on simulated images alone (``scripts/train_bundled_denoisers.py --distill``)
    the single pass barely moved on real frames (272 / 408): what the average knows about
    a real detector is learnt on that detector's frames. The targets come from the frames
    alone, so nothing is learnt that the frames do not show, and the adapted single pass
    can at best equal the average it was taught by.
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        model: ModelSpec,
        patch: int,
        device: str,
        cancel: threading.Event | None = None,
        seconds: float = math.inf,
    ) -> None:
        from napari_temseg.engine.denoise import denoise
        from napari_temseg.engine.tiling import Cancelled

        usable = [f for f in frames if min(f.shape[-2:]) >= patch]
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        t0 = time.perf_counter()
        for f in _spread(usable, OWN_FRAMES):
            crop = _centre(f, OWN_SIDE)
            if not np.isfinite(crop).any():
                continue
            # NaN and a padded border filled as inference fills them (so averaged as they
            # are, not given back): the model is taught on the input it will see
            crop, _ = filled(crop)
            try:
                # float32 on CPUs, as measured (docs/benchmarks.md): in bfloat16 the time
                # saved went to more steps, and the real pair's frame b came out 344-363,
                # not 341; CUDA keeps its mixed precision (amp None)
                average = denoise(crop, model, device=device, tta=True, cancel=cancel, amp=None)
            except Cancelled:  # the adaptation stops with what it has
                break
            self.pairs.append((crop, average))
            if time.perf_counter() - t0 >= seconds:  # the rest of the budget is training's
                break

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[int(rng.integers(len(self.pairs)))]

    def describe(self) -> dict[str, Any]:
        return {
            "source": "the frames themselves; targets: the starting model averaged over "
            "eight orientations",
            "crops": [list(x.shape) for x, _ in self.pairs],
        }


def sample_frames(images: Sequence[Any], n: int = MAX_FRAMES) -> list[np.ndarray]:
    """Up to ``n`` 2D frames spread over 2D images and stacks (..., Y, X), as float32.

    Only those frames are read: a long (lazy) series is not loaded to measure its noise."""
    index = []
    for i, im in enumerate(images):
        shape = tuple(getattr(im, "shape", ()))
        if len(shape) < 2 or np.dtype(getattr(im, "dtype", np.float32)).kind not in "uif":
            raise ValueError(
                f"image {i + 1}: expected a grayscale 2D image or a stack, got shape {shape}"
            )
        index += [(i, j) for j in np.ndindex(*shape[:-2])]
    if not index:
        raise ValueError("no images to adapt to")
    picks = np.unique(np.linspace(0, len(index) - 1, min(n, len(index))).round().astype(int))
    return [np.asarray(images[index[k][0]][index[k][1]], np.float32) for k in picks]


#: frames with a shorter side hold too few blocks to read their noise from
MIN_LEVEL_SIDE = LEVEL_BLOCK


def frames_noise_level(frames: Sequence[np.ndarray]) -> float:
    """The median :func:`noise_level` of the frames that show one: a frame too small to
    read it from, or one without noise, is left out with a ``DataWarning`` (one 2 x 2
    file among the inputs read 0 and halved the median of two). When none shows any,
    the first one's own reason is raised, or the level is 0 (``NoiseMatchedPairs`` says
    there is no noise to match)."""
    levels, skipped, first_error = [], 0, None
    for f in frames:
        if min(f.shape[-2:]) < MIN_LEVEL_SIDE and len(frames) > 1:
            skipped += 1
            continue
        try:
            v = noise_level(f)
        except ValueError as exc:
            first_error, skipped = first_error or exc, skipped + 1
            continue
        if v > 0 and math.isfinite(v):
            levels.append(v)
        else:
            skipped += 1
    if not levels:
        if first_error is not None:
            raise first_error
        return 0.0
    if skipped:
        warnings.warn(
            f"the noise was read from {len(levels)} of {len(frames)} frames; {skipped} "
            f"left out: too small (under {MIN_LEVEL_SIDE} px) or without noise",
            DataWarning,
            stacklevel=2,
        )
    return float(np.median(levels))


def _pixel_range(meta: dict, kind: str, pixel_size_nm: float | None) -> tuple[float, float]:
    from napari_temseg.synth import PIXEL_SIZE_RANGE_NM

    lo, hi = meta.get("pixel_size_nm_range") or PIXEL_SIZE_RANGE_NM[kind]
    if pixel_size_nm is None or not pixel_size_nm > 0:
        return float(lo), float(hi)
    a = min(max(pixel_size_nm / PIXEL_SPAN, lo), hi)
    b = min(max(pixel_size_nm * PIXEL_SPAN, lo), hi)
    return float(a), float(max(b, a))


def iter_adapt(
    images: Sequence[Any],
    model: ModelSpec = None,
    config: AdaptConfig | None = None,
    pixel_size_nm: float | None = None,
    cancel: threading.Event | None = None,
) -> Generator[TrainEvent, None, AdaptResult]:
    """Adapt ``model`` (a denoiser, as ``engine.denoise`` takes it) to ``images``.

    ``pixel_size_nm``: the frames' calibrated pixel size (None: unknown, the model's own
    range is kept). Yields the training's :class:`TrainEvent` s; returns an
    :class:`AdaptResult` whose model is a copy (the original is untouched). The model kept
    is the best by validation on simulated patches at the frames' noise level (with
    ``own_share``, that share of patches of the frames against the starting model's
    average), which the start counts as: an adaptation that does not help there returns
    the original weights. The averaging of the frames is paid from the time budget, and
    the events' ``elapsed_s`` count it.
    """
    import copy

    cfg = config or AdaptConfig()
    net, meta = cached_model(model, "cpu")
    if meta.get("task", "denoise") != "denoise":
        raise ValueError("only a denoising model can be adapted; choose a denoiser")
    kind = cfg.kind or meta.get("modality")
    if kind not in KINDS:
        raise ValueError(
            "this model does not say whether it is for STEM or HRTEM images; "
            "choose the kind to adapt to"
        )
    frames = [bin_frame(f, cfg.bin) if cfg.bin > 1 else f for f in sample_frames(images)]
    norm = Normalization.from_dict(meta.get("normalization"))
    level = frames_noise_level(frames)
    pixel = None if pixel_size_nm is None else pixel_size_nm * cfg.bin
    pixels = _pixel_range(meta, kind, pixel)
    data = meta.get("training_data", {})
    counting = float(data.get("counting_detector_fraction", 0.0))
    # the target the model was trained for (bundled models before "target" existed: scene)
    target = data.get("target", "scene")
    # and its detector's decay: fine-tuning a model trained on smeared noise with white
    # noise only made stem-denoise worse on the real pair (416 / 593 -> 670 / 865)
    decay = float(data.get("detector_decay_fraction", 0.0))
    pairs = NoiseMatchedPairs(kind, max(256, cfg.patch), level, pixels, counting, target, decay)
    source = PairSource(pairs, cfg.patch, norm, 4, 0.0, True, pairs.describe())
    dose = pairs.dose_estimate(np.random.default_rng([cfg.seed, 2]))
    t0, own = time.perf_counter(), None
    if cfg.own_share > 0:
        # a copy: denoise moves its model to the device, and ``net`` is the shared cache's
        teacher = OwnAverage(
            frames,
            (copy.deepcopy(net), _plain(meta)),
            cfg.patch,
            cfg.device,
            cancel,
            seconds=cfg.seconds / 4,
        )
        if teacher.pairs:
            own_source = PairSource(teacher, cfg.patch, norm, 16, 0.0, True, teacher.describe())
            source = MixedSource(source, own_source, cfg.own_share)
            own = {"share": cfg.own_share, "crops": teacher.describe()["crops"]}
    spent = time.perf_counter() - t0  # the average's eight passes are paid from the budget
    val_rng = np.random.default_rng([cfg.seed, 1])
    parts = (
        source.sample_parts(cfg.val_size, val_rng)
        if isinstance(source, MixedSource)
        else [source.sample(cfg.val_size, val_rng)]
    )
    val = MixedSource.join(parts)
    judged = parts if len(parts) == 2 else []  # simulated and the frames' patches, apart
    original, net = net, copy.deepcopy(net).float().train()
    before = _psnr(net, val)
    own_before = [_psnr(net, p) for p in judged]
    tcfg = TrainConfig(
        steps=cfg.steps or 10**7,
        max_seconds=max(cfg.seconds - spent, cfg.seconds / 4),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=10,
        loss="l2",
        val_every=cfg.val_every,
        val_size=cfg.val_size,
        seed=cfg.seed,
        device=cfg.device,
        amp=False,
    )
    result = yield from _shifted(iter_train(net, source, tcfg, val=val, cancel=cancel), spent)
    improved = result.steps_done > 0 and result.best_val_psnr > before
    if judged and result.steps_done > 0:
        # the mixed score is ruled by the simulated patches (their errors are larger), so
        # a clear gain on the frames could be lost in it: kept when the frames' patches
        # gain and the simulated ones lose at most SIM_TOLERANCE_DB
        (sim_b, own_b), (sim_a, own_a) = own_before, [_psnr(result.model, p) for p in judged]
        improved = own_a > own_b and sim_a >= sim_b - SIM_TOLERANCE_DB
        own["val_psnr_db"] = {
            "simulated": [round(sim_b, 3), round(sim_a, 3)],
            "frames": [round(own_b, 3), round(own_a, 3)],
        }
    out = result.model.cpu().eval() if improved else copy.deepcopy(original)
    after = result.best_val_psnr if improved else before
    post, mse_plain, mse_post, checked = None, math.nan, math.nan, []
    if not (cancel is not None and cancel.is_set()):
        # checked on the frames it can denoise (a 2 x 2 file among them is refused there)
        big = [f for f in frames if min(f.shape[-2:]) >= MIN_BINNED]
        post, mse_plain, mse_post, checked = _fit_postfilter(out, meta, pairs, norm, cfg, big)
    adapted = {
        "from": meta.get("name", "model"),
        "noise_level": round(level, 5),
        "dose_e_per_px": round(dose, 4),
        "pixel_size_range_nm": [round(p, 5) for p in pixels],
        "steps": result.steps_done,
        "seconds": round(result.elapsed_s + spent, 1),
        "val_psnr_db_before": round(before, 3),
        "val_psnr_db_after": round(after, 3),
        **({"own_average": own} if own else {}),
        "postfilter_psnr_gain_db": _gain_db(mse_plain, mse_post),
        "postfilter_checked": checked,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }
    new_meta = {
        **derived_meta(meta),
        "name": f"{meta.get('name', 'model')}-adapted",
        "description": f"{meta.get('description', 'denoiser')}; adapted to frames whose "
        f"noise is like {dose:.3g} e/px",
        "adapted": adapted,
    }
    new_meta.pop("postfilter", None)  # a model adapted again gets its own
    if post:
        new_meta["postfilter"] = post
    verb = "stopped" if result.stopped else "adapted"
    to = f"noise like {dose:.3g} e/px" + (
        f" and to {len(own['crops'])} of these frames (taught by the model's own average)"
        if own
        else ""
    )
    if improved:
        msg = (
            f"{verb} to {to} in {result.steps_done} steps: validation PSNR "
            f"{before:.2f} -> {after:.2f} dB"
        )
    else:
        msg = f"{verb} after {result.steps_done} steps without a gain; the original model is kept"
    if post:
        msg += (
            f"; final smoothing ({1 - post['weight']:.0%} of the output smoothed at "
            f"{post['sigma']:g} px) "
            f"+{_gain_db(mse_plain, mse_post):.1f} dB"
        )
    refused = checked[: len(checked) - 1] if post else checked
    if not post and not refused and not (cancel is not None and cancel.is_set()):
        msg += (
            f"; no final smoothing: none gained {MIN_POSTFILTER_GAIN_DB:g} dB on simulated "
            "images at this noise"
        )
    if refused:  # the user's frames said no to a smoothing the simulated images wanted
        c = refused[0]
        msg += (
            f"; the smoothing that fitted the simulated images best (sigma {c['sigma']:g} px) "
            "was not kept: it would take "
            f"{c['frames'] / max(c['simulated'], 1e-12):.1f}x more from these frames than "
            "from simulated ones"
        )
    return AdaptResult(
        out,
        new_meta,
        level,
        dose,
        pixels,
        result.steps_done,
        result.elapsed_s + spent,
        before,
        after,
        result.stopped,
        msg,
    )


def _fit_postfilter(
    net: nn.Module,
    meta: dict,
    pairs: NoiseMatchedPairs,
    norm: Normalization,
    cfg: AdaptConfig,
    frames: Sequence[np.ndarray],
) -> tuple[dict | None, float, float, list[dict[str, Any]]]:
    """Fit ``engine.postfilter``'s blend on whole simulated images at the frames' noise,
    denoised by the adapted network, in normalised units (each image weighs the same).

    A blend is kept only if it takes no more from the user's ``frames`` (already binned)
    than :data:`MAX_REMOVED_RATIO` times what it takes from the simulated images
    (``postfilter.removed_share``): on the real low-dose pair, binned 2x2, the best fit
    (8 px, weight 0.06) gained 1.8 dB on the simulated images and made the real frames
    worse (excess error 196 -> 298). Returns (spec, mse without, mse with, every blend
    checked, best first, with its two shares: the last one is the blend kept, if any)."""
    from napari_temseg.engine.denoise import denoise
    from napari_temseg.engine.postfilter import fit_postfilter, removed_share

    rng = np.random.default_rng([cfg.seed, 3])
    plain = _plain(meta)

    def normalised_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stats = norm.stats(x)
        # the output the user gets (its orientations), float32 on CPUs as calibrated
        y = denoise(x, (net, plain), device=cfg.device, amp=None, tta=cfg.orientations)
        return norm.apply(x.astype(np.float64), stats), norm.apply(y.astype(np.float64), stats)

    inputs, outputs, cleans = [], [], []
    for _ in range(FIT_IMAGES):
        noisy, clean = pairs(rng)
        x, y = normalised_pair(noisy)
        inputs.append(x)
        outputs.append(y)
        cleans.append(norm.apply(clean.astype(np.float64), norm.stats(noisy)))
    real = [normalised_pair(_centre(f, CHECK_SIDE)) for f in _spread(frames, CHECK_FRAMES)]
    checked: list[dict[str, Any]] = []

    def accept(spec: dict) -> bool:
        sim = removed_share(inputs, outputs, spec)
        own = removed_share([x for x, _ in real], [y for _, y in real], spec)
        checked.append({**spec, "simulated": float(f"{sim:.3g}"), "frames": float(f"{own:.3g}")})
        return own <= MAX_REMOVED_RATIO * sim

    spec, before, after = fit_postfilter(outputs, cleans, MIN_POSTFILTER_GAIN_DB, accept)
    return spec, before, after, checked


def _plain(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "postfilter"}


def _shifted(
    run: Generator[TrainEvent, None, Any], seconds: float
) -> Generator[TrainEvent, None, Any]:
    """``run``'s events with ``seconds`` added to their elapsed time: the time spent
    before training (the frames' average) counts in the budget the progress shows."""
    while True:
        try:
            ev = next(run)
        except StopIteration as stop:
            return stop.value
        yield replace(ev, elapsed_s=ev.elapsed_s + seconds)


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most ``n`` of ``items``, evenly strided from the first."""
    return list(items[:: max(1, -(-len(items) // n))][:n])


def _centre(frame: np.ndarray, side: int) -> np.ndarray:
    h, w = frame.shape[-2:]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.asarray(frame[y0 : y0 + side, x0 : x0 + side], np.float32)


def _gain_db(before: float, after: float) -> float:
    if not (before > 0 and after > 0):
        return 0.0
    return round(10 * math.log10(before / after), 2)


def _psnr(net: nn.Module, val: tuple[np.ndarray, np.ndarray]) -> float:
    from napari_temseg.engine.train import evaluate

    return float(evaluate(net, val, "l2", next(net.parameters()).device)[1])


def run_adapt(
    images: Sequence[Any],
    model: ModelSpec = None,
    config: AdaptConfig | None = None,
    pixel_size_nm: float | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> AdaptResult:
    """:func:`iter_adapt` to the end, calling ``progress(event)`` for every event."""
    return drain(iter_adapt(images, model, config, pixel_size_nm, cancel), progress)


def adapt_then_denoise(
    image: Any,
    model: ModelSpec = None,
    config: AdaptConfig | None = None,
    pixel_size_nm: float | None = None,
    progress: Callable[..., Any] | None = None,
    cancel: threading.Event | None = None,
    **denoise_kw: Any,
) -> tuple[np.ndarray, AdaptResult]:
    """The Denoise dock's job with *Adapt* on: adapt to ``image``, then denoise it.

    ``progress`` is called ``(seconds spent, budget, "adapting")`` while adapting, then
    ``(tiles done, total)`` as ``engine.denoise`` calls it. Cancelling during the
    adaptation raises ``engine.Cancelled`` (nothing half-adapted is used). ``denoise_kw``
    go to ``engine.denoise`` (tile, overlap); its binning is the adaptation's.
    """
    from napari_temseg.engine.denoise import denoise
    from napari_temseg.engine.tiling import Cancelled

    cfg = config or AdaptConfig()

    def on_event(ev: TrainEvent) -> None:
        if progress is not None and ev.kind == "step":
            progress(min(ev.elapsed_s, cfg.seconds), cfg.seconds, "adapting")

    result = run_adapt([image], model, cfg, pixel_size_nm, on_event, cancel)
    if cancel is not None and cancel.is_set():
        raise Cancelled("adaptation cancelled")
    out = denoise(
        image,
        result.spec,
        device=cfg.device,
        progress=progress,
        cancel=cancel,
        bin=cfg.bin,
        **denoise_kw,
    )
    return out, result


__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "NoiseMatchedPairs",
    "OwnAverage",
    "adapt_then_denoise",
    "iter_adapt",
    "noise_level",
    "run_adapt",
    "sample_frames",
]
