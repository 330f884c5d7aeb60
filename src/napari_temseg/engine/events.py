"""Run an event generator to its end: the one loop behind every blocking training call.

The trainers (``iter_train``, ``iter_pretrain``, ``Finetuner.run``) are generators that
yield progress events and *return* their result, so widgets and scripts can watch the
same events; :func:`drain` is how a blocking call gets that result.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


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
