"""Every dock widget with bad input and odd use: a clear message, nothing lost, no crash.

What a user will do sooner or later: RGB screenshots, tiny or empty images, blank label
layers, a 4D stack, pressing a button twice, cancelling at once. Each case must end in a
notification or a sensible result; an exception escaping into Qt's event loop fails the
test (napari's ``make_napari_viewer`` checks that).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_temseg.widgets import _parts as parts_mod
from napari_temseg.widgets import _tasks as tasks_mod
from napari_temseg.widgets import denoise as denoise_mod
from napari_temseg.widgets import measure as measure_mod
from napari_temseg.widgets import pretrain as pretrain_mod
from napari_temseg.widgets import train as train_mod

torch.set_num_threads(1)


@pytest.fixture
def said(monkeypatch):
    """Every notification the widgets (and their jobs' runner) show, as (kind, text)."""
    out: list[tuple[str, str]] = []
    for mod in (denoise_mod, train_mod, pretrain_mod, measure_mod, tasks_mod, parts_mod):
        for kind in ("show_info", "show_warning", "show_error"):
            if hasattr(mod, kind):
                monkeypatch.setattr(mod, kind, lambda m, k=kind: out.append((k, str(m))))
    return out


def _wait(qtbot, task, timeout=60_000):
    qtbot.waitUntil(lambda: not task.running, timeout=timeout)


def test_denoise_odd_inputs(make_napari_viewer, qtbot, said):
    viewer = make_napari_viewer()
    w = denoise_mod.DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._device.value = "cpu"

    assert w._image.value is None
    w.run()  # nothing to choose yet
    assert said[-1][0] == "show_warning" and "image layer" in said[-1][1]

    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="screenshot")
    w._image.value = rgb
    w.run()
    assert "RGB" in said[-1][1] and not w._task.running

    tiny = viewer.add_image(np.arange(9, dtype=np.float32).reshape(3, 3), name="tiny")
    w._image.value = tiny
    w.run()
    _wait(qtbot, w._task)  # refused in one line: it came back averaged and called done
    assert "tiny denoised" not in viewer.layers
    assert "a 3x3 frame is too small to denoise" in w._status.value

    flat = viewer.add_image(np.full((40, 40), 7.0, np.float32), name="flat")
    w._image.value = flat
    w.run()
    _wait(qtbot, w._task)
    assert np.allclose(viewer.layers["flat denoised"].data, 7.0, atol=0.5)  # nothing invented

    stack4d = np.random.default_rng(0).poisson(5, (2, 2, 48, 48)).astype(np.float32)
    layer = viewer.add_image(stack4d, name="4d")
    w._image.value = layer
    w._scope.value = "current frame"
    w.run()
    w.run()  # pressed twice: told, not started twice
    assert "already running" in said[-1][1]
    _wait(qtbot, w._task)
    assert viewer.layers["4d denoised [frame 0, 0]"].data.shape == (48, 48)

    w._scope.value = "whole stack"
    w.run()
    w._task.cancel()  # cancel at once
    _wait(qtbot, w._task)
    assert "4d denoised" not in viewer.layers  # a cancelled run adds nothing
    assert w._run.enabled


def test_train_odd_inputs(make_napari_viewer, qtbot, said):
    viewer = make_napari_viewer()
    w = train_mod.TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._device.value = "cpu"
    w._init.value = train_mod.SCRATCH

    w.train()  # nothing chosen
    assert "Choose an image layer" in said[-1][1]

    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="screenshot")
    w._image.value = rgb
    w._strokes.value = viewer.add_labels(np.zeros((32, 32), np.uint8), name="marks")
    w.train()
    assert "grayscale" in said[-1][1]

    img = viewer.add_image(np.random.default_rng(1).random((40, 40)).astype(np.float32), name="im")
    w._image.value = img
    strokes = w.add_strokes_layer()
    w._classes.value = "only one"
    w.train()
    assert "two distinct classes" in said[-1][1]
    w._classes.value = "a, a"
    w.train()
    assert "two distinct classes" in said[-1][1]

    w._classes.value = "support, particle"
    strokes.data[3:6, 3:20] = 1  # image smaller than a patch (128): padded, still trains
    strokes.data[30:33, 3:20] = 2
    strokes.refresh()
    w._steps.value = 3
    w.train()
    w.train()  # twice
    assert "already running" in said[-1][1]
    _wait(qtbot, w._task)
    assert w.segmenter is not None

    # a label the class list does not name
    strokes.data[20:22, 20:30] = 3
    strokes.refresh()
    w._continue.value = False
    w.train()
    assert said[-1][0] == "show_error" and not w._task.running


def test_measure_odd_inputs(make_napari_viewer, qtbot, said, tmp_path):
    viewer = make_napari_viewer()
    w = measure_mod.MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)

    assert w._mask.value is None
    w.run()
    assert "Labels layer" in said[-1][1]

    blank = viewer.add_labels(np.zeros((50, 50), np.uint8), name="blank")
    w._mask.value = blank
    w.run()
    _wait(qtbot, w._task)
    assert w.result is not None and len(w.result.table) == 0
    assert "0 particles" in w._summary.value or "no particle" in w._summary.value.lower()
    w._csv.value = tmp_path / "blank.csv"
    csv = w.export_csv()  # an empty table is still a table: header only, nothing raised
    assert csv is not None and csv.read_text().count("\n") == 1 and w._status.value

    w._classes.value = "not a number"
    w.run()
    assert w._status.value and not w._task.running


def test_pretrain_odd_inputs(make_napari_viewer, said):
    viewer = make_napari_viewer()
    w = pretrain_mod.PretrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.start()
    assert "Select one or more image layers" in said[-1][1]
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="screenshot")
    w._layers.value = ["screenshot"]
    w.start()
    assert said[-1][0] in ("show_warning", "show_error") and not w.running
    w.save()
    assert "no trained model" in said[-1][1]


def test_closing_napari_while_pretraining_and_training_run(make_napari_viewer, qtbot):
    """Two trainings at once (a child process and a worker thread), then the window closes."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.poisson(30, (96, 96)).astype(np.float32), name="raw")
    pre = pretrain_mod.PretrainWidget(viewer)
    viewer.window.add_dock_widget(pre)
    pre._layers.value = ["raw"]
    pre._patch.value = 32
    pre._batch.value = 2
    pre._device.value = "cpu"
    pre._start_model.value = "scratch"
    pre.advanced = {"base": 4, "depth": 2, "val_size": 4}
    pre._steps.value = 100_000
    pre.start()
    proc = pre._task.process
    assert proc is not None

    seg = train_mod.TrainWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg._device.value = "cpu"
    seg._init.value = train_mod.SCRATCH
    seg._image.value = image
    strokes = seg.add_strokes_layer()
    strokes.data[5:8, 5:40] = 1
    strokes.data[60:63, 5:40] = 2
    seg._steps.value = 100_000
    seg._patch.value = 64
    seg.train()
    task = seg._task
    assert task.running

    viewer.close()
    qtbot.waitUntil(lambda: not task.running, timeout=10_000)
    qtbot.waitUntil(lambda: not proc.is_alive(), timeout=10_000)
