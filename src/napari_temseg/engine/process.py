"""Run an engine job in a child process, streaming its events through a queue (Qt-free).

Why a process and not a thread: the job's Python code never competes with napari's GUI
thread for the interpreter lock (so the viewer stays responsive), all of its memory (GPU
memory included) goes back to the system when it ends, and a hung job can be killed.

A job is an importable function of one of the two shapes the engine has:

* an event generator ``job(*args, cancel=threading.Event)`` (the trainers: they yield
  events and *return* their result); the child drains it with
  :func:`napari_temseg.engine.events.drain`, the one drain loop;
* a blocking call ``job(*args, progress=callable, cancel=threading.Event)``
  (``calls=True``; e.g. denoise, segment, or a dock's job body).

Stop is graceful first: :meth:`JobProcess.stop` sets an event, the child's loop ends at its
next step (a trainer validates, writes its best checkpoint and returns); only when it does
not end within ``timeout_s`` is it terminated. Messages from the child are
``(kind, payload)``: ``("event", event)`` (a generator's), ``("progress", args)`` (a
call's progress arguments), ``("done", result)`` or ``("error", text)``. Payloads travel
as plain pickles: torch's queue pickling would hand tensors over as shared memory that
the child, ended right after its last message, can no longer serve.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

from napari_temseg.engine.events import drain

#: step events are sent at most this often (validation, preview and the end always are)
STEP_EVENT_INTERVAL_S = 0.2

Job = Callable[..., Generator[Any, None, Any]]


def _send(out: Any, kind: str, payload: Any) -> None:
    out.put((kind, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)))


def _throttled(out: Any) -> Callable[[Any], None]:
    """Send every event but "step" ones, which go at most every STEP_EVENT_INTERVAL_S."""
    last_sent = [0.0]

    def send(ev: Any) -> None:
        now = time.monotonic()
        is_step = getattr(ev, "kind", None) == "step"
        last = is_step and getattr(ev, "step", None) == getattr(ev, "steps", 0)
        if not is_step or last or now - last_sent[0] >= STEP_EVENT_INTERVAL_S:
            _send(out, "event", ev)
            last_sent[0] = now

    return send


def _child(inbox: Any, calls: bool, threads: int, nice: int, stop: Any, out: Any) -> None:
    """The child's main: take the job, run it, send its events, always a final message."""
    try:
        job, args = pickle.loads(inbox.get())
        import torch

        torch.set_num_threads(max(1, threads))
        if nice and hasattr(os, "nice"):
            os.nice(nice)  # the GUI process wins the CPU whenever both want it
        cancel = threading.Event()

        def watch() -> None:  # mirror the process-wide stop into the loop's cancel event
            stop.wait()
            cancel.set()

        threading.Thread(target=watch, daemon=True).start()
        if calls:
            result = job(*args, progress=lambda *a: _send(out, "progress", a), cancel=cancel)
        else:
            result = drain(job(*args, cancel=cancel), _throttled(out))
        _send(out, "done", result)
    except BaseException as exc:  # every failure reaches the parent as a message
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, ValueError | RuntimeError):
            text += "\n" + traceback.format_exc(limit=3)
        _send(out, "error", text)


class JobProcess:
    """One engine job in a ``spawn``-ed child; poll it from any thread (e.g. a Qt timer).

    ``calls=True``: ``job`` is a blocking call taking ``progress=``, not a generator.
    The child runs at a lower scheduling priority (``nice``, Unix) so that on a small
    machine the viewer's event loop gets the CPU first. ``job`` and ``args`` must pickle
    (``job`` a module-level function). Scripts that use it need the usual
    ``if __name__ == "__main__":`` guard (``spawn`` re-imports the main module).
    """

    def __init__(
        self,
        job: Job,
        *args: Any,
        calls: bool = False,
        threads: int = 2,
        nice: int = 10,
        name: str = "temseg-job",
    ) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._queue = ctx.Queue()
        self._inbox = ctx.Queue()
        # the job goes through a queue, not the Process arguments: those are written to
        # the child's pipe inside start(), which then waits until the child has read them,
        # that is until it has imported what unpickling them needs (torch: seconds)
        self._job = pickle.dumps((job, args), protocol=pickle.HIGHEST_PROTOCOL)
        self._proc = ctx.Process(
            target=_child,
            args=(self._inbox, calls, threads, nice, self._stop, self._queue),
            daemon=True,
            name=name,
        )
        self.finished = False  # a final message ("done" or "error") was received
        self.result: Any = None
        self.error: str | None = None

    def start(self) -> None:
        """Start the child; returns at once (a queue's feeder thread hands the job over)."""
        self._proc.start()
        self._inbox.put(self._job)
        self._job = b""

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def poll(self, max_messages: int = 200) -> list[tuple[str, Any]]:
        """Messages received so far (non-blocking); notices a child that died silently."""
        msgs: list[tuple[str, Any]] = []
        while len(msgs) < max_messages:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            msgs.append((kind, pickle.loads(payload)))
        for kind, payload in msgs:
            if kind == "done":
                self.finished, self.result = True, payload
            elif kind == "error":
                self.finished, self.error = True, payload
        if not msgs and not self.finished and self._proc.exitcode is not None:
            self.finished = True
            self.error = f"the job's process ended unexpectedly (exit code {self._proc.exitcode})"
            msgs.append(("error", self.error))
        return msgs

    def stop(self) -> None:
        """Ask the child to stop after its current step (a trainer keeps its best model)."""
        self._stop.set()

    def terminate(self) -> None:
        """Hard stop (no final checkpoint beyond the last validation's)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the child to exit; True when it has."""
        self._proc.join(timeout_s)
        return not self._proc.is_alive()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Graceful stop, then terminate if the child has not exited within ``timeout_s``."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while self._proc.is_alive() and time.monotonic() < deadline:
            self.poll()  # keep the queue drained so the child's feeder thread can exit
            self._proc.join(0.05)
        if self._proc.is_alive():
            self.terminate()
        self.poll()


def events_of(msgs: list[tuple[str, Any]]) -> list[Any]:
    """The events among ``poll()``'s messages."""
    return [p for k, p in msgs if k == "event"]
