"""Run a pretraining job in a child process, streaming its events through a queue.

Why a process and not a thread: the training's Python code never competes with napari's
GUI thread for the interpreter lock (so the viewer stays responsive), all of its memory
(GPU memory included) goes back to the system when it ends, and a hung job can be killed.

Stop is graceful first: :meth:`TrainingProcess.stop` sets an event, the child's training
loop ends at its next step, validates, writes the best checkpoint and reports ``done``;
only when it does not end within ``timeout_s`` is it terminated (the checkpoint written at
its last validation stays on disk). Messages from the child are ``(kind, payload)``:
``("event", TrainEvent)``, ``("done", PretrainResult)`` or ``("error", text)``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from napari_temseg.engine.events import TrainEvent
from napari_temseg.engine.pretrain import PretrainConfig, iter_pretrain

#: step events are sent at most this often (validation, preview and the end always are)
STEP_EVENT_INTERVAL_S = 0.2


def _child(
    images: Sequence[Any] | None,
    paths: Sequence[str] | None,
    names: Sequence[str],
    config: PretrainConfig,
    threads: int,
    nice: int,
    stop: Any,
    out: Any,
) -> None:
    """The child's main: train, send events, always send a final message."""
    try:
        import torch

        torch.set_num_threads(max(1, threads))
        if nice and hasattr(os, "nice"):
            os.nice(nice)  # the GUI process wins the CPU whenever both want it
        if paths:
            from napari_temseg.engine.pretrain import read_images

            images, names = read_images(paths)
        cancel = threading.Event()

        def watch() -> None:  # mirror the process-wide stop into the loop's cancel event
            stop.wait()
            cancel.set()

        threading.Thread(target=watch, daemon=True).start()
        gen = iter_pretrain(images, config, names, cancel)
        last_sent = 0.0
        while True:
            try:
                ev = next(gen)
            except StopIteration as done:
                out.put(("done", done.value))
                return
            now = time.monotonic()
            if ev.kind != "step" or ev.step == ev.steps or now - last_sent >= STEP_EVENT_INTERVAL_S:
                out.put(("event", ev))
                last_sent = now
    except BaseException as exc:  # every failure reaches the parent as a message
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, ValueError | RuntimeError):
            text += "\n" + traceback.format_exc(limit=3)
        out.put(("error", text))


class TrainingProcess:
    """One pretraining job in a ``spawn``-ed child; poll it from any thread (e.g. a timer).

    The child runs at a lower scheduling priority (``nice``, Unix) so that on a small
    machine the viewer's event loop gets the CPU first. Scripts that use it need the usual
    ``if __name__ == "__main__":`` guard (``spawn`` re-imports the main module).
    """

    def __init__(
        self,
        config: PretrainConfig,
        images: Sequence[Any] | None = None,
        names: Sequence[str] = (),
        paths: Sequence[str] | None = None,
        threads: int = 2,
        nice: int = 10,
    ) -> None:
        if images is None and not paths:
            raise ValueError("give images or paths to pretrain on")
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._queue = ctx.Queue()
        self._proc = ctx.Process(
            target=_child,
            args=(
                images,
                list(paths or ()),
                list(names),
                config,
                threads,
                nice,
                self._stop,
                self._queue,
            ),
            daemon=True,
            name="temseg-pretrain",
        )
        self.finished = False  # a final message ("done" or "error") was received
        self.result = None
        self.error: str | None = None

    def start(self) -> None:
        self._proc.start()

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
                msgs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for kind, payload in msgs:
            if kind == "done":
                self.finished, self.result = True, payload
            elif kind == "error":
                self.finished, self.error = True, payload
        if not msgs and not self.finished and self._proc.exitcode is not None:
            self.finished = True
            self.error = (
                f"the training process ended unexpectedly (exit code {self._proc.exitcode})"
            )
            msgs.append(("error", self.error))
        return msgs

    def stop(self) -> None:
        """Ask the child to stop after its current step, keeping the best checkpoint."""
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


def events_of(msgs: list[tuple[str, Any]]) -> list[TrainEvent]:
    return [p for k, p in msgs if k == "event"]
