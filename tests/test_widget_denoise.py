"""Denoise dock widget in a real viewer: runs in the background, adds a calibrated layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_temseg.models import UNet, save_checkpoint
from napari_temseg.widgets._parts import CHECKPOINT_CHOICE
from napari_temseg.widgets.denoise import DenoiseWidget


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = UNet(base=4, depth=2)
    meta = {"task": "denoise", "name": "tiny", "modality": "hrtem"}  # adaptable
    return save_checkpoint(tmp_path / "tiny.safetensors", model, meta)


@pytest.fixture
def widget(controls, make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    ui["Model"].value = CHECKPOINT_CHOICE
    ui["Checkpoint"].value = tiny_checkpoint
    ui["Device"].value = "cpu"
    ui["Tile size"].value = 64
    return viewer, w


def _wait(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: not w._task.running, timeout=timeout)


def test_denoise_adds_layer_with_same_scale(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    rng = np.random.default_rng(0)
    img = rng.poisson(20, size=(150, 170)).astype(np.float32)
    viewer.add_image(img, name="raw", scale=(0.05, 0.05), translate=(1.0, 2.0))
    ui["Image"].value = viewer.layers["raw"]
    assert not ui["Checkpoint"].native.isHidden()  # the viewer window itself is not shown
    w.run()
    assert w._task.running and not ui["Run"].enabled
    _wait(qtbot, w)
    out = viewer.layers["raw denoised"]
    assert out.data.shape == img.shape and out.data.dtype == np.float32
    assert tuple(out.scale) == pytest.approx((0.05, 0.05))
    assert tuple(out.translate) == pytest.approx((1.0, 2.0))
    lo, hi = out.contrast_limits
    assert lo < hi
    assert ui["Progress"].value == 100 and ui["Run"].enabled


def test_current_frame_of_a_stack(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    stack = np.random.default_rng(1).poisson(10, size=(3, 96, 96)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    ui["Image"].value = viewer.layers["stack"]
    ui["Apply to"].value = "current frame"
    w.run()
    _wait(qtbot, w)
    out = viewer.layers["stack denoised [frame 2]"]
    assert out.data.shape == (96, 96)


def test_a_frame_result_is_a_2d_image_and_a_diffraction_pattern_is_refused(
    controls, widget, qtbot, tmp_path, monkeypatch
):
    """A frame of a stack came back with axis labels '-2', '-1' and still described as a
    3D stack; a diffraction pattern was denoised by a real-space model without a word."""
    from napari_temseg.io import write_image

    viewer, w = widget
    ui = controls(w)
    stack = np.random.default_rng(1).poisson(10, size=(3, 96, 96)).astype(np.float32)
    [layer] = viewer.open(
        write_image(tmp_path / "s.tif", stack, scale=(1, 0.1, 0.1))[0], plugin="napari-temseg"
    )
    assert layer.axis_labels == ("frame", "y", "x")
    viewer.dims.set_current_step(0, 1)
    ui["Image"].value = layer
    ui["Apply to"].value = "current frame"
    ui["Orientations"].value = 1
    w.run()
    _wait(qtbot, w)
    out = viewer.layers[-1]
    assert out.axis_labels == ("y", "x") and out.metadata["kind"] == "image"
    assert [a["name"] for a in out.metadata["axes"]] == ["y", "x"]

    warned = []
    monkeypatch.setattr("napari_temseg.widgets.denoise.show_warning", warned.append)
    pattern = viewer.add_image(stack[0], name="dp", metadata={"kind": "diffraction"})
    ui["Image"].value = pattern
    before = len(viewer.layers)
    w.run()
    assert not w._task.running and len(viewer.layers) == before
    assert warned == [
        "'dp' is a diffraction pattern; the denoisers are made for real-space micrographs."
    ]


def test_current_frame_when_the_view_shows_no_frame(controls, widget, qtbot, monkeypatch):
    """Rolled axes show a (frame, y) plane: frame 4's (y, x) was denoised instead."""
    viewer, w = widget
    ui = controls(w)
    warned: list[str] = []
    monkeypatch.setattr("napari_temseg.widgets.denoise.show_warning", warned.append)
    stack = np.random.default_rng(2).poisson(10, size=(5, 64, 80)).astype(np.float32)
    ui["Image"].value = viewer.add_image(stack, name="stack")
    ui["Apply to"].value = "current frame"
    viewer.dims.set_current_step(0, 3)
    viewer.dims.order = (0, 2, 1)  # transposed: still frame 3, shown turned
    w.run()
    _wait(qtbot, w)
    assert viewer.layers["stack denoised [frame 3]"].data.shape == (64, 80)
    viewer.dims.order = (2, 0, 1)  # rolled: the canvas shows (frame, y)
    w.run()
    assert not w._task.running and len(viewer.layers) == 2
    assert warned and "does not show one frame of 'stack'" in warned[-1]


def test_whole_stack(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    stack = np.random.default_rng(2).poisson(10, size=(2, 80, 80)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    ui["Image"].value = viewer.layers["stack"]
    ui["Apply to"].value = "whole stack"
    w.run()
    _wait(qtbot, w)
    assert viewer.layers["stack denoised"].data.shape == (2, 80, 80)


def test_cancel_adds_nothing(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    big = np.random.default_rng(3).poisson(5, size=(6, 512, 512)).astype(np.float32)
    viewer.add_image(big, name="big")
    ui["Image"].value = viewer.layers["big"]
    ui["Apply to"].value = "whole stack"
    w.run()
    w._task.cancel()
    _wait(qtbot, w)
    assert "big denoised" not in viewer.layers
    assert "cancelled" in w._status.value


def test_no_image_warns_and_starts_nothing(controls, widget):
    _viewer, w = widget
    ui = controls(w)
    assert ui["Image"].value is None  # empty viewer: nothing to pick
    w.run()
    assert not w._task.running


def test_bad_checkpoint_reports_failure(controls, widget, qtbot, tmp_path):
    viewer, w = widget
    ui = controls(w)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    ui["Checkpoint"].value = bad
    viewer.add_image(np.ones((64, 64), np.float32), name="ones")
    ui["Image"].value = viewer.layers["ones"]
    w.run()
    _wait(qtbot, w)
    assert "failed" in w._status.value
    assert "ones denoised" not in viewer.layers


def test_models_trained_in_the_session_appear_in_the_list(controls, widget, tiny_checkpoint):
    from napari_temseg.models.user import clear_user_models, register_user_model

    _viewer, w = widget
    ui = controls(w)
    try:
        register_user_model("my-denoiser", tiny_checkpoint, "pretrained on my images")
        values = (
            [v for _, v in ui["Model"].choices]
            if isinstance(ui["Model"].choices[0], tuple)
            else list(ui["Model"].choices)
        )
        assert str(tiny_checkpoint) in values
    finally:
        clear_user_models()


def test_closing_the_viewer_mid_run_stops_cleanly(
    controls, make_napari_viewer, tiny_checkpoint, qtbot
):
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    ui["Model"].value = CHECKPOINT_CHOICE
    ui["Checkpoint"].value = tiny_checkpoint
    ui["Device"].value = "cpu"
    ui["Tile size"].value = 64
    big = np.random.default_rng(4).poisson(5, size=(8, 512, 512)).astype(np.float32)
    viewer.add_image(big, name="big")
    ui["Image"].value = viewer.layers["big"]
    w.run()
    task = w._task
    assert task.running
    viewer.close()  # deletes the dock widget while the worker runs
    qtbot.waitUntil(lambda: not task.running, timeout=10_000)  # cancelled between tiles
    assert task._cancel.is_set()


def test_default_model_is_the_default_denoiser(controls, make_napari_viewer):
    from napari_temseg.models import DEFAULT_DENOISER, list_models

    if DEFAULT_DENOISER not in {m.name for m in list_models("denoise")}:
        pytest.skip("bundled weights not installed")
    w = DenoiseWidget(make_napari_viewer())
    ui = controls(w)
    assert ui["Model"].value == DEFAULT_DENOISER  # not whichever name sorts first


def test_binning_denoises_coarser_and_says_so(controls, widget, qtbot):
    from napari_temseg.engine import denoise

    viewer, w = widget
    ui = controls(w)
    img = np.random.default_rng(5).poisson(3, size=(128, 96)).astype(np.float32)
    viewer.add_image(img, name="low dose")
    ui["Image"].value = viewer.layers["low dose"]
    assert ui["Binning"].value == 1, "binning is off until chosen"
    ui["Binning"].value = 2
    ui.click("Run")
    _wait(qtbot, w)
    out = viewer.layers["low dose denoised"]
    assert out.metadata["denoised_binning"] == 2
    ckpt = str(ui["Checkpoint"].value)
    expected = denoise(img, ckpt, device="cpu", tile=64, overlap=8, bin=2, tta=2)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [8, 1])
def test_averaging_orientations_denoises_as_the_engine_and_says_so(controls, widget, qtbot, n):
    from napari_temseg.engine import denoise

    viewer, w = widget
    ui = controls(w)
    img = np.random.default_rng(6).poisson(3, size=(96, 80)).astype(np.float32)
    # denoised before, over eight orientations: what it recorded must not carry over
    earlier = {"denoised_orientations": 8, "disagreement_smoothed_px": (4.0, 16.0)}
    viewer.add_image(img, name="low dose", metadata=earlier)
    ui["Image"].value = viewer.layers["low dose"]
    assert ui["Orientations"].value == 2, "two by default: about half the error of one pass"
    ui["Orientations"].value = n
    ui.click("Run")
    _wait(qtbot, w)
    out = viewer.layers["low dose denoised"]
    ckpt = str(ui["Checkpoint"].value)
    expected = denoise(img, ckpt, device="cpu", tile=64, overlap=8, tta=n)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)
    assert out.metadata["denoised_orientations"] == n
    if n == 1:  # and nothing of the averaging an input denoised before had recorded
        assert "disagreement_smoothed_px" not in out.metadata
        return
    assert tuple(out.metadata["disagreement_smoothed_px"]) == (4.0, 16.0)
    two = denoise(img, ckpt, device="cpu", tile=64, overlap=8, tta=2)
    assert np.abs(out.data - two).max() > 1e-4  # the choice did something


def test_the_result_says_what_the_run_used_not_what_the_box_says_later(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    ckpt = str(ui["Checkpoint"].value)
    img = np.random.default_rng(7).poisson(3, size=(64, 64)).astype(np.float32)
    about = {"microscope": "Titan", "adapted": {"steps": 3}}  # an adapted model's result
    ui["Image"].value = viewer.add_image(img, name="raw", metadata=about)
    ui["Orientations"].value = 8
    ui["Binning"].value = 2
    w.run()
    ui["Orientations"].value = 1  # changed while the job runs: the result is delivered later
    ui["Binning"].value = 1
    ui["Model"].value = ui["Model"].choices[0]  # a bundled model, chosen meanwhile
    _wait(qtbot, w)
    meta = viewer.layers["raw denoised"].metadata
    assert meta["denoised_orientations"] == 8 and meta["denoised_binning"] == 2
    assert meta["denoised_with"] == ckpt  # the file, not "checkpoint file…" nor the new box
    assert meta["microscope"] == "Titan" and "adapted" not in meta  # this run adapted nothing

    # the result denoised again, differently: what it had recorded is replaced, not kept
    ui["Model"].value = CHECKPOINT_CHOICE
    ui["Image"].value = viewer.layers["raw denoised"]
    w.run()
    _wait(qtbot, w)
    again = viewer.layers["raw denoised denoised"].metadata
    assert again["denoised_orientations"] == 1 and "denoised_binning" not in again
    assert "disagreement_smoothed_px" not in again and again["denoised_with"] == ckpt


def test_the_status_names_the_layer_added_and_clears_on_a_refusal(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    img = np.random.default_rng(8).poisson(5, size=(64, 64)).astype(np.float32)
    ui["Image"].value = viewer.add_image(img, name="raw")
    for expected in ("raw denoised", "raw denoised [1]"):  # napari renames the second
        w.run()
        _wait(qtbot, w)
        assert w._status.value == f"done: '{expected}'"
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="shot", rgb=True)
    ui["Image"].value = viewer.layers["shot"]
    w.run()  # refused in one line (an RGB layer): the last run's "done" is not left standing
    assert not w._task.running and w._status.value == ""


def test_adapt_first_then_denoise_and_keep_the_adapted_model(controls, widget, qtbot, tmp_path):
    from napari_temseg.models import load_model
    from napari_temseg.models.user import clear_user_models
    from napari_temseg.synth import simulate

    viewer, w = widget
    ui = controls(w)
    s = simulate("hrtem", 128, dose=10.0, seed=3)
    viewer.add_image(s.noisy, name="raw", scale=(s.pixel_size_nm,) * 2, units=("nm", "nm"))
    ui["Image"].value = viewer.layers["raw"]
    assert ui["Adapt (s)"].value == 0, "adapting is off until chosen"
    assert ui["Save as"].native.isHidden(), "nothing adapted, nothing to save"
    ui["Adapt (s)"].value = 2
    ui["Orientations"].value = 1
    try:
        ui.click("Run")
        qtbot.waitUntil(lambda: w._status.value.startswith("adapting:"), timeout=20_000)
        _wait(qtbot, w)
        out = viewer.layers["raw denoised"]
        name = out.metadata["denoised_with"]
        assert name == "tiny-adapted-1" and out.metadata["adapted"]["steps"] > 0
        # one pass: a share of the batches came from this very image
        assert out.metadata["adapted"]["own_average"]["crops"] == [[128, 128]]
        # the adapted model is listed as the user's, and it is what denoised the layer
        (path,) = [v for v in ui["Model"].choices if "tiny-adapted-1" in str(v)]
        _model, adapted_meta = load_model(path, "cpu")
        lo, hi = adapted_meta["adapted"]["pixel_size_range_nm"]
        assert lo < s.pixel_size_nm < hi  # the layer's calibration was used
        from napari_temseg.engine import denoise

        expected = denoise(s.noisy, path, device="cpu", tile=64, overlap=8)
        np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)
        assert "validation PSNR" in w._status.value or "kept" in w._status.value
        # shown once a model was adapted: saved to a file, never over an existing one
        assert not ui["Save as"].native.isHidden()
        target = tmp_path / "kept.safetensors"
        ui["Save as"].value = target
        ui.click("Save adapted model…")
        assert load_model(str(target), "cpu")[1]["adapted"]["from"] == "tiny"
        before = target.stat().st_mtime_ns
        ui.click("Save adapted model…")
        assert target.stat().st_mtime_ns == before
        blocked = target / "inner.safetensors"  # its folder is a file: a warning, no traceback
        ui["Save as"].value = blocked
        ui.click("Save adapted model…")
        assert not blocked.exists() and target.stat().st_mtime_ns == before
        # averaged output: nothing is taught by the average it will itself be
        ui["Model"].value = ui["Model"].choices[0]
        ui["Orientations"].value = 2
        ui.click("Run")
        _wait(qtbot, w)
        averaged = viewer.layers[-1].metadata
        assert averaged["denoised_orientations"] == 2
        assert "own_average" not in averaged["adapted"]
        assert averaged["adapted"]["config"]["own_share"] == 0
    finally:
        clear_user_models()
