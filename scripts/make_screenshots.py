"""Screenshots of the real napari window for the README and docs, taken under Xvfb.

Run: xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py
     (``--only pretrain export`` retakes just those)

``napari_main.png``: the window as ``scripts/run.sh`` opens it. ``train_widget.png``: the
Train segmenter dock after a real fine-tuning run from the bundled STEM denoiser on the
STEM sample, with strokes painted through the Labels layer API (as a brush would) and the
live prediction shown. ``pretrain_widget.png``: the Pretrain dock during/after a short
Poisson pretraining on the STEM sample (curves and before/after preview).
``export_widget.png``: the Export dock after writing a calibrated TIFF mask.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication
from skimage.io import imsave

from napari_temseg._launch import PLUGIN, build_viewer, widget_names

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def settle(n: int = 20) -> None:
    for _ in range(n):
        QApplication.processEvents()


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description="screenshots for the docs")
    p.add_argument("--only", nargs="*", default=None, help="main denoise pretrain train ...")
    only = p.parse_args().only
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = build_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)  # the screen the docks must fit
    viewer.reset_view()
    settle()
    first, _ = viewer.window.add_plugin_dock_widget(PLUGIN, widget_names()[0])  # already docked
    first.raise_()
    settle()
    if only is None or "main" in only:
        path = OUT / "napari_main.png"
        imsave(path, viewer.screenshot(canvas_only=False, flash=False))
        print(f"wrote {path}")
    shots = {
        "denoise": denoise_screenshot,
        "pretrain": pretrain_screenshot,
        "train": train_screenshot,
        "measure": measure_screenshot,
        "export": export_screenshot,
    }
    for name, shot in shots.items():
        if only is None or name in only:
            shot(viewer)
    viewer.close()
    return 0


def _wait(task, limit_s: float = 600) -> None:
    t0 = time.monotonic()
    while task.running and time.monotonic() - t0 < limit_s:
        settle(5)
        time.sleep(0.05)
    settle()


def _shot(viewer, name: str, note: str = "") -> None:
    path = OUT / name
    imsave(path, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {path}{f' ({note})' if note else ''}")


def denoise_screenshot(viewer) -> None:
    """The Denoise dock after denoising the STEM sample: noisy and denoised side by side."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise")
    noisy = next(layer for layer in viewer.layers if layer.name.endswith("noisy"))
    widget._image.value = noisy
    widget._device.value = "cpu"
    dock.raise_()
    widget.run()
    _wait(widget._task)
    viewer.grid.enabled = True
    for layer in viewer.layers:
        layer.visible = layer is noisy or layer.name.endswith("denoised")
    settle()
    _shot(viewer, "denoise_widget.png", widget._status.value)
    viewer.grid.enabled = False


def pretrain_screenshot(viewer, steps: int = 150) -> None:
    """Poisson pretraining of the bundled STEM denoiser on the STEM sample, screenshot."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Pretrain")
    noisy = next(layer for layer in viewer.layers if layer.name == "STEM noisy")
    for layer in viewer.layers:
        layer.visible = layer is noisy
    widget._layers.value = [noisy.name]
    widget._steps.value = steps
    widget._patch.value = 96
    widget._batch.value = 4
    widget._device.value = "cpu"
    dock.raise_()
    widget.start()
    t0 = time.monotonic()
    while widget.running and time.monotonic() - t0 < 900:
        settle(5)
        time.sleep(0.05)
    settle(40)
    preview = next(layer for layer in viewer.layers if layer.name.startswith("pretrain preview"))
    for layer in viewer.layers:
        layer.visible = layer is preview
    _fit(viewer, preview)
    _shot(viewer, "pretrain_widget.png", widget._status.value)


def _fit(viewer, layer) -> None:
    """Centre and zoom the canvas on one layer (reset_view fits every layer, hidden too)."""
    lo, hi = np.asarray(layer.extent.world)[:, -2:]
    viewer.camera.center = tuple((lo + hi) / 2)
    canvas = np.asarray(viewer.window._qt_viewer.canvas.size, float)  # (height, width)
    viewer.camera.zoom = 0.95 * float(np.min(canvas / np.maximum(hi - lo, 1e-9)))
    settle()


def export_screenshot(viewer) -> None:
    """The Export dock after writing the ground-truth mask as a calibrated TIFF."""
    import tempfile

    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export masks")
    truth = next(layer for layer in viewer.layers if layer.name.endswith("ground truth"))
    for layer in viewer.layers:
        layer.visible = layer is truth or layer.name == "STEM noisy"
    widget._layers.value = [truth.name]
    widget._instance.value = True
    widget._folder.value = Path(tempfile.mkdtemp(prefix="temseg-export-"))
    dock.raise_()
    widget.export()
    _fit(viewer, truth)
    _shot(viewer, "export_widget.png", widget._status.value)


def measure_screenshot(viewer) -> None:
    """The Measure dock with its table and histogram, on the ground-truth mask."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Measure")
    truth = next(layer for layer in viewer.layers if layer.name.endswith("ground truth"))
    for layer in viewer.layers:
        layer.visible = layer is truth or layer.name.endswith("noisy")
    widget._mask.value = truth
    dock.raise_()
    widget.run()
    _wait(widget._task)
    _shot(viewer, "measure_widget.png", widget._summary.value)


def train_screenshot(viewer, steps: int = 80) -> None:
    """Paint strokes on the STEM sample, train from the bundled denoiser, screenshot."""
    from napari_temseg.engine.strokes import scribbles_from_mask

    dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train segmenter")
    noisy = next(layer for layer in viewer.layers if layer.name == "STEM noisy")
    for layer in viewer.layers:
        layer.visible = layer is noisy
    truth = next(layer for layer in viewer.layers if layer.name.endswith("ground truth"))
    train._image.value = noisy
    strokes = train.add_strokes_layer()
    marks = scribbles_from_mask(np.asarray(truth.data), per_class=4, length=40, width=3, seed=0)
    for value in (1, 2):
        for coord in np.argwhere(marks == value):
            strokes.paint(tuple(coord), value, refresh=False)
    strokes.refresh()
    train._steps.value = steps
    train._device.value = "cpu"
    dock.raise_()
    train.train()
    _wait(train._task)
    _shot(viewer, "train_widget.png", train._status.value)


if __name__ == "__main__":
    sys.exit(main())
