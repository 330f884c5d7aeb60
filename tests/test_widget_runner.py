"""The one background runner (widgets/_tasks.py): owner-bound, cancellable, one-line errors.

Driven through the real docks where a dock can provoke the case (a failing denoise, a
pretraining child), and through a bare owner widget where only a scripted job can (a job
that waits for the test, to close its owner at a known moment).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtWidgets import QWidget

from napari_temseg.engine import Cancelled
from napari_temseg.engine.pretrain import PretrainConfig
from napari_temseg.pipeline.training import pretrain_job
from napari_temseg.widgets import _tasks
from napari_temseg.widgets._parts import CHECKPOINT_CHOICE
from napari_temseg.widgets._tasks import Runner
from napari_temseg.widgets.denoise import DenoiseWidget

TINY = {"base": 4, "depth": 2, "val_size": 4, "patch": 32, "batch_size": 2, "preview_every_s": 0}


@pytest.fixture
def notes(monkeypatch):
    """Error notifications the runner shows (napari's own would go to the console)."""
    shown: list[str] = []
    monkeypatch.setattr(_tasks, "show_error", shown.append)
    return shown


def _record(runner: Runner) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []
    for name in ("progress", "done", "failed", "cancelled", "killed", "finished"):
        getattr(runner, name).connect(lambda *a, name=name: seen.append((name, a)))
    return seen


def _names(seen) -> list[str]:
    return [name for name, _ in seen]


def test_owner_closed_mid_job_stops_it_and_calls_nothing(qtbot, notes):
    owner = QWidget()
    runner = Runner(owner, "Waiting")
    seen = _record(runner)
    started, release = threading.Event(), threading.Event()
    stopped: list[bool] = []

    def job(*, progress, cancel):
        started.set()
        release.wait(10)
        progress(1, 2)  # reported after the owner is gone
        stopped.append(cancel.is_set())
        return "late result"

    runner.start(job)
    assert started.wait(10)
    owner.deleteLater()
    qtbot.waitUntil(lambda: runner._orphaned, timeout=5_000)
    release.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    qtbot.wait(50)  # deliver whatever was queued
    assert stopped == [True]  # the job was told to stop
    assert seen == [] and notes == []


def test_cancel_ends_the_job_without_an_error(qtbot, notes):
    owner = QWidget()
    runner = Runner(owner, "Counting")
    seen = _record(runner)

    def job(*, progress, cancel):
        for i in range(10_000):
            if cancel.is_set():
                raise Cancelled(f"stopped after {i} of 10000")
            progress(i, 10_000)
            time.sleep(0.001)
        return "ran out"

    runner.start(job)
    qtbot.waitUntil(lambda: "progress" in _names(seen), timeout=10_000)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    qtbot.wait(20)
    names = _names(seen)
    assert "cancelled" in names and names[-1] == "finished"
    assert "done" not in names and "failed" not in names and notes == []


def test_a_thread_event_job_relays_events_and_its_result(qtbot):
    owner = QWidget()
    runner = Runner(owner, "Events")
    seen = _record(runner)

    def job(n, *, cancel):
        for i in range(n):
            yield ("event", i)
        return "result"

    runner.start_events(job, 3)
    with pytest.raises(RuntimeError, match="already running"):
        runner.start_events(job, 3)
    qtbot.waitUntil(lambda: "finished" in _names(seen), timeout=10_000)
    assert seen == [
        ("progress", ((("event", 0),),)),
        ("progress", ((("event", 1),),)),
        ("progress", ((("event", 2),),)),
        ("done", ("result",)),
        ("finished", ()),
    ]


def test_an_error_in_a_docks_job_is_one_line(make_napari_viewer, qtbot, tmp_path, notes):
    """A broken checkpoint fails inside the job: one notification line, and the dock says so."""
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint\n" * 10)
    w._model.value = CHECKPOINT_CHOICE
    w._checkpoint.value = broken
    w._device.value = "cpu"
    w._image.value = viewer.add_image(np.zeros((64, 64), np.float32), name="raw")
    w.run()
    qtbot.waitUntil(lambda: not w._task.running, timeout=60_000)
    assert len(notes) == 1 and notes[0].startswith("Denoising failed: ")
    assert "\n" not in notes[0]
    assert str(w._status.value).startswith("failed: ") and w._run.enabled
    assert "raw denoised" not in viewer.layers


def test_a_child_process_job_relays_events_and_its_result(qtbot, tmp_path, notes):
    owner = QWidget()
    runner = Runner(owner, "Pretraining")
    seen = _record(runner)
    cfg = PretrainConfig(
        steps=3, init="scratch", device="cpu", output=str(tmp_path / "p.safetensors"), **TINY
    )
    image = np.random.default_rng(0).poisson(40, (64, 64)).astype(np.float32)
    runner.start_events(pretrain_job, [image], [], ["a"], cfg, process=True, threads=1)
    child = runner.process
    assert child is not None and child.pid is not None
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)  # a hang guard
    names = _names(seen)
    assert names[-2:] == ["done", "finished"] and notes == []
    events = [args[0][0] for name, args in seen if name == "progress"]
    assert any(ev.kind == "step" for ev in events) and events[-1].kind == "val"
    result = seen[-2][1][0]
    assert result.steps_done == 3 and result.path is not None
    assert not child.is_alive()


def test_a_child_process_error_is_one_line(qtbot, notes):
    owner = QWidget()
    runner = Runner(owner, "Pretraining")
    seen = _record(runner)
    cfg = PretrainConfig(patch=64, init="scratch", device="cpu")
    small = np.zeros((32, 32), np.float32)
    runner.start_events(pretrain_job, [small], [], ["a"], cfg, process=True, threads=1)
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)
    assert _names(seen) == ["failed", "finished"]
    assert notes == [f"Pretraining failed: {_tasks.one_line(seen[0][1][0])}"]
    assert "smaller than the patch size" in notes[0] and "\n" not in notes[0]


def test_a_child_that_does_not_stop_in_time_is_killed(qtbot, tmp_path, notes):
    owner = QWidget()
    runner = Runner(owner, "Pretraining", stop_timeout_s=0.0)
    seen = _record(runner)
    cfg = PretrainConfig(steps=100_000, init="scratch", device="cpu", **TINY)
    image = np.zeros((64, 64), np.float32)
    runner.start_events(pretrain_job, [image], [], ["a"], cfg, process=True, threads=1)
    child = runner.process
    runner.cancel()  # the child is still importing torch: it cannot stop in 0 s
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert _names(seen) == ["killed", "finished"] and notes == []
    assert not child.is_alive()


def test_closing_the_owner_terminates_a_child(qtbot, tmp_path, notes):
    owner = QWidget()
    runner = Runner(owner, "Pretraining")
    seen = _record(runner)
    cfg = PretrainConfig(steps=100_000, init="scratch", device="cpu", **TINY)
    runner.start_events(
        pretrain_job, [np.zeros((64, 64), np.float32)], [], ["a"], cfg, process=True, threads=1
    )
    child = runner.process
    owner.deleteLater()
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    qtbot.wait(250)  # two poll intervals: nothing may arrive any more
    assert not child.is_alive() and seen == [] and notes == []


def test_a_blocking_call_in_a_child_relays_its_progress(qtbot, tmp_path, notes):
    """``start(..., process=True)``: the engine's denoise in a child, tile progress relayed."""
    import torch

    from napari_temseg.engine import denoise
    from napari_temseg.models import UNet, save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "tiny.safetensors", UNet(base=4, depth=2), {"task": "denoise"}
    )
    owner = QWidget()
    runner = Runner(owner, "Denoising")
    seen = _record(runner)
    image = np.random.default_rng(0).poisson(20, (128, 128)).astype(np.float32)
    runner.start(
        denoise, image, str(path), process=True, threads=1, device="cpu", tile=64, overlap=8
    )
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)
    names = _names(seen)
    assert names[-2:] == ["done", "finished"] and notes == []
    reports = [args[0] for name, args in seen if name == "progress"]
    assert reports and reports[-1][0] == reports[-1][1]  # (tiles done, tiles) up to the last
    out = seen[-2][1][0]
    assert out.shape == image.shape and np.isfinite(out).all()


def test_the_train_docks_job_runs_in_a_child_too(make_napari_viewer, qtbot):
    """Fine-tuning's job body in a child: its events, previews and the trained model (torch
    tensors) come back through the queue, and the dock shows them as from a thread."""
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate
    from napari_temseg.widgets.train import SCRATCH, TrainWidget

    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    s = simulate("stem", 128, pixel_size_nm=0.1, dose=200, seed=1)
    w._image.value = viewer.add_image(s.noisy, name="raw")
    w.add_strokes_layer().data = scribbles_from_mask(s.recorded_semantic, per_class=4, seed=0)
    w._init.value, w._device.value, w._patch.value, w._steps.value = SCRATCH, "cpu", 64, 20
    start = w._task.start
    w._task.start = lambda fn, *a, **k: start(fn, *a, process=True, threads=1, **k)
    w.train()
    assert w._task.process is not None
    qtbot.waitUntil(lambda: not w._task.running, timeout=180_000)  # a hang guard
    model, meta = w.segmenter
    assert meta["training"]["steps_done"] == 20 and meta["class_names"] == ["support", "particle"]
    assert sum(p.numel() for p in model.parameters()) > 0
    assert "raw prediction" in viewer.layers and w._loss_plot.series("train loss")[0]
