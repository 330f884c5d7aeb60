"""Pretrain dock widget in a real viewer: trains in a child process, Stop/Continue work."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temseg.models import load_model
from napari_temseg.models.user import clear_user_models, user_models
from napari_temseg.widgets.pretrain import PREVIEW_LAYER, PretrainWidget

TINY = {"base": 4, "depth": 2, "val_size": 4, "preview_every_s": 0.5, "preview_size": 32}


def _image(seed: int, shape=(80, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = 40 * (1.2 + np.sin(xx / 3.0) * np.cos(yy / 4.0))
    return rng.poisson(lam).astype(np.float32)


@pytest.fixture
def widget(controls, make_napari_viewer):
    clear_user_models()
    viewer = make_napari_viewer()
    w = PretrainWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    viewer.add_image(_image(0), name="a")
    viewer.add_image(_image(1, (72, 96)), name="b")
    ui["Images"].value = ["a", "b"]
    ui["Patch size"].value = 32
    ui["Batch"].value = 2
    ui["Device"].value = "cpu"
    ui["Start from"].value = "scratch"
    w.advanced = dict(TINY)
    yield viewer, w
    if w._task.process is not None:
        w._task.process.terminate()
    clear_user_models()


def _wait_done(qtbot, w, timeout=300_000):  # generous: the CI machine may be shared
    qtbot.waitUntil(lambda: not w.running, timeout=timeout)


def test_train_registers_model_and_shows_progress(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    ui["Steps"].value = 6
    w.start()
    assert w.running and not ui["Start"].enabled and ui["Stop (keep best)"].enabled
    _wait_done(qtbot, w)
    assert w.last_result is not None and w.last_result.steps_done == 6
    names = [m.name for m in user_models("denoise")]
    assert names == ["pretrained-1"]
    _, meta = load_model(w.last_model)
    assert meta["task"] == "denoise" and meta["training_data"]["files"] == ["a", "b"]
    assert ui["Progress"].value == 100
    steps, losses = w.curves.series("validation")
    assert steps and all(np.isfinite(losses))
    assert PREVIEW_LAYER in viewer.layers
    preview = viewer.layers[PREVIEW_LAYER].data
    assert preview.shape == (32, 32 * 2 + 4)
    assert np.nanmax(preview[:, :32]) > 0 and np.nanmax(preview[:, 36:]) != 0  # filled in
    assert ui["Continue"].enabled and ui["Save model…"].enabled


def test_stop_ends_the_child_and_continue_resumes(controls, widget, qtbot, tmp_path):
    _, w = widget
    ui = controls(w)
    ui["Steps"].value = 100_000  # would run for a long time
    w.start()
    proc = w._task.process
    qtbot.waitUntil(lambda: len(w.curves.series("training")[0]) > 0, timeout=180_000)
    w.stop()
    _wait_done(qtbot, w, timeout=120_000)  # a hang guard, not a speed test
    # the result arrives before the child has finished exiting; on a loaded machine that
    # takes a moment (seen in a full suite beside a training), but it must end
    qtbot.waitUntil(lambda: not proc.is_alive(), timeout=30_000)
    first = w.last_result
    assert first.stopped and 0 < first.steps_done < 100_000 and first.path is not None
    # Continue: a new run from the stopped model, step numbers carried on
    ui["Steps"].value = 4
    ui["Continue"].changed.emit(True)
    _wait_done(qtbot, w)
    second = w.last_result
    assert second.total_steps == first.total_steps + 4
    _, meta = load_model(w.last_model)
    assert meta["pretrain"]["init"] == str(first.path)
    assert meta["pretrain"]["step_offset"] == first.total_steps
    assert sorted(m.name for m in user_models()) == ["pretrained-1", "pretrained-2"]
    # Save never overwrites
    target = tmp_path / "mine.safetensors"
    ui["Save as"].value = target
    w.save()
    assert load_model(target)[1]["task"] == "denoise"
    before = target.stat().st_mtime_ns
    w.save()
    assert target.stat().st_mtime_ns == before


def test_clear_messages_and_nothing_started(controls, widget, qtbot, monkeypatch):
    viewer, w = widget
    ui = controls(w)
    shown = []
    monkeypatch.setattr("napari_temseg.widgets.pretrain.show_warning", shown.append)
    ui["Images"].value = []
    w.start()
    assert not w.running and "Select one or more image layers" in shown[-1]
    ui["Images"].value = ["a"]
    ui["Patch size"].value = 128
    w.start()
    assert not w.running and "smaller than the patch size" in shown[-1]
    viewer.add_image(np.zeros((40, 40, 3), np.uint8), name="rgb", rgb=True)
    ui["Images"].value = ["rgb"]
    ui["Patch size"].value = 16
    w.start()
    assert not w.running and "RGB" in shown[-1]


def test_stop_before_first_validation_says_so(controls, widget, qtbot, monkeypatch):
    _, w = widget
    ui = controls(w)
    shown = []
    monkeypatch.setattr("napari_temseg.widgets.pretrain.show_warning", shown.append)
    ui["Steps"].value = 50
    w.start()
    w.stop()  # before the child has even imported torch
    _wait_done(qtbot, w, timeout=180_000)
    assert w.last_result is not None and w.last_result.path is None
    assert "before its first validation" in shown[-1]
    assert user_models() == []


def test_viewer_stays_responsive_while_training(controls, widget, qtbot):
    """A 10 ms timer keeps firing while the child trains: its ticks fall between training
    updates, so the event loop runs while training advances. How long the longest stall
    is depends on the machine: ``benchmarks/bench_pretrain.py --stalls-only`` measures it."""
    from qtpy.QtCore import QTimer

    _, w = widget
    ui = controls(w)
    ui["Steps"].value = 100_000
    w.start()
    qtbot.waitUntil(lambda: len(w.curves.series("training")[0]) > 0, timeout=180_000)
    seen: list[int] = []  # training points shown at each tick

    def tick() -> None:
        seen.append(len(w.curves.series("training")[0]))

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    start = len(w.curves.series("training")[0])
    qtbot.waitUntil(lambda: len(set(seen) - {start}) >= 2, timeout=180_000)
    timer.stop()
    w.stop()
    _wait_done(qtbot, w, timeout=120_000)
    assert len(seen) > len(set(seen)) >= 3  # several ticks between training updates


def test_opening_the_dock_leaves_no_folder_behind(make_napari_viewer, monkeypatch, tmp_path):
    """The session's models get a temporary folder at the first Start, not when the dock
    opens: a dock opened and closed leaves nothing in the temporary directory."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(PretrainWidget(viewer))
    assert not list(tmp_path.glob("temseg-pretrain-*"))
