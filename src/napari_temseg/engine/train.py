"""Supervised training of image-to-image networks (the denoisers) on the shared skeleton.

:class:`PixelTraining` is the pixel-loss step and validation that ``engine/loop.py`` drives;
:func:`iter_train` yields its :class:`TrainEvent` so a widget can show live progress from a
worker thread and a script can log it, with the same code. What it guarantees:

- seedable: the same seed, source and config give the same run on the same device;
- a fixed validation set drawn once; the best model by validation loss is kept (and
  written to ``config.checkpoint`` whenever it improves), and is what the run returns;
  with ``average_late`` the mean of the weights validated in the run's last share is kept
  instead (stochastic weight averaging; ``TrainResult.averaged_from`` says from which step);
- NaN guard: a step whose loss or gradients are not finite is skipped; if the weights
  themselves go bad they are restored from the last good copy and the learning rate is
  halved; too many bad steps in a row stop the run with :class:`TrainingDiverged`,
  leaving the best weights in the model;
- cancellable between steps through a ``threading.Event``: the run stops early and keeps
  the best weights (nothing is lost), ``TrainResult.stopped`` says so;
- resumable: ``checkpoint_every`` writes the training state to ``state_path``, and a run
  with ``resume`` set to that file continues exactly where it was.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_temseg.engine.data import PatchSource
from napari_temseg.engine.device import bf16_is_native, select_device
from napari_temseg.engine.events import DenoisePreview, TrainEvent, drain
from napari_temseg.engine.loop import (
    LoopConfig,
    Method,
    Outcome,
    StepResult,
    TrainingLoop,
    Validation,
    WarmupCosine,
)
from napari_temseg.engine.losses import (
    PIXEL_LOSSES,
    check_terms,
    patch_errors,
    pixel_loss,
    restoration_loss,
    weighted_error,
)
from napari_temseg.models.checkpoint import save_checkpoint

LOSSES = PIXEL_LOSSES


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the model holds the best weights found."""


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    loss: str = "l1"
    # extra loss terms and their weights (engine/losses.py); validation stays the pixel loss
    terms: dict[str, float] = field(default_factory=dict)
    grad_clip: float = 1.0
    val_every: int = 100
    val_size: int = 32
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    prefetch: int | None = None  # batches made ahead in a thread; None: 2 on GPU, 0 on CPU
    max_bad_steps: int = 20
    max_seconds: float | None = None  # a time budget: stop then; the schedule follows it too
    # keep the mean of the weights validated in this last share of the run (0: the best);
    # a long run at a constant rate wanders around its optimum, and the mean sits nearer it
    average_late: float = 0.0
    checkpoint: str | None = None  # the best model, written at every new best
    checkpoint_every: int = 0  # write the resumable training state every N steps; 0: never
    state_path: str | None = None  # where that state goes
    resume: str | None = None  # continue from this training state (engine/loop.py)
    task: str = "denoise"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {LOSSES}")
        self.terms = check_terms(self.terms)
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1 or self.val_size < 1:
            raise ValueError("steps, batch_size, val_every and val_size must all be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if not 0 <= self.average_late <= 1:
            raise ValueError(f"average_late must be in [0, 1], got {self.average_late}")


@dataclass
class TrainResult:
    """The end of a run: ``steps_done`` in this run, ``best_step`` counted like the events
    (from ``first_step``), ``model`` holding the best weights."""

    model: nn.Module
    steps_done: int
    best_step: int
    best_val_loss: float
    best_val_psnr: float
    elapsed_s: float
    examples_per_s: float
    skipped_steps: int
    stopped: bool
    history: list[TrainEvent]
    averaged_from: int | None = None  # the model averages the weights of steps from here on


class _Prefetcher:
    """Makes batches in a background thread (one producer, so the order stays seeded)."""

    def __init__(self, source: PatchSource, batch: int, rng: np.random.Generator, depth: int):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source, self._batch, self._rng = source, batch, rng
        self._thread = None
        if depth > 0:  # depth 0: make batches in the training thread
            self._thread = threading.Thread(target=self._run, daemon=True, name="temseg-prefetch")
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._source.sample(self._batch, self._rng)
            except Exception as exc:  # hand the error to the training thread
                item = exc
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._thread is None:
            return self._source.sample(self._batch, self._rng)
        item = self._q.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def evaluate(
    model: nn.Module, val: tuple[np.ndarray, np.ndarray], loss: str, device: torch.device
) -> tuple[float, float]:
    """(loss, PSNR in dB of the normalised images with peak 1) on a validation set."""
    model.eval()
    x_all, y_all = val
    losses, errors = [], []
    for i in range(0, len(x_all), 16):
        x = torch.from_numpy(x_all[i : i + 16]).to(device)
        y = torch.from_numpy(y_all[i : i + 16]).to(device)
        pred = model(x).float()
        errors.append(patch_errors(pred, y).cpu())
        if loss != "l2db":  # its weights span the batch: taken over the whole set below
            losses.append(float(pixel_loss(pred, y, loss)) * len(x))
    err = torch.cat(errors)
    mse = float(err.mean())  # patches of one size: the set's mean squared error
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else math.inf
    value = float(weighted_error(err)) if loss == "l2db" else sum(losses) / len(x_all)
    return value, psnr


class PixelTraining(Method):
    """Supervised image-to-image training with a pixel loss (the denoisers' method).

    NaN guard beyond the skeleton's: when a step leaves the weights themselves non-finite
    they are restored from the last good copy (taken every 10 good steps) and the learning
    rate is halved.
    """

    def __init__(
        self,
        model: nn.Module,
        source: PatchSource,
        cfg: TrainConfig,
        val: tuple[np.ndarray, np.ndarray],
        dev: torch.device,
        first_step: int,
    ) -> None:
        self.model, self.source, self.cfg, self.val, self.dev = model, source, cfg, val, dev
        self.first_step = first_step
        self.peak_lr = cfg.lr
        # channels-last convolutions are ~15 % faster on CPUs (oneDNN); results are the same
        self.fmt = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
        model.to(dev, memory_format=self.fmt)
        self.opt = self._optimizer()
        # bf16 autocast on a GPU, and on a CPU that computes bf16 natively (1.7-2.3x faster
        # training there, benchmarks/bench_cpu_modes.py); float32 elsewhere
        self.amp_dtype = torch.bfloat16 if (cfg.amp and bf16_is_native(dev)) else None
        self.rng = np.random.default_rng([cfg.seed, 0])
        # on a small CPU a producer thread only fights the training threads for cores
        depth = cfg.prefetch if cfg.prefetch is not None else (2 if dev.type != "cpu" else 0)
        self.depth = depth
        self.feeder: _Prefetcher | None = None
        self.last_good = copy.deepcopy(model.state_dict())

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def start(self) -> None:
        """Start drawing batches (after a resume has put the random generator back)."""
        self.feeder = _Prefetcher(self.source, self.cfg.batch_size, self.rng, self.depth)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def train_step(self, step: int) -> StepResult:
        cfg, model, dev, fmt = self.cfg, self.model, self.dev, self.fmt
        assert self.feeder is not None
        x_np, y_np = self.feeder.get()
        x = torch.from_numpy(x_np).to(dev, non_blocking=True, memory_format=fmt)
        y = torch.from_numpy(y_np).to(dev, non_blocking=True, memory_format=fmt)
        model.train()
        amp = self.amp_dtype
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = model(x)
        loss = restoration_loss(pred.float(), y, cfg.loss, cfg.terms)
        ok = guarded_step(loss, model, self.opt, cfg.grad_clip)
        if ok and not _finite_params(model):  # the step broke the weights: go back, calm down
            model.load_state_dict(self.last_good)
            self.opt = self._optimizer()
            self.lr_scale *= 0.5
            for g in self.opt.param_groups:
                g["scale"] = self.lr_scale
            return StepResult(False)
        if not ok:
            return StepResult(False)
        if (step + 1) % 10 == 0:
            self.last_good = copy.deepcopy(model.state_dict())
        return StepResult(True, float(loss.detach()))

    def validate(self) -> Validation:
        vloss, vpsnr = evaluate(self.model, self.val, self.cfg.loss, self.dev)
        return Validation(vloss, -vloss, psnr=vpsnr)

    def on_improved(self, step: int, v: Validation) -> None:
        if self.cfg.checkpoint:
            _save(self.cfg, self.model, self.source, step - self.first_step, v.loss, v.psnr)

    def on_diverged(self) -> None:
        self.model.load_state_dict(self.last_good)

    def diverged(self, bad: int, step: int) -> Exception:
        return TrainingDiverged(
            f"{bad} non-finite training steps in a row at step {step}; "
            "kept the best weights so far (try a lower learning rate)"
        )

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "last_good": self.last_good}

    def settings(self) -> dict[str, Any]:
        return resume_settings(self.cfg, self.source)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.last_good = state["last_good"]
        for g in self.opt.param_groups:
            g["scale"] = self.lr_scale

    def after_run(self) -> None:
        if self.feeder is not None:
            self.feeder.close()


def loop_config(cfg: TrainConfig, preview_every_s: float | None = None) -> LoopConfig:
    """The skeleton's settings of a :class:`TrainConfig`."""
    return LoopConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        val_every=cfg.val_every,
        max_seconds=cfg.max_seconds,
        max_bad_steps=cfg.max_bad_steps,
        preview_every_s=preview_every_s,
        checkpoint_every=cfg.checkpoint_every,
        state_path=cfg.state_path,
        resume=cfg.resume,
        average_from=1 - cfg.average_late if cfg.average_late > 0 else None,
    )


def result_of(out: Outcome, model: nn.Module, batch_size: int) -> TrainResult:
    """A :class:`TrainResult` from the skeleton's outcome."""
    best = out.best
    return TrainResult(
        model=model,
        steps_done=out.steps_done,
        best_step=best.step,
        best_val_loss=best.loss,
        best_val_psnr=best.validation.psnr if best.validation else -math.inf,
        elapsed_s=out.elapsed_s,
        examples_per_s=out.steps_done * batch_size / out.elapsed_s if out.elapsed_s > 0 else 0.0,
        skipped_steps=out.skipped,
        stopped=out.stopped,
        history=out.history,
        averaged_from=best.averaged_from,
    )


def iter_train(
    model: nn.Module,
    source: PatchSource,
    config: TrainConfig,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    cancel: threading.Event | None = None,
    *,
    first_step: int = 0,
    preview: Callable[[nn.Module], DenoisePreview] | None = None,
    preview_every_s: float | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``model`` on ``source``; yields an event per step and per validation.

    ``first_step``: the steps the model had before (events count on from it).
    ``preview(model)``: a before/after crop, yielded every ``preview_every_s`` (None: never).
    The generator's return value (``StopIteration.value``) is the :class:`TrainResult`;
    :func:`train` wraps this for callers that want a plain function.
    """
    cfg = config
    dev = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if val is None:
        val = source.sample(cfg.val_size, np.random.default_rng([cfg.seed, 1]))
    method = PixelTraining(model, source, cfg, val, dev, first_step)
    if preview is not None:
        method.preview = lambda ev: preview(model)  # type: ignore[method-assign]
    schedule = WarmupCosine(cfg.warmup, cfg.steps, 0.05, cfg.max_seconds)
    loop = TrainingLoop(
        method, loop_config(cfg, preview_every_s), schedule, first_step=first_step, cancel=cancel
    )
    method.start()
    out = yield from loop.run()
    return result_of(out, model, cfg.batch_size)


def train(
    model: nn.Module,
    source: PatchSource,
    config: TrainConfig,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Run :func:`iter_train` to the end, calling ``progress(event)`` for every event."""
    return drain(iter_train(model, source, config, val=val, cancel=cancel), progress)


def guarded_step(
    loss: torch.Tensor, model: nn.Module, opt: torch.optim.Optimizer, grad_clip: float
) -> bool:
    """Backward, clip and step, but only while the loss and the gradient norm are finite.

    Returns whether the step was taken; a False leaves the weights untouched (the callers
    count such steps and stop after too many in a row).
    """
    if not bool(torch.isfinite(loss)):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not bool(torch.isfinite(gnorm)):
        return False
    opt.step()
    return True


#: TrainConfig fields that are not training settings (kept out of checkpoint metadata)
NOT_SETTINGS = ("meta", "checkpoint", "checkpoint_every", "state_path", "resume")
#: settings a resumed run may change: how long it runs and on what, not what it learns
RUN_SETTINGS = ("steps", "max_seconds", "device", "amp", "prefetch", "max_bad_steps", "val_every")


def settings_of(cfg: TrainConfig) -> dict[str, Any]:
    """The training settings recorded in a checkpoint's metadata."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_SETTINGS}


def resume_settings(cfg: TrainConfig, source: PatchSource) -> dict[str, Any]:
    """What a resumed denoiser training must share with the run it continues: every
    setting of what it learns (loss, rate, batch, seed, ...) and its data's description."""
    learned = {k: v for k, v in settings_of(cfg).items() if k not in RUN_SETTINGS}
    return {**learned, "data": source.describe()}


def _save(
    cfg: TrainConfig, model: nn.Module, source: PatchSource, step: int, vloss: float, vpsnr: float
) -> None:
    train_cfg = settings_of(cfg)
    meta = {
        "task": cfg.task,
        "normalization": source.normalization.to_dict(),
        "training_data": source.describe(),
        "training": {**train_cfg, "best_step": step, "val_loss": vloss, "val_psnr_db": vpsnr},
        **cfg.meta,
    }
    try:
        save_checkpoint(Path(cfg.checkpoint), model, meta)
    except OSError:  # a save at a new best is a convenience: the run's own end saves (or
        pass  # rescues) the best model and says so; training must not die of it here
