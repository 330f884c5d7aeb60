"""Quieting the logs of the libraries the readers use, safely across threads.

tifffile and RosettaSciIO log what they could not parse of a real file (a line per tag of a
damaged TIFF, a vendor's quirk) beside the one line our readers give. Their log is
silenced while we read, by a filter on their logger rather than its level: setting and
restoring a level from two threads at once (a dock's worker and the GUI thread) restored
them out of order and left the library silenced, or not, for the rest of the session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_QUIET: dict[str, int] = {}  # logger name -> how many reads are inside quiet_log now


class _WhileQuiet(logging.Filter):
    """Drops a logger's records below ``level`` while a read is inside :func:`quiet_log`."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__()
        self.logger_name, self.level = name, level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not _QUIET.get(self.logger_name)


@contextmanager
def quiet_log(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Within it, logger ``name`` passes only records of ``level`` and above (a filter
    installed once, with the level of the first call)."""
    logger = logging.getLogger(name)
    with _LOCK:
        if not any(isinstance(f, _WhileQuiet) for f in logger.filters):
            logger.addFilter(_WhileQuiet(name, level))
        _QUIET[name] = _QUIET.get(name, 0) + 1
    try:
        yield
    finally:
        with _LOCK:
            _QUIET[name] -= 1
