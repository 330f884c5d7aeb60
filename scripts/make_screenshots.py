"""Screenshots of the real napari window for the README and docs, taken under Xvfb.

Run: xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py

``napari_main.png``: the window as ``scripts/run.sh`` opens it. ``train_widget.png``: the
Train segmenter dock after a real fine-tuning run from the bundled STEM denoiser on the
STEM sample, with strokes painted through the Labels layer API (as a brush would) and the
live prediction shown.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication
from skimage.io import imsave

from napari_temseg._launch import build_viewer

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def settle(n: int = 20) -> None:
    for _ in range(n):
        QApplication.processEvents()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = build_viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.reset_view()
    settle()
    docks = list(viewer.window._dock_widgets.values())
    if docks:
        docks[0].raise_()
    settle()
    path = OUT / "napari_main.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {path}")
    train_screenshot(viewer)
    viewer.close()
    return 0


def train_screenshot(viewer, steps: int = 80) -> None:
    """Paint strokes on the STEM sample, train from the bundled denoiser, screenshot."""
    from napari_temseg._launch import PLUGIN
    from napari_temseg.engine.strokes import scribbles_from_mask

    dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train segmenter")
    noisy = next(layer for layer in viewer.layers if layer.name.endswith("noisy"))
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
    t0 = time.monotonic()
    while train._task.running and time.monotonic() - t0 < 600:
        settle(5)
        time.sleep(0.05)
    settle()
    path = OUT / "train_widget.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {path} ({train._status.value})")


if __name__ == "__main__":
    sys.exit(main())
