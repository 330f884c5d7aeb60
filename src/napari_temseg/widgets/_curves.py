"""A small live plot of training curves (loss, validation metric) for a dock widget.

Drawn with QPainter rather than matplotlib on purpose: it repaints on the GUI thread while
training runs beside it, and a matplotlib canvas cost 40 ms per redraw on an idle 2-core
machine and over 100 ms on a busy one (``docs/benchmarks.md``, viewer stalls), enough to
make the viewer stutter. Painting a few hundred points as polylines takes well under a
millisecond. Styled for napari's dark theme; redraws are throttled all the same.
"""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_temseg.engine.events import TrainEvent

COLORS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8")
BACKGROUND, FOREGROUND, GRID = "#262930", "#d0d6dd", "#3b3f47"


class LossCurves(QWidget):
    """Series of (step, value) points on one plot; log y-axis for losses."""

    def __init__(self, ylabel: str = "loss", logy: bool = True, min_redraw_s: float = 1.0):
        super().__init__()
        self._ylabel, self._logy = ylabel, logy
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._min_redraw_s = min_redraw_s
        self._last_draw = 0.0
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    # ------------------------------------------------------------------ data

    def add(self, series: str, step: int, value: float) -> None:
        if value is None or not math.isfinite(value) or (self._logy and value <= 0):
            return  # NaN or not plottable on a log axis
        xs, ys = self._series.setdefault(series, ([], []))
        xs.append(int(step))
        ys.append(float(value))
        if time.monotonic() - self._last_draw >= self._min_redraw_s:
            self.redraw()

    def add_event(self, ev: TrainEvent, train: str, val: str, every: int = 1) -> None:
        """Plot a training event: its smoothed loss (every ``every`` steps) on ``train``,
        a validation's loss on ``val``; previews and messages are not plotted."""
        if ev.kind == "step" and ev.step % every == 0:
            self.add(train, ev.step, ev.loss)
        elif ev.kind == "val" and ev.val_loss is not None:
            self.add(val, ev.step, ev.val_loss)

    def series(self, name: str) -> tuple[list[int], list[float]]:
        return self._series.get(name, ([], []))

    def clear(self) -> None:
        self._series.clear()
        self.redraw()

    def redraw(self) -> None:
        """Schedule a repaint (Qt merges several into one)."""
        self._last_draw = time.monotonic()
        self.update()

    # ------------------------------------------------------------------ drawing

    def _y(self, v: float) -> float:
        return math.log10(v) if self._logy else v

    def _ranges(self) -> tuple[float, float, float, float] | None:
        xs = [x for sx, _ in self._series.values() for x in sx]
        ys = [self._y(y) for _, sy in self._series.values() for y in sy]
        if not xs:
            return None
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 == x0:
            x1 = x0 + 1
        pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
        return x0, x1, y0 - pad, y1 + pad

    def _label(self, v: float) -> str:
        value = 10**v if self._logy else v
        return f"{value:.3g}"

    def paintEvent(self, event) -> None:  # Qt names it
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(BACKGROUND))
        font = QFont(self.font())
        font.setPointSizeF(7.5)
        p.setFont(font)
        fm = p.fontMetrics()
        left = fm.horizontalAdvance("0.000e+00") + 4
        plot = QRectF(left, 8, max(10, self.width() - left - 8), max(10, self.height() - 34))
        p.setPen(QPen(QColor(FOREGROUND)))
        p.drawText(
            QRectF(0, plot.bottom() + 14, self.width(), 14), Qt.AlignmentFlag.AlignHCenter, "step"
        )
        p.setPen(QPen(QColor(GRID)))
        p.drawRect(plot)
        ranges = self._ranges()
        if ranges is None:
            p.setPen(QPen(QColor(FOREGROUND)))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, f"{self._ylabel}: no data yet")
            p.end()
            return
        x0, x1, y0, y1 = ranges

        def point(x: float, y: float) -> QPointF:
            px = plot.left() + (x - x0) / (x1 - x0) * plot.width()
            py = plot.bottom() - (self._y(y) - y0) / (y1 - y0) * plot.height()
            return QPointF(px, py)

        p.setPen(QPen(QColor(FOREGROUND)))
        for frac in (0.0, 0.5, 1.0):
            v = y0 + frac * (y1 - y0)
            ty = plot.bottom() - frac * plot.height()
            p.drawText(QRectF(0, ty - 7, left - 4, 14), Qt.AlignmentFlag.AlignRight, self._label(v))
        for frac, align in ((0.0, Qt.AlignmentFlag.AlignLeft), (1.0, Qt.AlignmentFlag.AlignRight)):
            x = x0 + frac * (x1 - x0)
            p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), 12), align, f"{x:.0f}")
        legend = max(fm.horizontalAdvance(n) for n in self._series) + 20
        for i, (name, (xs, ys)) in enumerate(self._series.items()):
            color = QColor(COLORS[i % len(COLORS)])
            p.setPen(QPen(color, 1.4))
            pts = [point(x, y) for x, y in zip(xs, ys, strict=True)]
            if len(pts) > 1:
                p.drawPolyline(QPolygonF(pts))
            if len(pts) < 30:
                for q in pts:
                    p.drawEllipse(q, 1.8, 1.8)
            ly = plot.top() + 4 + 12 * i
            lx = plot.right() - legend
            p.drawLine(QPointF(lx, ly + 6), QPointF(lx + 12, ly + 6))
            p.setPen(QPen(QColor(FOREGROUND)))
            p.drawText(QRectF(lx + 15, ly, legend - 15, 12), Qt.AlignmentFlag.AlignLeft, name)
        p.setPen(QPen(QColor(FOREGROUND)))
        p.drawText(
            QRectF(plot.left() + 4, plot.top() + 2, 200, 12),
            Qt.AlignmentFlag.AlignLeft,
            self._ylabel,
        )
        p.end()
