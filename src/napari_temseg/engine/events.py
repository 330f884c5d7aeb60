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
