"""One way to run a dock's work in the background: :class:`Runner`.

Every dock's job goes through it, in a worker thread or in a child process
(``engine/process.py``), chosen per job:

* :meth:`Runner.start` runs a blocking call ``fn(*args, progress=, cancel=)`` (denoise,
  segment/apply, measure, fine-tuning's job body) and relays its progress calls;
* :meth:`Runner.start_events` runs an engine event generator ``job(*args, cancel=)``
  (pretraining), drained once by ``engine.events.drain``, and relays every event;

each in napari's thread pool, or with ``process=True`` in a child process
(``engine.process.JobProcess``, its queue polled from a Qt timer).

Whatever the mode, the dock sees the same signals on the GUI thread: ``progress(args)``
(a tuple: the progress call's arguments, or ``(event,)``), ``done(result)``,
``failed(exc)``, ``cancelled()``, ``killed()`` and ``finished()``. The runner is bound to
an owner widget: when the dock or the viewer closes, the job is stopped and no signal is
emitted any more, so the dock's callbacks never need to ask whether it still exists.
A failure is reported once, as a one-line napari notification, by the runner.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal

from napari_temseg.engine.events import drain
from napari_temseg.engine.process import JobProcess

#: how often a child process's queue is read on the GUI thread
POLL_INTERVAL_MS = 100


class JobFailed(RuntimeError):
    """A child-process job's error, as the text the child sent."""


def one_line(exc: BaseException | str) -> str:
    """The first line of an error's text (tracebacks stay out of notifications)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _with_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[..., Any]:
    """``fn`` with ``kwargs`` bound, still picklable for a child process."""
    return functools.partial(fn, **kwargs) if kwargs else fn


class Runner(QObject):
    """One background job at a time for an owner widget; see the module docstring."""

    progress = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    killed = Signal()  # a child that ignored Stop for ``stop_timeout_s`` was terminated
    finished = Signal()

    # The worker thread emits this private signal; Qt queues it to the runner's (the GUI)
    # thread, and only there, at delivery time, is it decided whether the owner still
    # exists. Checking at emit time is too early: a report emitted just before the viewer
    # closes would otherwise reach widgets that Qt has already deleted.
    _progress_in = Signal(object)

    def __init__(self, owner: QObject, what: str, stop_timeout_s: float = 20.0) -> None:
        """``what`` names the job in notifications ("Denoising" -> "Denoising failed: …")."""
        super().__init__()
        self.what = what
        self.stop_timeout_s = stop_timeout_s
        self._cancel = threading.Event()
        self._worker: Any = None
        self._process: JobProcess | None = None
        self._orphaned = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(self._kill)
        self._progress_in.connect(self._relay)
        owner.destroyed.connect(self._on_owner_destroyed)

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._worker is not None or self._process is not None

    @property
    def process(self) -> JobProcess | None:
        """The running child process, when the job runs in one."""
        return self._process

    # ------------------------------------------------------------------ starting

    def start(
        self,
        fn: Callable[..., Any],
        *args: Any,
        process: bool = False,
        threads: int = 2,
        **kwargs: Any,
    ) -> None:
        """Call ``fn(*args, progress=..., cancel=..., **kwargs)``; relay each progress call.

        ``process=True`` runs it in a child process (``fn`` and the arguments must
        pickle; ``threads`` is the child's torch thread count), else in a worker thread.
        """
        self._check_idle()
        if process:
            self._start_process(
                JobProcess(
                    _with_kwargs(fn, kwargs),
                    *args,
                    calls=True,
                    threads=threads,
                    name=f"temseg-{self.what}",
                )
            )
            return

        def work(cancel: threading.Event) -> Any:
            return fn(*args, progress=self._report, cancel=cancel, **kwargs)

        self._start_thread(work)

    def start_events(
        self, job: Callable[..., Any], *args: Any, process: bool = False, threads: int = 2
    ) -> None:
        """Run the event generator ``job(*args, cancel=...)``; relay each event it yields.

        ``process=True`` runs it in a child process (``job`` and ``args`` must pickle;
        ``threads`` is the child's torch thread count), else in a worker thread.
        """
        self._check_idle()
        if process:
            self._start_process(JobProcess(job, *args, threads=threads, name=f"temseg-{self.what}"))
            return

        def work(cancel: threading.Event) -> Any:
            return drain(job(*args, cancel=cancel), self._report)

        self._start_thread(work)

    def _start_process(self, proc: JobProcess) -> None:
        self._cancel = threading.Event()
        self._process = proc
        proc.start()
        self._timer.start()

    def _check_idle(self) -> None:
        if self.running:
            raise RuntimeError("a job is already running")

    def _start_thread(self, work: Callable[[threading.Event], Any]) -> None:
        self._cancel = cancel = threading.Event()
        worker = create_worker(work, cancel, _ignore_errors=True)
        worker.returned.connect(self._delivered(self.done.emit))
        worker.errored.connect(self._delivered(self._on_error))
        worker.finished.connect(self._on_thread_finished)
        self._worker = worker
        worker.start()

    # ------------------------------------------------------------------ stopping

    def cancel(self) -> None:
        """Ask the job to stop at its next checkpoint (between tiles or steps).

        A child process gets ``stop_timeout_s`` to end gracefully (a trainer writes its
        best checkpoint); then it is terminated and ``killed`` is emitted.
        """
        self._cancel.set()
        if self._process is not None and not self._deadline.isActive():
            self._process.stop()
            self._deadline.start(int(self.stop_timeout_s * 1000))

    def _kill(self) -> None:
        proc = self._process
        if proc is None or not proc.is_alive():
            return
        proc.terminate()
        self._relay_messages(proc, killed=True)
        if proc.result is None and not self._orphaned:
            self.killed.emit()
        self._end_process()

    def _on_owner_destroyed(self, *_: Any) -> None:
        """The dock is gone (closed, or the viewer closed): stop, and report nothing more."""
        self._orphaned = True
        self._cancel.set()
        self._timer.stop()
        self._deadline.stop()
        if self._process is not None:
            self._process.terminate()
            self._process = None

    # ------------------------------------------------------------------ relaying (GUI thread)

    def _report(self, *args: Any) -> None:
        """The job's progress callback (any thread): queue ``args`` to the GUI thread."""
        if not self._orphaned:
            self._progress_in.emit(args)

    def _relay(self, args: Any) -> None:
        if not self._orphaned:
            self.progress.emit(args)

    def _delivered(self, emit: Callable[..., None]) -> Callable[..., None]:
        def deliver(*args: Any) -> None:
            if not self._orphaned:
                emit(*args)

        return deliver

    def _on_error(self, exc: BaseException) -> None:
        from napari_temseg.engine.tiling import Cancelled

        if isinstance(exc, Cancelled):
            self.cancelled.emit()
            return
        show_error(f"{self.what} failed: {one_line(exc)}")
        self.failed.emit(exc)

    def _on_thread_finished(self) -> None:
        self._worker = None
        if not self._orphaned:
            self.finished.emit()

    def _poll(self) -> None:
        proc = self._process
        if proc is None:
            return
        try:
            self._relay_messages(proc)
        except Exception as exc:  # a message that cannot be read: the job is lost
            proc.terminate()
            self._on_error(JobFailed(f"lost contact with the job's process ({exc!r})"))
            self._end_process()
            return
        if proc.finished or not proc.is_alive():
            if not proc.finished:  # it died: the last messages, or why it died
                self._relay_messages(proc)
            proc.join(5)
            self._end_process()

    def _relay_messages(self, proc: JobProcess, killed: bool = False) -> None:
        """Emit the child's messages; ``killed``: its death was ours, not an error."""
        for kind, payload in proc.poll():
            if self._orphaned:
                return
            if kind == "event":
                self.progress.emit((payload,))
            elif kind == "progress":
                self.progress.emit(payload)
            elif kind == "done":
                self.done.emit(payload)
            elif kind == "error" and not killed:
                self._on_error(JobFailed(payload))

    def _end_process(self) -> None:
        self._timer.stop()
        self._deadline.stop()
        self._process = None
        if not self._orphaned:
            self.finished.emit()
