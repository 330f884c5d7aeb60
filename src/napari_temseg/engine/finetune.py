"""Fine-tune a pretrained denoiser (or a fresh U-Net) into a K-class segmenter from strokes.

Copying a denoiser's weights naively does not help (``NOTES.md``: no better and less stable
than training from scratch), so the recipe here is the careful one:

- the pretrained encoder-decoder is kept and a new K-class 1x1 head is put on it, fitted to
  the strokes by logistic regression on the network's features before the first step
  (``head_fit``, ``engine/probe.py``): the first preview is already a usable mask, and
  no random head gradients scramble the pretrained features. A head left at zero (no fit)
  trains alone for the first ``head_warmup`` steps instead;
- afterwards the pretrained layers train with a lower learning rate than the head
  (``backbone_lr_scale``), or the encoder stays frozen throughout (``freeze_encoder``);
- the input normalisation is the denoiser's own (from its checkpoint), and the networks have
  no normalisation layers (``models/layers.py``), so nothing depends on batch size or tile;
  a from-scratch segmenter is the very same U-Net, so comparisons measure the init alone;
- the loss is class-weighted cross-entropy over painted pixels only (label 0 is ignored)
  plus a soft Dice term, so a class covering well under 1 % of the image still counts;
- the model kept is the mean of the weights at the validations of the run's last half
  (``average_late``, stochastic weight averaging): held-out strokes of the painted frames
  judge unpainted frames poorly (their Dice fell from 1.0 to 0.66 while the unpainted
  frames' rose), and the average beat the snapshot they picked (docs/benchmarks.md);
  before that, and with ``average_late=0``, the best model by held-out strokes (mean
  per-class Dice); early stopping, a NaN guard and cancel between steps; a run continues
  from a segmenter (step count included).

:class:`Finetuner` is a generator-driven trainer (widgets and scripts watch the same
events); :func:`finetune` runs it to the end.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_temseg import defaults
from napari_temseg.engine.device import select_device
from napari_temseg.engine.events import PreviewWindow, SegmentPreview, TrainEvent, drain
from napari_temseg.engine.loop import (
    Best,
    LoopConfig,
    Method,
    StepResult,
    TrainingLoop,
    Validation,
    WarmupCosine,
    now,
)
from napari_temseg.engine.prior import KEEP, TRUST, estimate_prior, prior_ratio, stroke_prior
from napari_temseg.engine.probe import fit_head
from napari_temseg.engine.strokes import SegmentError, StrokeSource
from napari_temseg.engine.tiling import Cancelled, predict_tiled
from napari_temseg.engine.train import guarded_step
from napari_temseg.models import UNet
from napari_temseg.models.normalize import Normalization
from napari_temseg.models.resolve import load_segmenter_start

#: colours of classes 1..K when none are given (support blue, particle orange, ...)
DEFAULT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
)
DEFAULT_CLASSES = ("support", "particle")
#: the phase of the preview that shows the final model, class balance included
PHASE_BALANCE = "class balance"
#: the class balance is estimated on the centres of this many painted frames ...
BALANCE_FRAMES = 4
#: ... of at most this many pixels a side (about a second of inference each on a CPU)
BALANCE_SIDE = 1024

Init = str | Path | nn.Module | tuple[nn.Module, dict] | None


@dataclass
class FinetuneConfig:
    """How to fine-tune; the defaults are the measured ones (``docs/segment.md``)."""

    steps: int = defaults.FINETUNE_STEPS
    max_seconds: float = defaults.FINETUNE_SECONDS  # stop after this long or steps; 0 = none
    batch_size: int = defaults.FINETUNE_BATCH
    patch: int = defaults.FINETUNE_PATCH
    lr: float = defaults.FINETUNE_LR
    backbone_lr_scale: float = 0.3
    head_fit: bool = True  # fit a new head to the strokes first (engine/probe.py)
    head_fit_min_dice: float = 0.8  # keep the fit only if held-out strokes agree this well
    head_warmup: int = 5  # head-only steps for a head left at zero (head_fit off or failed)
    freeze_encoder: bool = False
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    val_every: int = 25
    first_val: int = 10
    patience: int = 12  # validations without improvement before stopping; 0 = never
    # keep the mean of the weights validated in this last share of the run (0: the best)
    average_late: float = 0.5
    val_fraction: float = 0.2
    # validate on one whole painted frame when at least this many are painted (0: never;
    # off by default: training on a third fewer strokes cost 0.045 Dice on unpainted frames)
    holdout_frames: int = 0
    augment: bool = True
    scale_jitter: float = 0.15
    invert_contrast: float = 0.0  # share of patches shown with inverted contrast
    gamma_jitter: float = 0.0  # detector gamma in [1/(1+g), 1+g] on half the patches
    blur_jitter: float = 0.0  # Gaussian blur up to this sigma (px) on 30 % of patches
    grad_clip: float = 1.0
    # correct the strokes' class proportions to the painted frames' own (engine/prior.py)
    class_balance: bool = True
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    base: int = 16  # architecture of a from-scratch U-Net
    depth: int = 4

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.max_seconds >= 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"max_seconds must be >= 0 (0: no limit), got {self.max_seconds}")
        if not 0 <= self.average_late <= 1:
            raise ValueError(f"average_late must be in [0, 1], got {self.average_late}")
        if not 0 <= self.val_fraction < 0.9:
            raise ValueError(f"val_fraction must be in [0, 0.9), got {self.val_fraction}")


@dataclass
class FinetuneResult:
    model: nn.Module
    meta: dict[str, Any]
    steps_done: int
    best_step: int
    best_score: float
    best_val_dice: list[float | None]
    best_val_loss: float
    stopped: bool
    early_stopped: bool
    elapsed_s: float
    history: list[TrainEvent] = field(default_factory=list)
    timed_out: bool = False  # the time budget (``max_seconds``) ended the run
    averaged_from: int | None = None  # the model averages the weights of steps from here on

    @property
    def kept(self) -> str:
        """Which weights the model holds, in words (the dock's and the CLI's status)."""
        return kept_weights(self.best_step, self.averaged_from)


def kept_weights(best_step: int, averaged_from: int | None) -> str:
    if averaged_from is None or averaged_from >= best_step:
        return f"the weights of step {best_step}"
    return f"the mean of the weights of steps {averaged_from}-{best_step}"


# --------------------------------------------------------------------------- models


def init_segmenter(
    init: Init, class_names: list[str], base: int = 16, depth: int = 4, seed: int = 0
) -> tuple[nn.Module, dict[str, Any], bool]:
    """A K-class segmenter from ``init`` -> (model, meta, head_is_new).

    ``seed`` draws a from-scratch network's weights (without touching the global RNG), so
    that one configuration trains to one result: an unseeded start once made the same
    strokes give particle Dice 0.92 in one run and 0.54 in the next.

    ``init``: "none" (from scratch), "auto" (``models.resolve.auto_denoiser``: the
    bundled STEM denoiser if installed, else scratch), a bundled name, a checkpoint path, a
    module or a ``(module, meta)`` pair. A denoiser gets a new K-class head (a bundled one
    that names a fine-tuning start, ``models.bundled.FINETUNE_START``, gives that start's
    network); a segmenter continues as it is, and must have been trained for as many
    classes.
    """
    k = len(class_names)
    if k < 2:
        raise SegmentError("name at least two classes (e.g. support, particle)")
    src, meta, name, start = load_segmenter_start(init)
    if src is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = UNet(1, k, base=base, depth=depth)  # the same network as the denoisers
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        return model, {"source_model": "none", "normalization": Normalization().to_dict()}, True
    task = meta.get("task", "denoise")
    if task == "segment":
        old = list(meta.get("class_names") or [])
        out = getattr(src, "config", {}).get("out_channels", len(old))
        if out != k:
            raise SegmentError(
                f"this segmenter was trained for {out} classes ({', '.join(old)}), not for "
                f"{k} ({', '.join(class_names)}); use the same classes or start from a denoiser"
            )
        model = copy.deepcopy(src).cpu()
        ratio = prior_ratio(meta)
        corrected = ratio is not None and meta["class_balance"].get("in_head_bias")
        if corrected and getattr(model, "head", None) is not None:
            _shift_head(model, ratio, -1.0)  # train on from the strokes' own prior
        drop = ("config", "class_balance")
        return model, {k2: v for k2, v in meta.items() if k2 not in drop}, False
    if not hasattr(src, "replace_head"):
        raise SegmentError(
            f"{name}: only U-Net denoisers can become segmenters "
            f"(this is a {getattr(src, 'config', {}).get('arch', type(src).__name__)})"
        )
    model = copy.deepcopy(src).cpu()
    head = model.replace_head(k)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    norm = meta.get("normalization") or Normalization().to_dict()
    record = {"source_model": name, "normalization": norm}
    if start:
        record["start_weights"] = start  # the denoiser's bundled fine-tuning start
    return model, record, True


# --------------------------------------------------------------------------- losses


def stroke_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    dice_weight: float = 0.5,
) -> torch.Tensor:
    """Weighted cross-entropy + soft Dice over painted pixels only (target 0 = ignore).

    ``target`` holds labels 1..K as painted; unlabelled pixels contribute nothing, whatever
    the network predicts there.
    """
    mask = target > 0
    if not bool(mask.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), target - 1, weight=weights, ignore_index=-1)
    if dice_weight <= 0:
        return ce
    probs = logits.float().softmax(1)
    k = logits.shape[1]
    onehot = F.one_hot((target - 1).clamp(min=0), k).permute(0, 3, 1, 2).float()
    m = mask[:, None].float()
    inter = (probs * onehot * m).sum((0, 2, 3))
    denom = (probs * m).sum((0, 2, 3)) + (onehot * m).sum((0, 2, 3))
    present = (onehot * m).sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return ce + dice_weight * (1 - dice[present]).mean()


def dice_per_class(pred: np.ndarray, target: np.ndarray, k: int) -> list[float | None]:
    """Dice of labels 1..k on the labelled pixels of ``target`` (None: class absent there)."""
    m = target > 0
    p, t = pred[m], target[m]
    out: list[float | None] = []
    for c in range(1, k + 1):
        tc, pc = t == c, p == c
        n = tc.sum()
        out.append(None if n == 0 else float(2 * (tc & pc).sum() / (n + pc.sum())))
    return out


# --------------------------------------------------------------------------- trainer


def _shift_head(model: nn.Module, ratio: np.ndarray, sign: float) -> None:
    """Add ``sign * log(ratio)`` to the head's bias, in place: softmax(z + log r) is
    softmax(z) * r renormalised, so +1 applies a class-balance correction, -1 undoes it."""
    with torch.no_grad():
        bias = model.head.bias
        bias += sign * torch.log(torch.as_tensor(ratio, dtype=torch.float32)).to(bias.device)


def _stroke_recall(
    probs: list[np.ndarray], painted: list[np.ndarray], ratio: np.ndarray
) -> list[float]:
    """Per class, the share of its painted pixels that the (re-weighted) argmax gives it."""
    hit, total = np.zeros(len(ratio)), np.zeros(len(ratio))
    for p, lab in zip(probs, painted, strict=True):
        pred = (p * ratio[:, None, None]).argmax(0) + 1
        for c in range(len(ratio)):
            mask = lab == c + 1
            hit[c] += np.count_nonzero(pred[mask] == c + 1)
            total[c] += np.count_nonzero(mask)
    return [float(h / t) if t else 1.0 for h, t in zip(hit, total, strict=True)]


class Finetuner:
    """Fine-tune a segmenter on painted strokes; :meth:`run` yields :class:`TrainEvent`.

    ``images``/``labels``: lists of arrays (2D or stacks) of matching shapes, labels 0 =
    unlabelled, 1..K = ``class_names``. ``pixel_sizes``: nm/px per image (None: unknown).
    ``init``: see :func:`init_segmenter`. Errors a user can cause raise
    :class:`~napari_temseg.engine.strokes.SegmentError` here, before any training.
    """

    def __init__(
        self,
        images: list[Any],
        labels: list[Any],
        class_names: list[str] | tuple[str, ...] = DEFAULT_CLASSES,
        init: Init = "auto",
        config: FinetuneConfig | None = None,
        pixel_sizes: list[float | None] | None = None,
        class_colors: list[str] | None = None,
    ) -> None:
        self.config = cfg = config or FinetuneConfig()
        self.class_names = [str(c).strip() for c in class_names]
        if len(set(self.class_names)) != len(self.class_names) or not all(self.class_names):
            raise SegmentError(f"class names must be distinct and non-empty: {self.class_names}")
        k = len(self.class_names)
        self.model, self.meta, self.head_is_new = init_segmenter(
            init, self.class_names, cfg.base, cfg.depth, seed=cfg.seed
        )
        self.class_colors = list(class_colors or self.meta.get("class_colors") or [])
        self.class_colors += list(DEFAULT_COLORS[len(self.class_colors) : k])
        self.normalization = Normalization.from_dict(self.meta.get("normalization"))
        self.source = StrokeSource(
            images,
            labels,
            k,
            patch=cfg.patch,
            normalization=self.normalization,
            pixel_sizes=pixel_sizes,
            pixel_size_nm=self.meta.get("pixel_size_nm"),
            val_fraction=cfg.val_fraction,
            holdout_frames=cfg.holdout_frames,
            augment=cfg.augment,
            scale_jitter=cfg.scale_jitter,
            invert=cfg.invert_contrast,
            gamma_jitter=cfg.gamma_jitter,
            blur_jitter=cfg.blur_jitter,
            seed=cfg.seed,
        )
        #: what the user should know before training (one line each; the faces show them)
        self.notes = [
            f"class {c} '{self.class_names[c - 1]}' has no strokes: it is not learned, nor "
            "ever predicted, until some are painted"
            for c in self.source.unpainted
        ]
        self.val = self.source.validation()
        self.val_on = "held-out strokes"
        if self.source.held_out_frame is not None:
            image, *frame = self.source.held_out_frame
            where = f"image {image + 1}" + (f", frame {tuple(frame)}" if frame else "")
            self.val_on = f"a whole painted frame left out of training ({where})"
        if len(self.val[0]) == 0:
            self.val = self.source.validation(which="train")
            self.val_on = "training strokes (too few strokes to hold any out)"
        self.device = select_device(cfg.device)
        self.start_step = int(self.meta.get("training", {}).get("steps_done", 0))
        self.steps_done = self.start_step
        # the best so far; it outlives a run (Train again continues this tuner)
        self.best = Best(step=self.start_step, state=copy.deepcopy(self.model.state_dict()))
        self.head_fit_accuracy: float | None = None  # stroke-pixel accuracy of a kept fit
        self.head_fit_val_dice: float | None = None  # held-out Dice of the fit, kept or not
        self._head_fit_tried = False
        self._balance: dict[str, Any] | None = None
        self._head_fit_val: tuple[float, list[float | None]] | None = None  # run() reuses it

    # ------------------------------------------------------------------ helpers

    def fit_new_head(self) -> float | None:
        """Fit the new head to the strokes (``engine/probe.py``); None: left at zero.

        The fit is kept only if it also segments the held-out strokes (mean per-class Dice
        >= ``head_fit_min_dice``). Measured (docs/benchmarks.md): where a linear function
        of the features separates the classes (bright STEM particles) the fitted head is
        right at once; where it cannot (HRTEM fringes, held-out Dice about 0.56) starting
        from it ended lower after 150 steps (0.88) than the zero head with warm-up (0.94).
        """
        self._head_fit_tried = True
        rng = np.random.default_rng([self.config.seed, self.steps_done, 7])
        batches = [self.source.sample(self.config.batch_size, rng) for _ in range(2)]
        weights = torch.from_numpy(self.source.class_weights())
        model = self.model.to(self.device)
        accuracy = fit_head(model, batches, weights, rng)
        if accuracy is None:
            return None
        self._head_fit_val = self.validate()
        known = [d for d in self._head_fit_val[1] if d is not None]
        self.head_fit_val_dice = float(np.mean(known)) if known else None
        if known and self.head_fit_val_dice < self.config.head_fit_min_dice:
            nn.init.zeros_(model.head.weight)  # back to the warm-up recipe
            nn.init.zeros_(model.head.bias)
            self._head_fit_val = None
            return None
        self.head_fit_accuracy = accuracy
        return accuracy

    def _groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        enc = list(self.model.encoder.parameters())
        dec = list(self.model.decoder.parameters())
        head = list(self.model.head.parameters())
        return enc, dec, head

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> tuple[float, list[float | None]]:
        """(cross-entropy, per-class Dice) on the validation windows."""
        model = model or self.model
        model.eval()
        xs, ys = self.val
        preds, losses, n = [], 0.0, 0
        for i in range(0, len(xs), 8):
            x = torch.from_numpy(xs[i : i + 8]).to(self.device)
            y = torch.from_numpy(ys[i : i + 8]).to(self.device)
            logits = model(x).float()
            m = y > 0
            if m.any():
                losses += float(F.cross_entropy(logits, y - 1, ignore_index=-1, reduction="sum"))
                n += int(m.sum())
            preds.append(logits.argmax(1).cpu().numpy() + 1)
        dice = dice_per_class(np.concatenate(preds), ys, len(self.class_names))
        return losses / max(n, 1), dice

    @property
    def best_state(self) -> dict[str, Any]:
        return self.best.state or {}

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def best_step(self) -> int:
        return self.best.step

    @property
    def best_loss(self) -> float:
        return self.best.loss

    @property
    def best_dice(self) -> list[float | None]:
        v = self.best.validation
        return (
            list(v.dice) if v is not None and v.dice is not None else [None] * len(self.class_names)
        )

    def preview(
        self, image: np.ndarray | PreviewWindow, cancel: threading.Event | None = None
    ) -> SegmentPreview:
        """The best model so far on ``image`` (the displayed window, or a
        :class:`PreviewWindow` the face moves), and the checks' view."""
        from napari_temseg.engine.checks import degenerate, uncertainty
        from napari_temseg.engine.segment import segment

        where = None
        if isinstance(image, PreviewWindow):
            image, where = image.current

        seg = (self.best_model(), self.segmenter_meta())
        labels, probs = segment(
            image,
            seg,
            device=self.device,
            tile=defaults.TILE,
            overlap=defaults.OVERLAP,
            cancel=cancel,
            probabilities=True,
        )
        return SegmentPreview(
            labels,
            np.round(uncertainty(probs) * 100).astype(np.uint8),
            # a held-out Dice of 1.00 and one class on the whole window disagree
            degenerate(labels, self.class_names),
            where,
        )

    def best_model(self) -> nn.Module:
        """A copy of the network with the best weights so far (eval mode, same device),
        with the painted frames' class balance in its head once it has been estimated."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best_state)
        balance = self.class_balance()
        if balance is not None:
            _shift_head(model, np.asarray(balance["ratio"]), 1.0)
        return model.eval()

    def class_balance(self) -> dict[str, Any] | None:
        """The class balance estimated on the painted frames for the current best weights
        and kept (see :meth:`estimate_class_balance`), or None."""
        current = self._balance_is_current() and self._balance["in_head_bias"]
        return self._balance if current else None

    def _balance_is_current(self) -> bool:
        return self._balance is not None and self._balance["best_step"] == self.best_step

    def estimate_class_balance(self) -> dict[str, Any] | None:
        """Estimate the painted frames' class shares with the best weights (engine/prior.py).

        The strokes' proportions are the painter's habit, not the image's: ten atoms and
        ten support strokes teach "half the pixels are atoms". The best network's
        probabilities on every pixel of the painted frames (centres of up to
        ``BALANCE_FRAMES`` frames, ``BALANCE_SIDE`` px a side) give the frames' shares by
        EM, and :meth:`best_model` moves the head's bias by log(shares / stroke prior).
        EM trusts the probabilities; an undertrained network's are not to be trusted, so
        the balance is kept only if the network finds ``prior.TRUST`` of every class's
        painted pixels and, balanced, still ``prior.KEEP`` of what it found before.
        Returns the record, kept or not.
        """
        self._balance = None
        counts = self.source.train_counts
        head = getattr(self.model, "head", None)
        if not self.config.class_balance or getattr(head, "bias", None) is None:
            return None
        if (counts == 0).any():
            return None  # a class without training strokes has no prior to correct
        model, k = self.best_model(), len(self.class_names)

        def fn(x: torch.Tensor) -> torch.Tensor:
            return model(x).float().softmax(1)

        probs, painted = [], []
        for f in self.source.frames[:BALANCE_FRAMES]:
            h, w = f.image.shape
            y0, x0 = max(0, (h - BALANCE_SIDE) // 2), max(0, (w - BALANCE_SIDE) // 2)
            window = np.s_[y0 : y0 + BALANCE_SIDE, x0 : x0 + BALANCE_SIDE]
            probs.append(
                predict_tiled(
                    f.image[window],
                    fn,
                    tile=defaults.TILE,
                    overlap=defaults.OVERLAP,
                    out_channels=k,
                    device=self.device,
                    normalization=None,
                    denormalize=False,
                )
            )
            painted.append(np.maximum(f.train[window], f.val[window]))
        trained = stroke_prior(counts, self.source.class_weights())
        shares, iterations = estimate_prior(probs, trained)
        ratio = shares / trained
        before = _stroke_recall(probs, painted, np.ones(k))
        after = _stroke_recall(probs, painted, ratio)
        kept = min(before) >= TRUST and all(
            a >= KEEP * b for a, b in zip(after, before, strict=True)
        )
        self._balance = {
            "strokes": [round(float(v), 5) for v in trained],
            "painted_frames": [round(float(v), 5) for v in shares],
            "ratio": [float(v) for v in ratio],
            "stroke_recall": [round(float(v), 4) for v in before],
            "stroke_recall_balanced": [round(float(v), 4) for v in after],
            "best_step": self.best_step,
            "iterations": iterations,
            "in_head_bias": bool(kept),
        }
        return self._balance

    def segmenter_meta(self) -> dict[str, Any]:
        """Checkpoint metadata of the best model so far."""
        cfg = {k: v for k, v in asdict(self.config).items()}
        return {
            "task": "segment",
            "description": "segmenter fine-tuned from painted strokes on "
            + ("scratch" if self.meta.get("source_model") == "none" else "a denoiser"),
            "class_names": self.class_names,
            "class_colors": self.class_colors,
            "source_model": self.meta.get("source_model", "none"),
            "normalization": self.normalization.to_dict(),
            "pixel_size_nm": self.source.pixel_size_nm,
            "training_data": self.source.describe(),
            **({"class_balance": self._balance} if self._balance_is_current() else {}),
            "training": {
                **cfg,
                "steps_done": self.steps_done,
                "best_step": self.best_step,
                "averaged_from_step": self.best.averaged_from,
                "val_dice": self.best_dice,
                "val_loss": self.best_loss,
                "validation": self.val_on,
                "head_fit_accuracy": self.head_fit_accuracy,
                "head_fit_val_dice": self.head_fit_val_dice,
            },
        }

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        steps: int | None = None,
        cancel: threading.Event | None = None,
        preview: np.ndarray | PreviewWindow | None = None,
        preview_every_s: float = 3.0,
    ) -> Generator[TrainEvent, None, FinetuneResult]:
        """Train ``steps`` more steps (default ``config.steps``); yields events, returns the result.

        The model ends with the best weights; ``cancel`` stops between steps and keeps them.
        ``config.max_seconds`` (head fit included) ends the run early too: a user thinks in
        "train for a minute", not in steps whose cost depends on the machine. Under a budget
        the learning-rate decay follows the time as well as the steps, so a run cut short by
        time still ends on a low rate. ``preview``: an image (the displayed window), or a
        :class:`PreviewWindow` the face moves, that a new best model segments, at most
        every ``preview_every_s``, as a "preview" event.
        """
        cfg = self.config
        steps = int(steps or cfg.steps)
        budget = float(cfg.max_seconds or 0.0) or None
        started = now()
        torch.manual_seed(cfg.seed + self.start_step)
        method = _StrokeTraining(self, np.random.default_rng([cfg.seed, self.steps_done]))
        fit_now = self.head_is_new and cfg.head_fit and not self._head_fit_tried
        if fit_now and not (cancel is not None and cancel.is_set()):
            self.fit_new_head()
        method.begin(cancel, preview)
        loop_cfg = LoopConfig(
            steps=steps,
            batch_size=cfg.batch_size,
            val_every=cfg.val_every,
            first_val=cfg.first_val,
            validate_first=method.fitted or not self.head_is_new,
            max_seconds=budget,
            max_bad_steps=20,
            patience=cfg.patience,
            patience_after=method.warmup,
            average_from=1 - cfg.average_late if cfg.average_late > 0 else None,
            ema_weight=0.1,
            preview_every_s=preview_every_s if preview is not None else None,
        )
        loop = TrainingLoop(
            method,
            loop_cfg,
            WarmupCosine(10, steps, 0.1, budget),
            first_step=self.steps_done,
            best=self.best,
            cancel=cancel,
            started=started,
        )
        first_step = self.steps_done
        out = yield from loop.run()
        self.model.eval()
        self.estimate_class_balance()
        if self.class_balance() is not None and preview is not None:
            # the window as the model the run returns segments it, balance included
            shown = self.preview(preview)
            yield TrainEvent(
                "preview",
                self.steps_done,
                self.steps_done,
                first_step,
                phase=PHASE_BALANCE,
                preview=shown,
            )
        return FinetuneResult(
            model=self.best_model(),
            meta=self.segmenter_meta(),
            steps_done=self.steps_done,
            best_step=self.best_step,
            best_score=self.best_score,
            best_val_dice=self.best_dice,
            best_val_loss=self.best_loss,
            stopped=out.stopped,
            early_stopped=out.early_stopped,
            elapsed_s=out.elapsed_s,
            history=out.history,
            timed_out=out.timed_out,
            averaged_from=self.best.averaged_from,
        )


class _StrokeTraining(Method):
    """Fine-tuning's step and validation for :class:`TrainingLoop`: stroke loss on the
    painted pixels, a lower rate for the pretrained layers, a head-only warm-up for a
    new head left at zero, and validation by mean per-class Dice."""

    def __init__(self, tuner: Finetuner, rng: np.random.Generator) -> None:
        cfg = tuner.config
        self.tuner, self.cfg, self.rng = tuner, cfg, rng
        self.model = tuner.model.to(tuner.device)
        self.peak_lr = cfg.lr
        self.enc, self.dec, head = tuner._groups()
        pretrained = tuner.meta.get("source_model") != "none"
        backbone = cfg.backbone_lr_scale if pretrained else 1.0
        self.opt = torch.optim.AdamW(
            [
                {"params": self.enc, "scale": 0.0 if cfg.freeze_encoder else backbone},
                {"params": self.dec, "scale": backbone},
                {"params": head, "scale": 1.0},
            ],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        self.weights = torch.from_numpy(tuner.source.class_weights()).to(tuner.device)
        self.pretrained = pretrained
        self.fitted = False
        self.warmup = 0
        self.cancel: threading.Event | None = None
        self.image: np.ndarray | None = None

    def begin(
        self, cancel: threading.Event | None, image: np.ndarray | PreviewWindow | None
    ) -> None:
        """After the head fit: how this run starts (warm-up or not), what it previews."""
        t = self.tuner
        self.fitted = t.head_fit_accuracy is not None
        new_zero_head = t.head_is_new and self.pretrained and not self.fitted
        self.warmup = self.cfg.head_warmup if new_zero_head else 0
        self.cancel, self.image = cancel, image

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def phase(self, step: int) -> str:
        if self.fitted and step == 0:
            return "head fitted"
        return "head warm-up" if step <= self.warmup and self.warmup else "train"

    def train_step(self, step: int) -> StepResult:
        cfg, t = self.cfg, self.tuner
        frozen = step < self.warmup
        for p in self.enc + self.dec:
            p.requires_grad_(not frozen)
        if cfg.freeze_encoder:
            for p in self.enc:
                p.requires_grad_(False)
        x_np, y_np = t.source.sample(cfg.batch_size, self.rng)
        x = torch.from_numpy(x_np).to(t.device)
        y = torch.from_numpy(y_np).to(t.device)
        self.model.train()
        loss = stroke_loss(self.model(x), y, self.weights, cfg.dice_weight)
        ok = guarded_step(loss, self.model, self.opt, cfg.grad_clip)
        t.steps_done += 1
        return StepResult(True, float(loss.detach())) if ok else StepResult(False)

    def validate(self) -> Validation:
        t = self.tuner
        done, t._head_fit_val = t._head_fit_val, None  # the fit's own validation, once
        vloss, dice = done or t.validate()
        known = [d for d in dice if d is not None]
        score = float(np.mean(known)) if known else -vloss
        return Validation(vloss, score, dice=dice)

    def diverged(self, bad: int, step: int) -> Exception:
        return SegmentError(
            f"training diverged ({bad} non-finite steps in a row); kept the best "
            "weights so far; try a lower learning rate"
        )

    def preview(self, ev: TrainEvent) -> SegmentPreview | None:
        if self.image is None or ev.kind != "val" or not ev.improved:
            return None
        try:
            return self.tuner.preview(self.image, self.cancel)
        except Cancelled:
            return None

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def after_run(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(True)


def finetune(
    images: list[Any],
    labels: list[Any],
    class_names: list[str] | tuple[str, ...] = DEFAULT_CLASSES,
    init: Init = "auto",
    config: FinetuneConfig | None = None,
    pixel_sizes: list[float | None] | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Fine-tune to the end (or to ``cancel``), calling ``progress(event)`` for every event."""
    return drain(
        Finetuner(images, labels, class_names, init, config, pixel_sizes).run(cancel=cancel),
        progress,
    )


def save_segmenter(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    overwrite: bool = False,
    rescue: bool = False,
) -> Path:
    """Write a segmenter checkpoint; refuses to replace an existing file unless asked.

    With ``rescue`` (the end of a headless run, where the model would otherwise be lost)
    an unwritable ``path`` saves it elsewhere and says where (``models.save_or_rescue``).
    """
    from napari_temseg.models import save_checkpoint, save_or_rescue

    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or allow overwrite")
    meta = {k: v for k, v in meta.items() if k != "config"}
    if meta.get("task") != "segment":
        raise SegmentError("only a segmenter (task 'segment') can be saved as one")
    return (save_or_rescue if rescue else save_checkpoint)(path, model, meta)
