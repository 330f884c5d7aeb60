"""How fast the Train dock lets go: seconds from Stop, removing the image, or closing the
viewer to the end of the training thread.

    xvfb-run -a python benchmarks/bench_widget_stop.py --repeats 3

The widget tests assert only that each of these stops the training (issue 14: no timed
assertions in unit tests); the latency lives here. Targets the tests used to assert:
Stop under 5 s, removing the image and closing the viewer under 3 s (2 CPU threads).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np


def _train_then(action: str) -> float:
    """Start a long training in a fresh viewer, do ``action``, return seconds to the end."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate
    from napari_temseg.widgets.train import SCRATCH, TrainWidget

    s = simulate("stem", 128, pixel_size_nm=0.1, dose=200, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=4, length=24, seed=0)
    viewer = napari.Viewer(show=False)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._init.value, w._device.value, w._patch.value = SCRATCH, "cpu", 64
    image = viewer.add_image(s.noisy, name="raw")
    w._image.value = image
    w.add_strokes_layer().data = strokes.copy()
    w._steps.value = 5000
    task = w._task
    w.train()
    app = QApplication.instance()

    def until(done: Callable[[], bool], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.005)

    until(lambda: bool(w._loss_plot.series("train loss")[0]), 300)
    t0 = time.monotonic()
    {"stop": w.stop, "remove": lambda: viewer.layers.remove(image), "close": viewer.close}[action]()
    until(lambda: not task.running, 120)
    seconds = time.monotonic() - t0
    if action != "close":
        viewer.close()
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    report = {}
    for action in ("stop", "remove", "close"):
        times = [_train_then(action) for _ in range(args.repeats)]
        report[action] = {"median_s": float(np.median(times)), "max_s": float(max(times))}
        print(action, report[action], flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
