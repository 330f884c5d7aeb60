"""The one progress event of every training run, and the loop that drains a run.

Denoiser pretraining, Pix2Pix and fine-tuning all run on :mod:`engine.loop` and yield
:class:`TrainEvent`: the CLI's progress bar, the docks, the child-process relay and the
benchmarks read one type. A run is a generator that yields events and *returns* its
result; :func:`drain` is how a blocking call gets that result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

R = TypeVar("R")

#: event kinds: a training step, a validation, a preview of the model
KINDS = ("step", "val", "preview")


@dataclass
class DenoisePreview:
    """A crop of the user's image before and after the denoiser being trained."""

    before: np.ndarray
    after: np.ndarray


@dataclass
class SegmentPreview:
    """The best segmenter so far on the displayed window, with what the checks found."""

    labels: np.ndarray  # class index per pixel (1..K)
    uncertainty: np.ndarray  # 0..100 (uint8), engine.checks.uncertainty
    degenerate: str | None  # a warning when one class covers the whole window
    where: Any = None  # the PreviewWindow's tag of the window it was computed on


class PreviewWindow:
    """The window a training run previews, which the face may move while the run goes on
    (the user shows another frame): ``current`` is ``(image, where)``, replaced whole
    (one assignment: the worker never reads one window's image with another's tag), and
    each preview carries its ``where`` back so it is placed where it was computed."""

    def __init__(self, image: np.ndarray, where: Any = None) -> None:
        self.current: tuple[np.ndarray, Any] = (image, where)


@dataclass
class TrainEvent:
    """One step, validation or preview of a training run (plain and picklable).

    Step numbers count across continued runs: ``first_step`` is where this run started
    (the steps of the model it continues), ``steps`` the step it ends at.
    """

    kind: str  # one of KINDS
    step: int
    steps: int
    first_step: int = 0
    loss: float = math.nan  # smoothed training loss (L1 for Pix2Pix)
    lr: float = math.nan
    examples_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None  # seconds left: the steps to go at this rate, or the budget
    phase: str = "train"  # fine-tuning: "head warm-up", "head fitted"
    skipped_steps: int = 0  # non-finite steps skipped so far
    val_loss: float | None = None
    val_psnr: float | None = None  # denoisers: dB on the normalised validation set
    val_dice: list[float | None] | None = None  # segmenters: per class 1..K
    improved: bool = False  # this validation is the new best
    best_score: float = -math.inf  # higher is better: -loss, or the mean Dice
    best_val_loss: float = math.inf
    best_step: int = 0
    g_loss: float | None = None  # Pix2Pix: generator and discriminator losses
    d_loss: float | None = None
    preview: DenoisePreview | SegmentPreview | None = None

    @property
    def run_step(self) -> int:
        """Steps done in this run."""
        return self.step - self.first_step

    @property
    def fraction(self) -> float:
        """How much of this run is done (0..1): by steps, or by time under a budget."""
        done = self.run_step / max(self.steps - self.first_step, 1)
        if self.eta_s is not None:  # a time budget can end the run before the steps do
            done = max(done, self.elapsed_s / max(self.elapsed_s + self.eta_s, 1e-9))
        return min(max(done, 0.0), 1.0)


def drain(gen: Generator[Any, None, R], progress: Callable[[Any], Any] | None = None) -> R:
    """Exhaust ``gen``, calling ``progress(event)`` for every event; return its result."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(ev)


def format_duration(seconds: float | None) -> str:
    """A time left as a person reads it: "45 s", "2 min 05 s", "1 h 03 min" ("" if unknown).

    One wording for the Train dock's status line and ``temseg finetune``'s progress bar.
    """
    if seconds is None or seconds != seconds:
        return ""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
