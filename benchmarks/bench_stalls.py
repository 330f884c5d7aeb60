"""The viewer's event-loop stalls while each kind of dock job runs (max and p99 gap, ms).

    xvfb-run -a python benchmarks/bench_stalls.py --json /tmp/stalls.json   # ~6 min, 2 CPUs

One napari viewer, the real docks, their own Run/Train/Apply/Measure paths; a 10 ms QTimer
ticks throughout and every gap between ticks is recorded from the click (the job's
start is inside the measured window) to the job's end (or ``--seconds`` for the
trainings). Jobs, in order:

* denoise: the bundled denoiser on a real 1024² HRSTEM frame (``tkrem_hrstem_example.ser``
  from ../shared/testdata; a simulated frame when it is missing), tile 256, CPU;
* pretrain: the Pretrain dock on that frame, in its child process;
* fine-tune (thread) and fine-tune (child process): the Train dock on a simulated 1024²
  STEM frame with strokes from its mask; the same job body (``widgets.train.train_job``)
  runs in a worker thread (the dock's way) or, through the same runner, in a child
  process. Also the time from the click to the first preview in "<image> prediction";
* segment/apply: the Train dock's Apply of the trained segmenter to the 1024² frame;
* measure: the Measure dock on that segmentation.

Target: p99 under 100 ms for every job. The numbers depend on how loaded the machine is;
``worst`` lists the three longest gaps as (ms, seconds after the click they began).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


class Ticks:
    """Gaps between the ticks of a 10 ms QTimer: the event loop's stalls."""

    def __init__(self) -> None:
        from qtpy.QtCore import QElapsedTimer, QTimer

        self.clock = QElapsedTimer()
        self.gaps: list[float] = []
        self.at: list[float] = []  # when each gap began, seconds after the start
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self.gaps.append(now - self.last)
        self.at.append(self.last / 1000)
        self.last = now

    def start(self) -> None:
        self.clock.start()
        self.last = self.clock.elapsed()
        self.gaps, self.at = [], []
        self.timer.start(10)

    def stop(self) -> dict:
        self.timer.stop()
        g = np.array(self.gaps or [0.0], float)  # the first gap holds the click
        return {
            "ticks": len(g),
            "max_ms": float(g.max()),
            "p99_ms": float(np.percentile(g, 99)),
            "median_ms": float(np.median(g)),
            "over_100_ms": int((g > 100).sum()),
            "worst": [(int(g[i]), round(self.at[i], 1)) for i in np.argsort(g)[::-1][:3]],
        }


def spin(until: Callable[[], bool], timeout_s: float) -> float:
    """Run the event loop until ``until()`` or the timeout; seconds it took."""
    from qtpy.QtWidgets import QApplication

    app, t0 = QApplication.instance(), time.perf_counter()
    while not until() and time.perf_counter() - t0 < timeout_s:
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - t0


def measured(ticks: Ticks, click: Callable[[], None], until: Callable[[], bool], limit: float):
    """Ticks from just before ``click`` (run inside the event loop) until ``until()``."""
    from qtpy.QtCore import QTimer

    ticks.start()
    clicked = [False]

    def do() -> None:
        click()
        clicked[0] = True

    QTimer.singleShot(0, do)
    seconds = spin(lambda: clicked[0] and until(), limit)
    return {**ticks.stop(), "seconds": round(seconds, 1)}


def real_frame() -> tuple[np.ndarray, str]:
    path = TESTDATA / "tkrem_hrstem_example.ser"
    if path.is_file():
        from napari_temseg.io import read

        return np.asarray(read(path)[0].data, np.float32), path.name
    from napari_temseg.synth import simulate

    return simulate("stem", 1024, pixel_size_nm=0.05, dose=50, seed=3).noisy, "simulated"


def bench_denoise(viewer, ticks: Ticks, frame: np.ndarray) -> dict:
    from napari_temseg.widgets.denoise import DenoiseWidget

    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = viewer.add_image(frame, name="frame")
    w._device.value, w._tile.value = "cpu", 256
    out = measured(ticks, w.run, lambda: not w._task.running, 600)
    return {**out, "model": w._model.value}


def bench_pretrain(viewer, ticks: Ticks, seconds: float) -> dict:
    from napari_temseg.widgets.pretrain import PretrainWidget

    w = PretrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._layers.value = ["frame"]
    w._patch.value, w._batch.value, w._steps.value = 96, 8, 100_000
    w._device.value, w._start_model.value = "cpu", "scratch"
    w.advanced = {"preview_every_s": 2.0, "val_every": 20, "val_size": 16}
    t0 = time.perf_counter()
    out = measured(ticks, w.start, lambda: time.perf_counter() - t0 > seconds, seconds + 60)
    steps = w.curves.series("training")[0]
    w.stop()
    spin(lambda: not w.running, 120)
    return {**out, "steps_seen": steps[-1] if steps else 0}


def bench_finetune(viewer, ticks: Ticks, seconds: float, in_process: bool) -> dict:
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate
    from napari_temseg.widgets.train import TrainWidget

    s = simulate("stem", 1024, pixel_size_nm=0.1, dose=200, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=8, length=48, seed=0)
    name = "sim process" if in_process else "sim thread"
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = viewer.add_image(s.noisy, name=name)
    w.add_strokes_layer().data = strokes
    w._device.value, w._steps.value = "cpu", 100_000
    if in_process:  # the same job body, through the same runner, in a child
        start = w._task.start
        w._task.start = lambda fn, *a, **k: start(fn, *a, process=True, **k)
    t0 = time.perf_counter()
    first: list[float] = []

    def until() -> bool:
        if not first and f"{name} prediction" in viewer.layers:
            first.append(time.perf_counter() - t0)
        return time.perf_counter() - t0 > seconds

    out = measured(ticks, w.train, until, seconds + 60)
    steps = w._loss_plot.series("train loss")[0]
    w.stop()
    spin(lambda: not w._task.running, 120)
    return {
        **out,
        "first_preview_s": round(first[0], 1) if first else None,
        "steps_seen": steps[-1] if steps else 0,
        "widget": w,
    }


def bench_apply(viewer, ticks: Ticks, w) -> dict:
    w._scope.value = "current frame"
    return measured(ticks, w.apply, lambda: not w._apply_task.running, 600)


def bench_measure(viewer, ticks: Ticks, mask_name: str) -> dict:
    from napari_temseg.widgets.measure import MeasureWidget

    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._mask.value = viewer.layers[mask_name]
    w._classes.value = "2"
    out = measured(ticks, w.run, lambda: not w._task.running, 600)
    return {**out, "particles": 0 if w.result is None else len(w.result.table)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=45.0, help="per training job")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import napari
    import torch

    viewer = napari.Viewer(show=False)
    ticks = Ticks()
    frame, source = real_frame()
    rows: dict[str, dict] = {}
    rows["denoise (thread)"] = bench_denoise(viewer, ticks, frame)
    print("denoise", rows["denoise (thread)"], flush=True)
    rows["pretrain (child process)"] = bench_pretrain(viewer, ticks, args.seconds)
    print("pretrain", rows["pretrain (child process)"], flush=True)
    for in_process in (False, True):
        key = f"fine-tune ({'child process' if in_process else 'thread'})"
        rows[key] = bench_finetune(viewer, ticks, args.seconds, in_process)
        print(key, {k: v for k, v in rows[key].items() if k != "widget"}, flush=True)
    trained = rows["fine-tune (thread)"].pop("widget")
    rows["fine-tune (child process)"].pop("widget")
    rows["segment/apply (thread)"] = bench_apply(viewer, ticks, trained)
    print("apply", rows["segment/apply (thread)"], flush=True)
    rows["measure (thread)"] = bench_measure(viewer, ticks, "sim thread segmentation")
    print("measure", rows["measure (thread)"], flush=True)
    viewer.close()
    report = {"frame": source, "torch_threads": torch.get_num_threads(), "rows": rows}
    print("\n| job | max (ms) | p99 (ms) | median (ms) | gaps > 100 ms | ticks | seconds | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        notes = ", ".join(
            f"{k} {v}" for k, v in r.items() if k in ("first_preview_s", "steps_seen", "particles")
        )
        print(
            f"| {name} | {r['max_ms']:.0f} | {r['p99_ms']:.0f} | {r['median_ms']:.0f} | "
            f"{r['over_100_ms']} | {r['ticks']} | {r['seconds']} | {notes} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
