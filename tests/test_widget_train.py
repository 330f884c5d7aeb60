"""Train dock widget in a real viewer: strokes in, live prediction and segmentation out."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.synth import simulate
from napari_temseg.widgets import train as train_mod
from napari_temseg.widgets._parts import camera
from napari_temseg.widgets.train import SCRATCH, TrainWidget

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sample():
    s = simulate("stem", 128, pixel_size_nm=0.1, dose=200, seed=1)
    return s, scribbles_from_mask(s.recorded_semantic, per_class=4, length=24, seed=0)


@pytest.fixture
def widget(controls, make_napari_viewer):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    ui["Start from"].value = SCRATCH
    ui["Device"].value = "cpu"
    ui["Patch size"].value = 64
    return viewer, w


def _wait(qtbot, task, timeout=60_000):
    qtbot.waitUntil(lambda: not task.running, timeout=timeout)


def _small_net(monkeypatch):
    """Base-8 networks keep the GUI tests quick on a 2-core machine."""
    from napari_temseg.engine import finetune as ft

    orig = ft.FinetuneConfig.__init__

    def init(self, *a, **kw):
        orig(self, *a, **{"base": 8, "depth": 3, "batch_size": 4, "val_every": 10, **kw})

    monkeypatch.setattr(ft.FinetuneConfig, "__init__", init)


def _paint(layer, strokes):
    """Paint like a brush would: label by label, through the layer's own API."""
    layer.brush_size = 1
    for value in (1, 2):
        for coord in np.argwhere(strokes == value):
            layer.paint(tuple(coord), value, refresh=False)
    layer.refresh()


def test_train_preview_stop_continue_apply(controls, widget, sample, qtbot, monkeypatch):
    _small_net(monkeypatch)
    monkeypatch.setattr(train_mod, "PREVIEW_EVERY_S", 0.0)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    stack = np.stack([s.noisy, s.noisy[::-1]])
    image = viewer.add_image(stack, name="raw", scale=(1.0, 0.1, 0.1), units=("pixel", "nm", "nm"))
    ui["Image"].value = image
    layer = w.add_strokes_layer()
    assert layer.data.shape == stack.shape and tuple(layer.scale) == (1.0, 0.1, 0.1)
    assert layer.metadata["class_names"] == ["support", "particle"]
    viewer.dims.set_point(0, 0)
    brush = np.zeros_like(stack, dtype=np.uint8)
    brush[0] = strokes
    _paint(layer, brush)
    assert np.array_equal(layer.data[0] > 0, strokes > 0)

    # 80 steps: from scratch (seeded, see test_a_scratch_segmenter_starts_from_its_seed) the
    # particle class appears between step 40 and 80
    ui["Steps"].value = 80
    w.train()
    assert w._task.running
    _wait(qtbot, w._task)
    assert w.segmenter is not None
    assert "raw prediction" in viewer.layers
    pred = viewer.layers["raw prediction"]
    assert pred.metadata["class_names"] == ["support", "particle"]
    assert set(np.unique(pred.data[0])) <= {1, 2} and (pred.data[0] == 2).any()
    assert w._loss_plot.series("train loss")[0] and w._dice_plot.series("particle")[0]
    first_steps = w.segmenter[1]["training"]["steps_done"]
    assert first_steps == 80
    # the model kept is the mean of the second half's validated weights, and it says so
    since = w.segmenter[1]["training"]["averaged_from_step"]
    assert 40 <= since < 80 and f"kept the mean of the weights of steps {since}-80" in str(
        w._status.value
    )

    # Stop mid-run keeps the best; Train again continues the step count
    ui["Steps"].value = 400
    w.train()
    qtbot.waitUntil(lambda: w._loss_plot.series("train loss")[0][-1] > 85, timeout=30_000)
    w.stop()
    _wait(qtbot, w._task, timeout=60_000)  # a hang guard, not a speed test (benchmarks/)
    steps_done = w.segmenter[1]["training"]["steps_done"]
    assert first_steps < steps_done < first_steps + 400
    assert w._loss_plot.series("train loss")[0][-1] < first_steps + 400  # no step after
    assert "stopped" in w._status.value

    # apply to the whole stack
    ui["Apply to"].value = "whole stack"
    w.apply()
    _wait(qtbot, w._apply_task)
    seg = viewer.layers["raw segmentation"]
    assert seg.data.shape == stack.shape and tuple(seg.scale) == (1.0, 0.1, 0.1)
    assert set(np.unique(seg.data)) <= {1, 2} and (seg.data[1] == 2).any()
    assert seg.metadata["class_names"] == ["support", "particle"]
    assert len(seg.metadata["class_colors"]) == 2


def test_error_notifications(controls, widget, sample, monkeypatch):
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    image = viewer.add_image(s.noisy, name="raw")
    ui["Image"].value = image
    layer = w.add_strokes_layer()
    shown = []
    monkeypatch.setattr(train_mod, "show_error", shown.append)
    w.train()
    assert not w._task.running and "no strokes" in shown[-1]
    layer.data = (strokes == 1).astype(np.uint8)
    w.train()
    assert not w._task.running and "only class 1" in shown[-1]
    other = viewer.add_labels(np.zeros((50, 50), np.uint8), name="wrong")
    other.data[5:10, 5:10] = 1
    ui["Strokes"].value = other
    ui["also use other strokes layers"].value = False
    w.train()
    assert "differ in shape" in shown[-1]


def test_removing_the_image_stops_training(controls, widget, sample, qtbot, monkeypatch):
    _small_net(monkeypatch)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    image = viewer.add_image(s.noisy, name="raw")
    ui["Image"].value = image
    layer = w.add_strokes_layer()
    layer.data = strokes.copy()
    ui["Steps"].value = 5000
    w.train()
    qtbot.waitUntil(lambda: bool(w._loss_plot.series("train loss")[0]), timeout=30_000)
    viewer.layers.remove(image)
    _wait(qtbot, w._task, timeout=60_000)  # a hang guard, not a speed test
    assert "removed" in w._status.value or "stopped" in w._status.value
    assert w._loss_plot.series("train loss")[0][-1] < 5000  # it stopped, not finished


def test_save_and_load_never_overwrites(controls, widget, sample, qtbot, monkeypatch, tmp_path):
    _small_net(monkeypatch)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    image = viewer.add_image(s.noisy, name="raw")
    ui["Image"].value = image
    layer = w.add_strokes_layer()
    layer.data = strokes.copy()
    ui["Classes"].value = "carbon, gold"
    ui["Steps"].value = 10
    w.train()
    _wait(qtbot, w._task)
    ui["Save as"].value = tmp_path / "seg.safetensors"
    assert w.save() == tmp_path / "seg.safetensors"
    warned = []
    monkeypatch.setattr(train_mod, "show_warning", warned.append)
    assert w.save() is None and "already exists" in warned[-1]
    ui["Classes"].value = "x, y"
    ui["Load"].value = tmp_path / "seg.safetensors"
    w.load()
    assert ui["Classes"].value == "carbon, gold"
    if importlib.util.find_spec("bioimageio.core") is not None:  # model exchange round trip
        trained = {k: v.clone() for k, v in w.segmenter[0].state_dict().items()}
        ui["Save as"].value = tmp_path / "seg.zip"
        assert w.save() == tmp_path / "seg.zip" and "bioimage.io" in w._status.value
        ui["Classes"].value = "x, y"
        ui["Load"].value = tmp_path / "seg.zip"
        w.load()
        assert ui["Classes"].value == "carbon, gold"
        for k, v in w.segmenter[0].state_dict().items():
            assert torch.equal(v, trained[k]), k
    ui["Apply to"].value = "all open images"
    viewer.add_image(s.noisy[:100, :90], name="other")
    w.apply()
    _wait(qtbot, w._apply_task)
    assert viewer.layers["other segmentation"].data.shape == (100, 90)
    assert "raw uncertainty" in viewer.layers  # shown, and not itself segmented
    assert not any(lay.name.startswith("raw uncertainty ") for lay in viewer.layers)
    assert viewer.layers["raw segmentation"].metadata["class_names"] == ["carbon", "gold"]
    # one of the images removed while they are segmented: the others are still done (any
    # layer removed cancelled the whole Apply, without a word)
    for name in ("other segmentation", "other uncertainty", "raw segmentation"):
        viewer.layers.remove(name)
    w.apply()
    viewer.layers.remove("other")
    _wait(qtbot, w._apply_task)
    assert "raw segmentation" in viewer.layers and "other segmentation" not in viewer.layers
    assert w._status.value.startswith("segmented")
    w.stop()  # nothing is training: no "stopping" left standing
    assert not w._status.value.startswith("stopping")


def test_preview_window_follows_the_view_on_big_images(widget):
    viewer, _ = widget
    image = viewer.add_image(np.zeros((2000, 1500), np.float32), name="big", scale=(0.5, 0.5))
    camera(viewer).center = (0.0, 900.0, 700.0)  # world units: pixel (1800, 1400)
    y0, x0 = train_mod._preview_corner(viewer, image)
    assert (y0, x0) == (2000 - 1024, 1500 - 1024)
    camera(viewer).center = (0.0, 250.0, 250.0)
    assert train_mod._preview_corner(viewer, image) == (0, 0)
    small = viewer.add_image(np.zeros((300, 200), np.float32), name="small")
    assert train_mod._preview_corner(viewer, small) == (0, 0)


def test_closing_the_viewer_stops_training(
    controls, make_napari_viewer, sample, qtbot, monkeypatch
):
    _small_net(monkeypatch)
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    ui["Start from"].value, ui["Device"].value, ui["Patch size"].value = SCRATCH, "cpu", 64
    s, strokes = sample
    ui["Image"].value = viewer.add_image(s.noisy, name="raw")
    w.add_strokes_layer().data = strokes.copy()
    ui["Steps"].value = 5000
    task = w._task
    w.train()
    qtbot.waitUntil(lambda: bool(w._loss_plot.series("train loss")[0]), timeout=30_000)
    viewer.close()
    qtbot.waitUntil(lambda: not task.running, timeout=60_000)  # a hang guard
    assert task._cancel.is_set()  # cancelled by the close, not run out


def test_first_preview_comes_from_the_fitted_head(controls, widget, sample, qtbot, monkeypatch):
    """With a pretrained start, the head is fitted first and says so (engine/probe.py)."""
    from napari_temseg.models import DEFAULT_DENOISER, list_models

    if DEFAULT_DENOISER not in {m.name for m in list_models("denoise")}:
        pytest.skip("bundled denoiser not installed")
    monkeypatch.setattr(train_mod, "PREVIEW_EVERY_S", 0.0)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    image = viewer.add_image(s.noisy, name="raw")
    ui["Image"].value = image
    ui["Start from"].value = DEFAULT_DENOISER
    ui["Patch size"].value = 128
    _paint(w.add_strokes_layer(), strokes)
    said: list[str] = []  # what the status line said after each event
    w._task.progress.connect(lambda *_: said.append(str(w._status.value)))
    ui["Steps"].value = 2
    w.train()
    _wait(qtbot, w._task)
    assert any(v.startswith("class head fitted to the strokes") for v in said), said
    assert w.segmenter[1]["training"]["head_fit_accuracy"] is not None
    assert w._dice_plot.series("particle")[0][0] == 0  # the fitted head's validation


def test_field_labels_show_without_a_labels_layer(make_napari_viewer, qtbot):
    """A viewer with no Labels layer: Steps, Learning rate, Patch size still have labels.

    The strokes ComboBox is empty (falsy) then; stored as ``_labels`` it used to switch off
    magicgui's own show-labels flag, and the dock lost every field label.
    """
    from qtpy.QtWidgets import QLabel

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="raw")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    labels = w.native.findChildren(QLabel)
    shown = {lab.text() for lab in labels if lab.isVisibleTo(w.native) and lab.width() > 0}
    assert {"Steps", "Learning rate", "Patch size", "Strokes", "Image"} <= shown, shown


def test_time_budget_and_time_left(controls, widget, sample, qtbot, monkeypatch):
    """The time budget ("or stop after N s") ends the run; the status line says the time left."""
    from types import SimpleNamespace

    from napari_temseg.engine import loop

    _small_net(monkeypatch)
    now = [0.0]

    def tick() -> float:  # a fake clock: half a second per reading, no real timing
        now[0] += 0.5
        return now[0]

    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=tick))
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    ui["Image"].value = viewer.add_image(s.noisy, name="raw")
    w.add_strokes_layer().data = strokes.copy()
    said: list[str] = []
    w._task.progress.connect(lambda *_: said.append(str(w._status.value)))
    ui["Steps"].value = 5000
    ui["or stop after"].value = 10
    w.train()
    _wait(qtbot, w._task)
    assert any(" left" in v for v in said if v.startswith("step ")), said[:5]
    assert "time budget reached" in w._status.value
    assert w.segmenter[1]["training"]["steps_done"] < 5000
    assert ui["Progress"].value == 100


def test_apply_shows_uncertainty_and_warns_on_unlike_frames(
    controls, widget, sample, qtbot, monkeypatch
):
    """A frame from another session (a tenth of the dose): a notification and a dock line."""
    _small_net(monkeypatch)
    monkeypatch.setattr(train_mod, "PREVIEW_EVERY_S", 0.0)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    low = simulate("stem", 128, pixel_size_nm=0.1, dose=10, seed=1).noisy
    stack = np.stack([s.noisy, low]).astype(np.float32)
    ui["Image"].value = viewer.add_image(stack, name="raw")
    viewer.dims.set_point(0, 0)
    layer = w.add_strokes_layer()
    painted = np.zeros(stack.shape, np.uint8)
    painted[0] = strokes
    layer.data = painted
    viewer.layers.selection.active = layer
    ui["Steps"].value = 10
    w.train()
    _wait(qtbot, w._task)
    unsure = viewer.layers["raw uncertainty"]  # with the live prediction
    assert unsure.data.shape == stack.shape and unsure.data[0].max() > 0
    assert viewer.layers.selection.active is layer  # painting goes on where it was
    warned = []
    monkeypatch.setattr(train_mod, "show_warning", warned.append)
    ui["Apply to"].value = "whole stack"
    w.apply()
    _wait(qtbot, w._apply_task)
    u = viewer.layers["raw uncertainty"].data
    assert u.dtype == np.uint8 and u.max() <= 100 and u[1].any()
    assert w._checks.value.startswith("unsure on raw, frame ")  # the first, in two lines
    every = w._checks.tooltip.splitlines()  # all of them (frame 0 may also be degenerate)
    assert any(x.startswith("raw, frame 1: unlike the painted frames") for x in every)
    assert not any(x.startswith("raw, frame 0: unlike") for x in every)
    assert warned and "Unsure on" in warned[-1]
    # one open image holds no data: the others are segmented, and it is named
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="dead")
    ui["Apply to"].value = "all open images"
    w.apply()
    _wait(qtbot, w._apply_task)
    assert "raw segmentation" in viewer.layers and "dead segmentation" not in viewer.layers
    assert any(x.startswith("Not segmented: 'dead': every pixel is NaN") for x in warned)
    assert w._status.value == "segmented 1 image(s); 1 not (see the message)"
    before = [layer.name for layer in viewer.layers]
    viewer.dims.order = (2, 0, 1)  # rolled: the canvas shows (frame, y), no one frame
    ui["Apply to"].value = "current frame"
    w.apply()
    assert not w._apply_task.running and [layer.name for layer in viewer.layers] == before
    assert "does not show one frame of 'raw'" in warned[-1]


def test_a_degenerate_live_prediction_is_said_after_training(
    controls, widget, sample, qtbot, monkeypatch
):
    """Held-out Dice can be perfect while the displayed frame comes out one class: say so."""
    _small_net(monkeypatch)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    stack = np.stack([s.noisy, np.full_like(s.noisy, s.noisy.min())]).astype(np.float32)
    ui["Image"].value = viewer.add_image(stack, name="raw")
    painted = np.zeros(stack.shape, np.uint8)
    painted[0] = strokes  # strokes on frame 0 ...
    w.add_strokes_layer().data = painted
    viewer.dims.set_point(0, 1)  # ... while frame 1, a blank one, is displayed
    warned = []
    monkeypatch.setattr(train_mod, "show_warning", warned.append)
    ui["Steps"].value = 10
    w.train()
    _wait(qtbot, w._task)
    said = w._status.value
    assert "but on the displayed frame" in said and "the prediction is degenerate" in said
    assert warned and "Paint a few strokes where it is wrong" in warned[-1]


def test_a_micrometre_layer_is_calibrated_for_training(controls, widget, sample, monkeypatch):
    """Train reads the same calibration as Measure: a µm layer trains at its size in nm."""
    from napari_temseg.engine import finetune as ft

    seen = {}

    class Refused(ValueError):
        pass

    def capture(*args, pixel_sizes=None, **kwargs):
        seen["pixel_sizes"] = pixel_sizes
        raise Refused("captured")

    monkeypatch.setattr(ft, "Finetuner", capture)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    image = viewer.add_image(s.noisy, name="raw", scale=(0.0001, 0.0001), units="µm")
    ui["Image"].value = image
    _paint(w.add_strokes_layer(), strokes)
    ui["Train"].clicked()
    assert seen["pixel_sizes"] == [pytest.approx(0.1)]


def test_contrast_may_invert_trains_on_inverted_patches_too(controls, widget, sample, monkeypatch):
    """The options' check box turns on the contrast-inversion augmentation, off by default."""
    from napari_temseg import defaults
    from napari_temseg.engine import finetune as ft

    seen = []

    class Refused(ValueError):
        pass

    def capture(*args, config=None, **kwargs):
        seen.append(config.invert_contrast)
        raise Refused("captured")

    monkeypatch.setattr(ft, "Finetuner", capture)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    ui["Image"].value = viewer.add_image(s.noisy, name="raw")
    _paint(w.add_strokes_layer(), strokes)
    ui["Train"].clicked()
    ui["contrast may invert between frames"].value = True
    ui["Train"].clicked()
    assert seen == [0.0, defaults.FINETUNE_INVERT]


def test_apply_can_average_eight_orientations(controls, widget, sample, qtbot, monkeypatch):
    """Ticking "average 8 orientations" applies the segmenter as ``engine.tta.with_tta``
    does, and its uncertainty is that of the mean."""
    from napari_temseg.engine.checks import uncertainty
    from napari_temseg.engine.segment import segment
    from napari_temseg.engine.tta import with_tta

    _small_net(monkeypatch)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    frame = s.noisy.astype(np.float32)
    ui["Image"].value = viewer.add_image(frame, name="raw")
    _paint(w.add_strokes_layer(), strokes)
    ui["Steps"].value = 80  # from scratch, the particles appear between steps 40 and 80
    w.train()
    _wait(qtbot, w._task)
    assert not ui["average 8 orientations (8x slower)"].value  # off: 8x the time
    ui["average 8 orientations (8x slower)"].value = True
    w.apply()
    _wait(qtbot, w._apply_task)
    labels, probs = segment(frame, with_tta(w.segmenter), device="cpu", probabilities=True)
    _, plain = segment(frame, w.segmenter, device="cpu", probabilities=True)
    assert np.array_equal(viewer.layers["raw segmentation"].data, labels)
    shown = viewer.layers["raw uncertainty"].data.astype(int)
    assert np.abs(shown - np.round(uncertainty(probs) * 100)).max() <= 1
    assert np.abs(shown - np.round(uncertainty(plain) * 100)).max() > 1  # one pass differs


def test_a_named_class_without_strokes_is_said_when_training_starts(
    controls, widget, sample, qtbot, monkeypatch
):
    _small_net(monkeypatch)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    ui["Image"].value = viewer.add_image(s.noisy, name="raw")
    w.add_strokes_layer().data = np.where(strokes == 2, 3, strokes).astype(np.uint8)
    ui["Classes"].value = "support, particle, defect"  # 'particle' not painted (yet)
    warned = []
    monkeypatch.setattr(train_mod, "show_warning", warned.append)
    ui["Steps"].value = 4
    w.train()
    said = "class 2 'particle' has no strokes: it is not learned"
    assert warned and warned[-1].startswith(said) and said in w._status.value
    _wait(qtbot, w._task)


def test_strokes_at_another_scale_or_place_than_the_image_are_refused(
    controls, widget, sample, qtbot, monkeypatch
):
    """Strokes pair with pixels by index: a shifted overlay trained on unpainted pixels."""
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    ui["Image"].value = viewer.add_image(s.noisy, name="raw", scale=(0.1, 0.1))
    for scale, translate in (((0.2, 0.2), (0, 0)), ((0.1, 0.1), (5.0, 0))):
        ui["Strokes"].value = viewer.add_labels(strokes, scale=scale, translate=translate)
        warned = []
        monkeypatch.setattr(train_mod, "show_warning", warned.append)
        w.train()
        assert not w._task.running and "at another scale or position" in warned[-1]
    layer = w.add_strokes_layer()  # made by the dock: on the image's pixels
    layer.data = strokes
    ui["Steps"].value = 2
    _small_net(monkeypatch)
    w.train()
    assert w._task.running
    _wait(qtbot, w._task)


def test_the_live_preview_follows_the_frame_shown(controls, widget, sample, qtbot, monkeypatch):
    """Train pressed on frame 0, frame 2 shown meanwhile: the previews stayed on frame 0."""
    _small_net(monkeypatch)
    monkeypatch.setattr(train_mod, "PREVIEW_EVERY_S", 0.0)
    viewer, w = widget
    ui = controls(w)
    s, strokes = sample
    stack = np.stack([s.noisy] * 3).astype(np.float32)
    ui["Image"].value = viewer.add_image(stack, name="raw")
    viewer.dims.set_current_step(0, 0)
    painted = np.zeros(stack.shape, np.uint8)
    painted[0] = strokes
    w.add_strokes_layer().data = painted
    ui["Steps"].value = 30
    w.train()
    viewer.dims.set_current_step(0, 2)
    _wait(qtbot, w._task)
    shown = viewer.layers["raw prediction"].data
    assert shown[2].any()  # the last previews were of frame 2, where the user looks
