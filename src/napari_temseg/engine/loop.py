"""The one training skeleton behind denoiser pretraining, Pix2Pix and fine-tuning.

Each method plugs in its own step (loss, backward, its optimisers) and its own validation
(:class:`Method`); everything around them is written once here:

- the learning-rate schedule (:class:`WarmupCosine`, or the method's own), set on every
  optimiser group as ``schedule.lr(step, elapsed, group["peak"]) * group["scale"]``, and
  following a time budget (``max_seconds``) as well as the steps;
- the NaN guard: a step the method reports as not finite is skipped and counted; more than
  ``max_bad_steps`` in a row stop the run with the method's own error, best weights kept;
- periodic validation (every ``val_every`` steps, once early at ``first_val``, once when a
  run stops between validations) and keep-best by a score (higher is better; ties go to
  the lower loss), with early stopping after ``patience`` validations without a new best;
- or, from ``average_from`` of the run on, the kept model is the running mean of the
  weights at each validation (stochastic weight averaging): where the validation set is a
  weak judge of the data the model is for, an average of the late weights beats any one
  snapshot it would pick (fine-tuning on strokes, docs/benchmarks.md);
- cancel between steps, and previews produced by the method every ``preview_every_s``;
- a resumable training state (step, optimisers, schedule clock, best, loss average, random
  generators) written every ``checkpoint_every`` steps and when the run ends early or off a
  multiple of N (before its closing validation), and read back with ``resume``, so a
  long run continues across processes exactly where it was (exactly: when the batches are
  drawn in the training thread, as on CPUs; a prefetch thread runs ahead of the state).

It yields :class:`~napari_temseg.engine.events.TrainEvent` and returns a :class:`Outcome`
that each method turns into its own result.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import monotonic  # previews' wall clock (not the budget's, which tests fake)
from typing import Any, Protocol

import torch
from torch import nn

from napari_temseg.engine.events import DenoisePreview, SegmentPreview, TrainEvent

STATE_VERSION = 1


def now() -> float:
    """The loop's clock (one place, so tests can run budgets on a fake clock)."""
    return time.perf_counter()


class Schedule(Protocol):
    def lr(self, step: int, elapsed_s: float, peak: float) -> float:
        """The learning rate at ``step`` of the run, ``elapsed_s`` into it, for ``peak``."""
        ...


@dataclass
class WarmupCosine:
    """Linear warm-up, then cosine decay to ``floor`` of the peak over the steps or over
    the time budget (``max_seconds``), whichever runs out first."""

    warmup: int
    steps: int
    floor: float = 0.05
    max_seconds: float | None = None

    def lr(self, step: int, elapsed_s: float, peak: float) -> float:
        if step < self.warmup:
            return peak * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.max_seconds:
            t = max(t, elapsed_s / self.max_seconds)
        cos = 1 + math.cos(math.pi * min(t, 1.0))
        return peak * (self.floor + (1 - self.floor) * 0.5 * cos)


@dataclass
class LoopConfig:
    """How the skeleton drives a method (the methods' own configs map onto this)."""

    steps: int  # steps of this run
    batch_size: int  # for the examples/s figure
    val_every: int
    first_val: int = 0  # one early validation at this step of the run (0: none)
    validate_first: bool = False  # validate before the first step (the model to beat)
    max_seconds: float | None = None  # time budget; the run stops after one step past it
    max_bad_steps: int = 20
    patience: int = 0  # validations without a new best before stopping; 0: never
    patience_after: int = 0  # early stopping only from this step of the run on
    ema_weight: float = 0.05  # weight of the newest step in the smoothed loss
    preview_every_s: float | None = None  # None: no previews; 0: after every event
    # from this share of the run on (by steps, or by time under a budget) keep the running
    # mean of the weights at each validation instead of the best validated; None: never
    average_from: float | None = None
    checkpoint_every: int = 0  # write the training state every N steps; 0: never
    state_path: str | None = None  # where (needed with checkpoint_every)
    resume: str | None = None  # continue from this training state

    def __post_init__(self) -> None:
        if self.checkpoint_every and not self.state_path:
            raise ValueError("checkpoint_every needs a state_path to write the state to")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.average_from is not None and not 0 <= self.average_from <= 1:
            raise ValueError(f"average_from must be in [0, 1], got {self.average_from}")


@dataclass
class Validation:
    """One validation: ``score`` is what keep-best maximises (``-loss`` for denoisers)."""

    loss: float
    score: float
    psnr: float | None = None
    dice: list[float | None] | None = None


@dataclass
class StepResult:
    """What one training step reports: ``ok`` False for a non-finite step (skipped)."""

    ok: bool
    loss: float = math.nan
    extras: dict[str, float] = field(default_factory=dict)  # smoothed too: g_loss, d_loss


@dataclass
class Best:
    """The best model so far; it may outlive one run (fine-tuning continues a tuner)."""

    score: float = -math.inf
    loss: float = math.inf
    step: int = 0
    state: dict[str, Any] | None = None  # a state_dict copy; None: nothing kept yet
    validation: Validation | None = None
    averaged_from: int | None = None  # the state is the mean of the weights from this step on

    def beaten_by(self, v: Validation) -> bool:
        return v.score > self.score + 1e-9 or (
            abs(v.score - self.score) <= 1e-9 and v.loss < self.loss
        )


class ResumeRefused(ValueError):
    """A training state that this run cannot continue (another version, other settings)."""


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON reads them back (tuples become lists, odd values strings)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _check_same_settings(path: str | Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in differ)
        raise ResumeRefused(
            f"{Path(path).name} was written by a run with other settings ({shown}): resume "
            "with that run's settings, or start a new run without resuming"
        )


class Method:
    """What a training method plugs into :class:`TrainingLoop` (override the hooks)."""

    model: nn.Module  # the network whose best weights are kept
    peak_lr: float  # the learning rate events report (at the schedule's peak)
    lr_scale: float = 1.0  # a method may calm itself down after a bad step

    def optimizers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, step: int) -> StepResult:
        """One step (``step``: index in the run's schedule); the rates are already set."""
        raise NotImplementedError

    def validate(self) -> Validation:
        raise NotImplementedError

    def phase(self, step: int) -> str:
        return "train"

    def on_improved(self, step: int, v: Validation) -> None:
        """A new best (e.g. write the model checkpoint)."""

    def on_diverged(self) -> None:
        """Too many bad steps and no best yet: leave the model in a sane state."""

    def diverged(self, bad: int, step: int) -> Exception:
        return RuntimeError(f"{bad} non-finite training steps in a row at step {step}")

    def preview(self, ev: TrainEvent) -> DenoisePreview | SegmentPreview | None:
        """A preview after ``ev``, or None (nothing worth showing now)."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        """Networks whose weights the training state holds."""
        return {"model": self.model}

    def extra_state(self) -> dict[str, Any]:
        """What else a resumed run needs (random generators, ...); plain values only."""
        return {}

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (its objective, its
        data), as JSON-able values: a resume under other settings is refused, because its
        result would be a mix that no recorded command makes."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def after_run(self) -> None:
        """Undo per-run settings (e.g. frozen layers)."""


@dataclass
class Outcome:
    """How a run ended; each method turns it into its own result."""

    step: int
    first_step: int
    best: Best
    history: list[TrainEvent]
    elapsed_s: float
    skipped: int
    stopped: bool = False
    early_stopped: bool = False
    timed_out: bool = False

    @property
    def steps_done(self) -> int:
        return self.step - self.first_step


class TrainingLoop:
    """Drive ``method`` for ``config.steps`` steps; :meth:`run` yields the events."""

    def __init__(
        self,
        method: Method,
        config: LoopConfig,
        schedule: Schedule,
        *,
        first_step: int = 0,
        best: Best | None = None,
        cancel: threading.Event | None = None,
        started: float | None = None,
    ) -> None:
        self.method, self.cfg, self.schedule = method, config, schedule
        self.cancel = cancel
        self.best = best if best is not None else Best()
        self.first = self.step = first_step
        self.i = 0  # steps done in this run (the schedule's position)
        self.loss_ema = math.nan
        self.extras: dict[str, float] = {}
        self.skipped = self.bad = self.since_best = 0
        self.history: list[TrainEvent] = []
        self.elapsed_before = 0.0  # of the runs this one resumes
        self._started = started  # the time budget's clock (may start before the loop)
        self._t0 = self._budget0 = 0.0
        self._last_preview = -math.inf
        self.average: dict[str, torch.Tensor] | None = None  # weight average (average_from)
        self.averaged = 0  # validations folded into it
        self.average_from_step = self.step  # the first of them
        if config.resume:
            self.load_state(config.resume)

    # ------------------------------------------------------------------ clocks

    def elapsed(self) -> float:
        return self.elapsed_before + now() - self._t0

    def budget_spent(self) -> float:
        return self.elapsed_before + now() - self._budget0

    def eta(self, elapsed: float) -> float | None:
        """Seconds left: the steps to go at this run's rate, capped by the budget."""
        budget = self.cfg.max_seconds
        if self.i == 0:
            return None if not budget else max(budget - self.budget_spent(), 0.0)
        left = elapsed / self.i * (self.cfg.steps - self.i)
        if budget:
            left = min(left, max(budget - self.budget_spent(), 0.0))
        return left

    # ------------------------------------------------------------------ events

    def event(self, kind: str, **kw: Any) -> TrainEvent:
        el = self.elapsed()
        m = self.method
        return TrainEvent(
            kind=kind,
            step=self.step,
            steps=self.first + self.cfg.steps,
            first_step=self.first,
            loss=self.loss_ema,
            lr=self.schedule.lr(max(self.i - 1, 0), self.budget_spent(), m.peak_lr) * m.lr_scale,
            examples_per_s=self.i * self.cfg.batch_size / el if el > 0 else 0.0,
            elapsed_s=el,
            eta_s=self.eta(el),
            phase=m.phase(self.i),
            skipped_steps=self.skipped,
            best_score=self.best.score,
            best_val_loss=self.best.loss,
            best_step=self.best.step,
            g_loss=self.extras.get("g_loss"),
            d_loss=self.extras.get("d_loss"),
            **kw,
        )

    def _emit(self, ev: TrainEvent) -> Generator[TrainEvent, None, None]:
        """Yield ``ev``, then a preview when one is due and the method has one."""
        yield ev
        every = self.cfg.preview_every_s
        t = monotonic()
        if every is not None and (t - self._last_preview >= every or ev.step == ev.steps):
            shown = self.method.preview(ev)
            if shown is not None:
                self._last_preview = t
                yield TrainEvent("preview", ev.step, ev.steps, ev.first_step, preview=shown)

    def progress(self) -> float:
        """How far into the run (0..1): by steps, or by time under a budget."""
        done = self.i / max(self.cfg.steps, 1)
        if self.cfg.max_seconds:
            done = max(done, self.budget_spent() / self.cfg.max_seconds)
        return min(done, 1.0)

    def _averaging(self) -> bool:
        start = self.cfg.average_from
        return start is not None and self.i > 0 and self.progress() >= start

    def _keep(self, v: Validation, state: dict[str, Any], averaged_from: int | None) -> None:
        self.best.score, self.best.loss, self.best.step = v.score, v.loss, self.step
        self.best.state, self.best.validation = state, v
        self.best.averaged_from = averaged_from
        self.since_best = 0
        self.method.on_improved(self.step, v)

    def _fold_average(self) -> Validation:
        """Fold the current weights into the running mean, validate the mean and keep it
        (the method's ``on_improved`` sees the mean in the model); training goes on from
        the current weights."""
        model = self.method.model
        current = copy.deepcopy(model.state_dict())
        self.averaged += 1
        if self.average is None:
            self.average, self.average_from_step = copy.deepcopy(current), self.step
        else:
            for k, mean in self.average.items():
                if mean.is_floating_point():
                    mean += (current[k] - mean) / self.averaged
        model.load_state_dict(self.average)
        try:
            v = self.method.validate()
            self._keep(v, copy.deepcopy(self.average), self.average_from_step)
        finally:
            model.load_state_dict(current)
        return v

    def validate(self) -> TrainEvent:
        if self._averaging():
            v, better = self._fold_average(), True
        else:
            v = self.method.validate()
            better = self.best.beaten_by(v)
            if better:
                self._keep(v, copy.deepcopy(self.method.model.state_dict()), None)
            else:
                self.since_best += 1
        ev = self.event("val", val_loss=v.loss, val_psnr=v.psnr, val_dice=v.dice, improved=better)
        self.history.append(ev)
        return ev

    # ------------------------------------------------------------------ the loop

    def _set_lr(self) -> None:
        elapsed = self.budget_spent()
        for opt in self.method.optimizers():
            for g in opt.param_groups:
                peak = g.setdefault("peak", g["lr"])
                g["lr"] = self.schedule.lr(self.i, elapsed, peak) * g.get("scale", 1.0)

    def _record(self, r: StepResult) -> None:
        if r.ok:
            self.bad = 0
            w = self.cfg.ema_weight
            ema = self.loss_ema
            self.loss_ema = r.loss if math.isnan(ema) else (1 - w) * ema + w * r.loss
            for name, value in r.extras.items():
                old = self.extras.get(name)
                self.extras[name] = value if old is None else (1 - w) * old + w * value
            return
        for opt in self.method.optimizers():
            opt.zero_grad(set_to_none=True)
        self.skipped += 1
        self.bad += 1
        if self.bad > self.cfg.max_bad_steps:
            if self.best.state is not None:
                self.method.model.load_state_dict(self.best.state)
            else:
                self.method.on_diverged()
            raise self.method.diverged(self.bad, self.step)

    def _val_due(self) -> bool:
        i, cfg = self.i, self.cfg
        return i == min(cfg.first_val, cfg.steps) or i % cfg.val_every == 0 or i == cfg.steps

    def run(self) -> Generator[TrainEvent, None, Outcome]:
        cfg, method = self.cfg, self.method
        self._t0 = now()
        self._budget0 = self._started if self._started is not None else self._t0
        stopped = early = timed_out = False
        try:
            if cfg.validate_first and self.i == 0 and self.best.score == -math.inf:
                yield from self._emit(self.validate())
            while self.i < cfg.steps:
                if self.cancel is not None and self.cancel.is_set():
                    stopped = True
                    break
                if cfg.max_seconds and self.i > 0 and self.budget_spent() >= cfg.max_seconds:
                    timed_out = True
                    break
                self._set_lr()
                result = method.train_step(self.i)
                self.i += 1
                self.step += 1
                self._record(result)
                yield from self._emit(self.event("step"))
                if self._val_due():
                    yield from self._emit(self.validate())
                    if cfg.patience and self.since_best >= cfg.patience:
                        if self.i >= cfg.patience_after:
                            early = True
                            break
                if cfg.checkpoint_every and self.i % cfg.checkpoint_every == 0:
                    self.save_state(cfg.state_path)
            if cfg.checkpoint_every and self.i % cfg.checkpoint_every:
                self.save_state(cfg.state_path)  # stopped or out of time: continue from here
        finally:
            method.after_run()
        if self.i > 0 and (not self.history or self.history[-1].step != self.step):
            yield from self._emit(self.validate())
        if self.best.state is not None:
            method.model.load_state_dict(self.best.state)
        return Outcome(
            step=self.step,
            first_step=self.first,
            best=self.best,
            history=self.history,
            elapsed_s=self.elapsed(),
            skipped=self.skipped,
            stopped=stopped,
            early_stopped=early,
            timed_out=timed_out,
        )

    # ------------------------------------------------------------------ resumable state

    def save_state(self, path: str | Path) -> Path:
        """Write everything a later run needs to continue this one exactly."""
        m = self.method
        best = self.best
        state = {
            "version": STATE_VERSION,
            "first": self.first,
            "step": self.step,
            "i": self.i,
            "elapsed_s": self.elapsed(),
            "loss_ema": self.loss_ema,
            "extras": dict(self.extras),
            "counters": [self.skipped, self.bad, self.since_best],
            "lr_scale": m.lr_scale,
            "modules": {k: mod.state_dict() for k, mod in m.modules().items()},
            "optimizers": [opt.state_dict() for opt in m.optimizers()],
            "best": {
                "score": best.score,
                "loss": best.loss,
                "step": best.step,
                "state": best.state,
                "validation": asdict(best.validation) if best.validation else None,
                "averaged_from": best.averaged_from,
            },
            "average": {"n": self.averaged, "state": self.average, "from": self.average_from_step},
            "torch_rng": torch.get_rng_state(),
            "method": m.extra_state(),
            "settings": json.dumps(_plain(m.settings()), sort_keys=True),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a run killed mid-write leaves the previous state intact
        return path

    def load_state(self, path: str | Path) -> None:
        """Continue from :meth:`save_state`'s file (the method is set up the same way)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise ResumeRefused(f"{path}: not a training state this version can resume")
        m = self.method
        if "settings" in state:  # states written before settings were recorded: trusted
            _check_same_settings(path, json.loads(state["settings"]), _plain(m.settings()))
        for name, mod in m.modules().items():
            mod.load_state_dict(state["modules"][name])
        m.lr_scale = state["lr_scale"]
        for opt, saved in zip(m.optimizers(), state["optimizers"], strict=True):
            opt.load_state_dict(saved)
        self.first, self.step, self.i = state["first"], state["step"], state["i"]
        self.elapsed_before = float(state["elapsed_s"])
        self.loss_ema = float(state["loss_ema"])
        self.extras = dict(state["extras"])
        self.skipped, self.bad, self.since_best = state["counters"]
        b = state["best"]
        v = b["validation"]
        self.best = Best(
            b["score"],
            b["loss"],
            b["step"],
            b["state"],
            Validation(**v) if v else None,
            b.get("averaged_from"),
        )
        average = state.get("average") or {}
        self.averaged, self.average = int(average.get("n", 0)), average.get("state")
        self.average_from_step = int(average.get("from", self.step))
        torch.set_rng_state(state["torch_rng"])
        m.load_extra_state(state["method"])
