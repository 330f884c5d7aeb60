"""Run a blocking engine call off the GUI thread, with progress, cancel and clean shutdown.

Engine functions take ``progress=`` (a callable) and ``cancel=`` (a ``threading.Event``);
this helper runs one in napari's thread pool and relays progress to the GUI thread through
a Qt signal (queued across threads), so widgets stay thin and the viewer stays responsive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal


class EngineTask(QObject):
    """One background engine call at a time, owned by a widget."""

    progress = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, owner: QObject | None = None) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._worker = None
        self._orphaned = False
        self._progress_in.connect(self._deliver_progress)
        if owner is not None:
            owner.destroyed.connect(self._on_owner_destroyed)

    def _on_owner_destroyed(self, *_: Any) -> None:
        """The widget is gone (viewer closed): stop the work and report nothing more."""
        self._orphaned = True
        self._cancel.set()

    # The worker thread emits the private signals; Qt queues them to this object's (the GUI)
    # thread, and only there, at delivery time, is it decided whether the widget still
    # exists. Checking at emit time is too early: a progress report emitted just before the
    # viewer closes would otherwise reach widgets that Qt has already deleted.
    _progress_in = Signal(object)

    def _deliver(self, signal: Any) -> Callable[..., None]:
        def deliver(*args: Any) -> None:
            if not self._orphaned:
                signal.emit(*args)

        return deliver

    def _deliver_progress(self, args: Any) -> None:
        if not self._orphaned:
            self.progress.emit(args)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``fn(*args, progress=..., cancel=..., **kwargs)`` in a worker thread."""
        if self._worker is not None:
            raise RuntimeError("a task is already running")
        self._cancel = threading.Event()
        cancel = self._cancel

        def work() -> Any:
            def report(*a: Any) -> None:
                if not self._orphaned:
                    self._progress_in.emit(a)

            return fn(*args, progress=report, cancel=cancel, **kwargs)

        worker = create_worker(work, _ignore_errors=True)
        worker.returned.connect(self._deliver(self.done))
        worker.errored.connect(self._deliver(self.failed))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Ask the running call to stop at its next checkpoint (between tiles or steps)."""
        self._cancel.set()

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Cancel and block until the worker thread ends (used when the viewer closes)."""
        self.cancel()
        worker = self._worker
        if worker is None:
            return True
        from qtpy.QtCore import QThreadPool

        return QThreadPool.globalInstance().waitForDone(int(timeout_s * 1000))

    def _on_finished(self) -> None:
        self._worker = None
        if not self._orphaned:
            self.finished.emit()
