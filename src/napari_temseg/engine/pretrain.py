"""Pretrain a denoiser on the user's own unlabeled images (issue 5).

The user's frames are the targets; the inputs are copies of them with added shot noise at a
*lower* dose than the frame's own. The dose a frame was recorded at is estimated from the
frame itself (:func:`estimate_gain`): with a counting detector a pixel's variance grows
linearly with its mean, ``var = gain * (mean - offset)``, so a straight line through the
(local mean, local noise variance) of many small blocks gives the gain (ADU per electron) and
offset, hence each pixel's electron count. A copy at a fraction ``f`` of that dose is
``Poisson(f * electrons) / f`` in the same units (Noisier2Noise style: the target keeps its
own, weaker noise, whose mean the network learns). Optionally the full simulator distortion
set (``synth.distort``) makes the copies, and a share of simulated images is mixed in.

Everything else (patches, augmentation, LR schedule, best-by-validation checkpoint, NaN
guard, seeding, cancel) is :func:`engine.train.iter_train` or :mod:`engine.pix2pix`;
:func:`iter_pretrain` picks the method, the start model and the validation split, and
adds step offsets (for Continue) and a small before/after preview for the widget.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_temseg import defaults
from napari_temseg.engine.data import PairSource
from napari_temseg.engine.events import DenoisePreview, TrainEvent, drain
from napari_temseg.engine.finite import filled
from napari_temseg.engine.train import TrainConfig, TrainResult, iter_train, settings_of
from napari_temseg.models.normalize import Normalization
from napari_temseg.models.resolve import AUTO, SCRATCH, start_denoiser

METHODS = ("poisson", "pix2pix")
#: gain assumed when a frame's noise does not follow shot noise (e.g. an already
#: processed float image): its mean is taken to be this many electrons per pixel
FALLBACK_DOSE = 100.0


# --------------------------------------------------------------------------- dose estimate


@dataclass(frozen=True)
class DoseEstimate:
    """How a frame's values relate to electrons: ``electrons = (value - offset) / gain``."""

    gain: float  # ADU per electron
    offset: float  # ADU of zero electrons
    dose: float  # mean electrons per pixel of the frame
    fitted: bool  # False: the noise did not look like shot noise, FALLBACK_DOSE assumed

    def electrons(self, frame: np.ndarray) -> np.ndarray:
        return np.clip((frame - self.offset) / self.gain, 0, None).astype(np.float32)


def estimate_gain(frame: np.ndarray, block: int = 8) -> DoseEstimate:
    """Gain and offset of a frame from the mean-variance line of its small blocks.

    The noise variance of a block is measured on the residual of each pixel minus the mean
    of its four neighbours (white noise of variance s² gives 1.25 s²), which removes most
    of the smooth signal; atomic contrast leaks in, so each of 16 mean-bins keeps its
    quietest quarter of blocks before a straight line is fitted.
    """
    x = np.asarray(frame, np.float64)
    if x.ndim != 2 or min(x.shape) < 3 * block:
        raise ValueError(f"need a 2D frame of at least {3 * block} px, got {x.shape}")
    if x.size > 2048 * 2048:  # a centre crop is plenty for the statistics
        cy, cx = x.shape[0] // 2, x.shape[1] // 2
        x = x[max(0, cy - 1024) : cy + 1024, max(0, cx - 1024) : cx + 1024]
    r = x[1:-1, 1:-1] - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
    c = x[1:-1, 1:-1]
    h, w = (s // block * block for s in r.shape)
    shape = (h // block, block, w // block, block)
    means = c[:h, :w].reshape(shape).mean(axis=(1, 3)).ravel()
    vars_ = r[:h, :w].reshape(shape).var(axis=(1, 3)).ravel() / 1.25
    ok = np.isfinite(means) & np.isfinite(vars_)
    means, vars_ = means[ok], vars_[ok]
    lo_val = float(np.percentile(x, 0.1))
    fitted = False
    gain, offset = math.nan, lo_val
    if means.size >= 32 and np.ptp(means) > 0:
        edges = np.quantile(means, np.linspace(0, 1, 17))
        pts = []
        for a, b in itertools.pairwise(edges):
            sel = (means >= a) & (means <= b)
            if sel.sum() >= 4:
                v = vars_[sel]
                q = v <= np.percentile(v, 25)
                pts.append((float(means[sel][q].mean()), float(v[q].mean())))
        if len(pts) >= 3 and np.ptp([p[0] for p in pts]) > 0:
            slope, intercept = np.polyfit(*np.array(pts).T, 1)
            if slope > 0 and math.isfinite(slope):
                gain, offset, fitted = float(slope), float(-intercept / slope), True
                offset = min(offset, lo_val)  # read-out noise raises the intercept
    mean = float(x.mean())
    if not fitted or (mean - offset) / gain < 1e-3:
        offset = lo_val
        gain = max(mean - offset, 1e-6) / FALLBACK_DOSE
        fitted = False
    return DoseEstimate(gain, offset, max((mean - offset) / gain, 1e-6), fitted)


# --------------------------------------------------------------------------- patch source


def _frames(images: Sequence[Any], names: Sequence[str] = ()) -> list[np.ndarray]:
    """Every 2D frame of 2D images and stacks (..., Y, X), as float32 arrays."""
    out = []
    for i, im in enumerate(images):
        name = names[i] if i < len(names) else f"image {i + 1}"
        shape = getattr(im, "shape", None)
        dtype = np.dtype(getattr(im, "dtype", np.float32))
        if shape is None or len(shape) < 2:
            raise ValueError(f"image {i + 1}: expected a 2D image or a stack, got shape {shape}")
        if dtype.kind not in "uif":
            raise ValueError(f"image {i + 1}: expected a grayscale image, got dtype {dtype}")
        if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
            raise ValueError(
                f"image {i + 1} of shape {tuple(shape)} looks like an RGB picture; "
                "pretraining expects grayscale micrographs"
            )
        flat = np.asarray(im, np.float32).reshape(-1, *shape[-2:])
        for k in range(flat.shape[0]):
            where = f"{name} frame {k + 1}" if flat.shape[0] > 1 else name
            out.append(_finite_frame(flat[k], where))
    if not out:
        raise ValueError("no images to pretrain on")
    return out


def _finite_frame(frame: np.ndarray, where: str) -> np.ndarray:
    """``frame`` with its NaN/inf pixels filled as the tiles fill them at inference
    (``engine.finite.filled``): their NaN made every noisy copy NaN ("lam value too
    large" from the Poisson draw). A frame with no finite pixel is refused."""
    ok = np.isfinite(frame)
    if ok.all():
        return frame
    if not ok.any():
        raise ValueError(f"{where} has no finite pixel value (all NaN or infinite); check the file")
    return filled(frame)[0].astype(np.float32)


def _split(frame: np.ndarray, patch: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) regions of a frame: the bottom (or right) strip is held out."""
    h, w = frame.shape
    for axis, n in ((0, h), (1, w)):
        strip = max(patch, round(n * val_fraction))
        if n - strip >= patch:
            cut = n - strip
            if axis == 0:
                return frame[:cut], frame[cut:]
            return frame[:, :cut], frame[:, cut:]
    return frame, frame  # too small to split: validated on its own training region


@dataclass
class PoissonPairs:
    """Makes (lower-dose copy, original) pairs from regions of the user's frames."""

    regions: list[np.ndarray]
    doses: list[DoseEstimate]
    dose_fraction: tuple[float, float]
    full_distortions: bool = False
    kind: str = "stem"
    sim_fraction: float = 0.0
    sim_size: int = 256
    intensity_range: tuple[float, float] = (0.5, 2.0)
    weights: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        area = np.array([r.size for r in self.regions], np.float64)
        self.weights = area / area.sum()

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.dose_fraction
        f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if self.sim_fraction > 0 and rng.random() < self.sim_fraction:
            noisy, clean = self._simulated(rng)
        else:
            k = int(rng.choice(len(self.regions), p=self.weights))
            noisy, clean = self._copy(self.regions[k], self.doses[k], f, rng)
        s = float(np.exp(rng.uniform(*np.log(self.intensity_range))))
        return noisy * s, clean * s

    def _copy(
        self, region: np.ndarray, est: DoseEstimate, f: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        e = est.electrons(region)
        if self.full_distortions:
            from napari_temseg.synth import DistortionConfig, distort

            top = max(float(np.percentile(e, 99.9)), 1e-6)
            ideal = np.clip(e / top, 0, 1)
            noisy, clean, _ = distort(ideal, f * top, self.kind, rng, DistortionConfig.full())
            return noisy, clean
        noisy = rng.poisson(e * f).astype(np.float32) * np.float32(est.gain / f) + est.offset
        return noisy, region

    def _simulated(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from napari_temseg.synth import DistortionConfig, simulate

        lo = min(d.dose for d in self.doses) * self.dose_fraction[0]
        hi = max(d.dose for d in self.doses) * self.dose_fraction[1]
        dose = float(np.exp(rng.uniform(np.log(max(lo, 0.1)), np.log(max(hi, lo, 0.2)))))
        cfg = DistortionConfig.full() if self.full_distortions else DistortionConfig.poisson_only()
        s = simulate(
            self.kind, self.sim_size, dose=dose, seed=int(rng.integers(2**63)), distortions=cfg
        )
        return s.noisy, s.clean


def own_image_sources(
    images: Sequence[Any],
    patch: int = 128,
    dose_fraction: tuple[float, float] = (0.05, 0.5),
    val_fraction: float = 0.15,
    full_distortions: bool = False,
    sim_fraction: float = 0.0,
    kind: str = "stem",
    names: Sequence[str] = (),
    normalization: Normalization | None = None,
    patches_per_image: int = 8,
) -> tuple[PairSource, PairSource]:
    """(training, validation) patch sources over the user's images.

    Each frame's bottom strip (``val_fraction`` of its height, at least one patch) is held
    out for validation when the frame is tall or wide enough; smaller frames are used for
    both, which the description records. Input doses are ``dose_fraction`` times the
    frame's own estimated dose (5-50 % by default: 2-20x more noise than the original).
    """
    if not 0 < dose_fraction[0] <= dose_fraction[1] < 1:
        raise ValueError(f"dose_fraction must satisfy 0 < lo <= hi < 1, got {dose_fraction}")
    if not 0 <= sim_fraction <= 1:
        raise ValueError(f"sim_fraction must be in [0, 1], got {sim_fraction}")
    frames = _frames(images, names)
    small = [f.shape for f in frames if min(f.shape) < patch]
    if small:
        raise ValueError(
            f"an image of {small[0][0]}x{small[0][1]} px is smaller than the patch size "
            f"{patch}; choose a smaller patch size"
        )
    doses = [estimate_gain(f) for f in frames]
    splits = [_split(f, patch, val_fraction) for f in frames]
    held_out = sum(1 for t, v in splits if t is not v)
    norm = normalization or Normalization()
    description = {
        "source": "user images with added shot noise (napari_temseg.engine.pretrain)",
        "files": list(names),
        "frames": len(frames),
        "frame_shapes": sorted({list(f.shape).__repr__() for f in frames}),
        "image_dose_e_per_px": [round(d.dose, 3) for d in doses],
        "gain_adu_per_e": [round(d.gain, 5) for d in doses],
        "gain_fitted": [d.fitted for d in doses],
        "copy_dose_fraction": list(dose_fraction),
        "full_distortions": full_distortions,
        "simulated_fraction": sim_fraction,
        "kind": kind,
        "validation": f"held-out strip of {held_out}/{len(frames)} frames"
        + ("" if held_out == len(frames) else "; the rest validated on their training region"),
    }

    def make(regions: list[np.ndarray], sim: float) -> PairSource:
        pairs = PoissonPairs(
            regions, doses, dose_fraction, full_distortions, kind, sim, sim_size=max(256, patch)
        )
        return PairSource(pairs, patch, norm, patches_per_image, 0.0, True, description)

    return make([t for t, _ in splits], sim_fraction), make([v for _, v in splits], 0.0)


# --------------------------------------------------------------------------- runner


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs besides the images (all JSON-able)."""

    method: str = defaults.PRETRAIN_METHOD
    steps: int = defaults.PRETRAIN_STEPS
    patch: int = defaults.PRETRAIN_PATCH
    batch_size: int = defaults.PRETRAIN_BATCH
    lr: float | None = None  # None: 1e-3 (poisson, 3e-4 from a pretrained model), 2e-4 (pix2pix)
    init: str | None = AUTO  # "auto", "scratch"/None, a bundled name or a checkpoint path
    kind: str = "stem"  # which bundled denoiser "auto" starts from, and the simulator kind
    base: int = 16  # U-Net width and depth when starting from scratch
    depth: int = 4
    dose_fraction: tuple[float, float] = (0.05, 0.5)
    full_distortions: bool = False
    sim_fraction: float = 0.0
    val_fraction: float = 0.15
    val_every: int = 100
    val_size: int = 32
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    output: str | None = None  # checkpoint path (written at every new best, and at the end)
    preview_every_s: float = 3.0  # 0: no preview
    preview_size: int = 128

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.patch < 16:
            raise ValueError(f"patch must be at least 16 px, got {self.patch}")


@dataclass
class PretrainResult:
    path: Path | None  # the checkpoint (None when stopped before any step)
    steps_done: int
    total_steps: int
    best_step: int
    best_val_loss: float
    best_val_psnr: float
    elapsed_s: float
    stopped: bool
    message: str


def _preview(
    model: nn.Module, crop: np.ndarray, norm: Normalization, stats: tuple[float, float]
) -> np.ndarray:
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(norm.apply(crop, stats)))[None, None]
        y = model(x.to(dev)).float().cpu().numpy()[0, 0]
    model.train(was_training)
    return Normalization.invert(y, stats).astype(np.float32)


def iter_pretrain(
    images: Sequence[Any],
    config: PretrainConfig,
    names: Sequence[str] = (),
    cancel: threading.Event | None = None,
) -> Generator[TrainEvent, None, PretrainResult]:
    """Pretrain on ``images`` (2D arrays or stacks); yields :class:`TrainEvent`.

    The returned :class:`PretrainResult` names the checkpoint written to ``config.output``
    (the best model by validation loss, task "denoise", loadable with ``load_model``).
    Continuing a run is starting from its checkpoint (``init=path``): the weights are the
    best ones of that run and step numbers carry on from its total.
    """
    from napari_temseg.engine.pix2pix import Pix2PixConfig, iter_pix2pix
    from napari_temseg.io.outputs import check_output_file

    cfg = config
    if cfg.output:  # before any step: training must not be lost to an unwritable output
        check_output_file(cfg.output, overwrite=True)
    torch.manual_seed(cfg.seed)  # fresh weights are part of the seeded run
    model, init_meta = start_denoiser(cfg.init, cfg.kind, cfg.base, cfg.depth)
    norm = Normalization.from_dict(init_meta.get("normalization"))
    train_src, val_src = own_image_sources(
        images,
        cfg.patch,
        tuple(cfg.dose_fraction),
        cfg.val_fraction,
        cfg.full_distortions,
        cfg.sim_fraction,
        cfg.kind,
        names,
        norm,
    )
    val = val_src.sample(cfg.val_size, np.random.default_rng([cfg.seed, 1]))
    offset = int(init_meta.get("pretrain", {}).get("total_steps", 0)) if init_meta else 0
    warm = bool(init_meta)
    lr = cfg.lr or (2e-4 if cfg.method == "pix2pix" else 3e-4 if warm else 1e-3)
    files = ", ".join(names) if names else f"{train_src.describe()['frames']} frame(s)"
    meta = {
        "name": Path(cfg.output).stem if cfg.output else "pretrained",
        "description": f"pretrained ({cfg.method}) on {files}",
        "modality": cfg.kind,
        "pretrain": {
            "method": cfg.method,
            "init": init_meta.get("init", SCRATCH),
            "step_offset": offset,
            "total_steps": offset,  # updated at the end of the run
            "config": _jsonable(asdict(cfg)),
        },
    }
    common = dict(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=lr,
        val_every=cfg.val_every,
        val_size=cfg.val_size,
        seed=cfg.seed,
        device=cfg.device,
        checkpoint=cfg.output,
        meta=meta,
        warmup=min(100, cfg.steps // 10) if not warm else min(20, cfg.steps // 20),
    )
    lead = np.ndim(images[0]) - 2
    first = np.asarray(images[0][(0,) * lead] if lead > 0 else images[0], np.float32)
    ps = min(cfg.preview_size, *first.shape)
    cy, cx = (first.shape[0] - ps) // 2, (first.shape[1] - ps) // 2
    crop = first[cy : cy + ps, cx : cx + ps]
    stats = norm.stats(first)

    def preview(net: nn.Module) -> DenoisePreview:
        return DenoisePreview(crop.copy(), _preview(net, crop, norm, stats))

    run = dict(
        val=val,
        cancel=cancel,
        first_step=offset,
        preview=preview,
        preview_every_s=cfg.preview_every_s if cfg.preview_every_s > 0 else None,
    )
    if cfg.method == "pix2pix":
        tcfg = Pix2PixConfig(**common)
        result = yield from iter_pix2pix(model, train_src, tcfg, **run)
    else:
        tcfg = TrainConfig(**common)
        result = yield from iter_train(model, train_src, tcfg, **run)
    return _finish(result, cfg, tcfg, train_src, offset, meta, init_meta)


def _finish(
    result: TrainResult,
    cfg: PretrainConfig,
    tcfg: TrainConfig,
    source: PairSource,
    offset: int,
    meta: dict,
    init_meta: dict,
) -> PretrainResult:
    from napari_temseg.models import save_or_rescue

    total = offset + result.steps_done
    if result.steps_done == 0 or not math.isfinite(result.best_val_loss):
        return PretrainResult(
            None,
            0,
            offset,
            0,
            math.nan,
            math.nan,
            result.elapsed_s,
            result.stopped,
            "stopped before the first training step; no model was saved",
        )
    path = None
    if cfg.output:
        train_cfg = settings_of(tcfg)
        desc = source.describe()
        desc["patches_seen"] = result.steps_done * cfg.batch_size
        full = {
            **meta,
            "task": "denoise",
            "normalization": source.normalization.to_dict(),
            "training_data": desc,
            "training": {
                **train_cfg,
                "steps_done": result.steps_done,
                "best_step": result.best_step - offset,
                "val_loss": result.best_val_loss,
                "val_psnr_db": result.best_val_psnr,
                "minutes": round(result.elapsed_s / 60, 3),
                "stopped": result.stopped,
            },
            "pretrain": {
                **meta["pretrain"],
                "total_steps": total,
                "best_total_step": result.best_step,
            },
        }
        for key in ("pixel_size_nm_range",):
            if key in init_meta:
                full[key] = init_meta[key]
        path = save_or_rescue(cfg.output, result.model, full)
    how = "stopped" if result.stopped else "finished"
    msg = (
        f"{how} after {result.steps_done} steps; best at step {result.best_step} "
        f"(validation PSNR {result.best_val_psnr:.2f} dB)"
    )
    return PretrainResult(
        path,
        result.steps_done,
        total,
        result.best_step,
        result.best_val_loss,
        result.best_val_psnr,
        result.elapsed_s,
        result.stopped,
        msg,
    )


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def run_pretrain(
    images: Sequence[Any],
    config: PretrainConfig,
    names: Sequence[str] = (),
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> PretrainResult:
    """:func:`iter_pretrain` to the end, calling ``progress(event)`` for every event."""
    return drain(iter_pretrain(images, config, names, cancel), progress)


__all__ = [
    "DoseEstimate",
    "PretrainConfig",
    "PretrainResult",
    "estimate_gain",
    "iter_pretrain",
    "own_image_sources",
    "run_pretrain",
]
