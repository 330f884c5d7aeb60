"""A small live plot of training curves (loss, validation metric) for a dock widget.

Matplotlib's Qt canvas, styled to sit in napari's dark theme. Widgets call ``add`` from
the GUI thread as progress arrives; redraws are throttled so a fast training loop does
not spend its time drawing.
"""

from __future__ import annotations

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

COLORS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8")


class LossCurves(FigureCanvasQTAgg):
    """Series of (step, value) points on one axes; log y-axis for losses."""

    def __init__(self, ylabel: str = "loss", logy: bool = True, min_redraw_s: float = 1.0):
        fig = Figure(figsize=(3.2, 2.0), dpi=90, facecolor="#262930")
        super().__init__(fig)
        self.axes = fig.add_subplot(111)
        self._ylabel, self._logy = ylabel, logy
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._lines: dict = {}
        self._min_redraw_s = min_redraw_s
        self._last_draw = 0.0
        self.setMinimumHeight(160)
        self._style()

    def _style(self) -> None:
        ax = self.axes
        ax.set_facecolor("#262930")
        for spine in ax.spines.values():
            spine.set_color("#8f9aa8")
        ax.tick_params(colors="#d0d6dd", labelsize=7)
        ax.set_xlabel("step", color="#d0d6dd", fontsize=8)
        ax.set_ylabel(self._ylabel, color="#d0d6dd", fontsize=8)
        if self._logy:
            ax.set_yscale("log")
        self.figure.tight_layout()

    def add(self, series: str, step: int, value: float) -> None:
        if value is None or not (value == value) or (self._logy and value <= 0):
            return  # NaN or not plottable on a log axis
        xs, ys = self._series.setdefault(series, ([], []))
        xs.append(int(step))
        ys.append(float(value))
        if time.monotonic() - self._last_draw >= self._min_redraw_s:
            self.redraw()

    def series(self, name: str) -> tuple[list[int], list[float]]:
        return self._series.get(name, ([], []))

    def clear(self) -> None:
        self._series.clear()
        for line in self._lines.values():
            line.remove()
        self._lines.clear()
        legend = self.axes.get_legend()
        if legend is not None:
            legend.remove()
        self.redraw()

    def redraw(self) -> None:
        """Update the lines in place (no axes rebuild, no layout pass): a repaint must stay
        cheap, because it runs on the GUI thread while training runs beside it."""
        ax = self.axes
        new_series = False
        for name, (xs, ys) in self._series.items():
            line = self._lines.get(name)
            if line is None:
                color = COLORS[len(self._lines) % len(COLORS)]
                (line,) = ax.plot(xs, ys, color=color, lw=1.2, label=name)
                self._lines[name] = line
                new_series = True
            else:
                line.set_data(xs, ys)
            line.set_marker("." if len(xs) < 30 else "")
        if new_series:
            ax.legend(fontsize=7, facecolor="#262930", labelcolor="#d0d6dd", edgecolor="#8f9aa8")
        ax.relim()
        ax.autoscale_view()
        self.draw_idle()
        self._last_draw = time.monotonic()
