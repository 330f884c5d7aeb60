"""Measure dock widget: particle sizes from a Labels layer, as a table, a histogram and a CSV.

Thin by design: it reads the mask (and optionally an image for mean intensity), the
layer's calibration (nm per pixel, from ``layer.scale``/``layer.units``) and the options,
and hands them to ``engine.measure.measure`` in a worker thread (a 2k image with a
thousand particles takes about 1 s on two CPU cores, 2-3 s with splitting: too long
to freeze the viewer). The result comes back as a sortable table, a summary line, a size
histogram, and a "<mask> particles" Labels layer holding the measured particles, whose
ids are the table's ``label`` column: clicking a row shows that particle alone, rings it
and centres on it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    RadioButtons,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from napari_temseg.engine.measure import MIN_SIZE_PX, Measurement, measure, write_csv
from napari_temseg.io.calibration import Calibration
from napari_temseg.io.sidecar import instance_classes
from napari_temseg.widgets._layout import section, tabify_when_docked
from napari_temseg.widgets._parts import NO_FRAME_SHOWN, camera, frame_index
from napari_temseg.widgets._tasks import Runner
from napari_temseg.widgets.atoms import AtomsPanel

SCOPES = ("current frame", "all frames")
HIDDEN_COLUMNS = ("bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px")  # kept in the CSV
SORT_KEY = Qt.ItemDataRole.UserRole
ROW_KEY = Qt.ItemDataRole.UserRole + 1


def parse_classes(text: str) -> list[int] | None:
    """ "2, 3" -> [2, 3]; empty -> None (all classes but 1). ValueError names the bad part."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    if not parts:
        return None
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"particle classes must be whole numbers like '2, 3', got {text!r}"
        ) from None
    if any(v <= 0 for v in values):
        raise ValueError("particle classes are label values 1..K (0 means unlabelled)")
    return values


def _format(value: Any) -> tuple[str, float]:
    """Display text and numeric sort key of one table cell (blank and last if missing)."""
    if value is None or pd.isna(value):
        return "", math.inf
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else ""), float(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value)), float(value)
    v = float(value)
    return (f"{v:.4g}" if abs(v) < 100 else f"{v:.1f}"), v


class NumericItem(QTableWidgetItem):
    """A cell that sorts by its number, not its text ("10" after "9")."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_KEY), other.data(SORT_KEY)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return mine < theirs


def _theme_colors(viewer: Any) -> dict[str, str]:
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return {
            "bg": theme.background.as_hex(),
            "fg": theme.text.as_hex(),
            "bar": theme.highlight.as_hex(),
            "edge": theme.foreground.as_hex(),
        }
    except Exception:  # an unknown custom theme: napari's dark defaults
        return {"bg": "#262930", "fg": "#f0f1f2", "bar": "#6a6a6a", "edge": "#414851"}


class MeasureWidget(Container):
    """Measure the particles of a Labels layer: table, summary, histogram, CSV export."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        tabify_when_docked(self)  # a tab beside this plugin's other docks
        self._viewer = napari_viewer
        self._mask = create_widget(annotation=Labels, label="Mask")
        self._image = create_widget(annotation=Image | None, label="Intensity image")
        self._classes = LineEdit(label="Particle classes", value="")
        self._classes.tooltip = (
            "label values that are particles, e.g. '2, 3'; empty: every class except 1, "
            "which is support/background by the project's convention"
        )
        self._instances = CheckBox(text="instance mask (one id per particle)")
        self._split = CheckBox(text="split touching particles (watershed)")
        self._min_distance = FloatSpinBox(
            label="Split distance (nm)", value=0.0, min=0.0, max=1e6, step=0.5, visible=False
        )
        self._min_distance.tooltip = (
            "minimum distance between particle centres; larger merges more. "
            "0: automatic (the median particle radius)"
        )
        self._exclude_border = CheckBox(text="exclude particles touching the border")
        self._min_size = SpinBox(label="Min. size (px)", value=MIN_SIZE_PX, min=0, max=10**9)
        self._min_size.tooltip = (
            "particles smaller than this many pixels are not measured, and specks and "
            "pinholes of that size are cleaned from the mask first; 0: measure the mask as is"
        )
        self._min_size_nm = Label(value="")
        min_size_row = Container(  # the size in pixels and, beside it, in nm²
            layout="horizontal", labels=False, widgets=[self._min_size, self._min_size_nm]
        )
        min_size_row.margins = (0, 0, 0, 0)
        min_size_row.label = "Min. size (px)"
        self._scope = RadioButtons(label="Stack", choices=SCOPES, value=SCOPES[0])
        self._measure = PushButton(text="Measure")
        self._summary = Label(label="", value="")
        self.extend(
            [
                self._mask,
                self._image,
                self._classes,
                self._instances,
                self._split,
                self._min_distance,
                self._exclude_border,
                min_size_row,
                self._scope,
                self._measure,
                self._summary,
            ]
        )
        self._table = self._make_table()
        self._figure, self._canvas = self._make_canvas()
        self._csv = FileEdit(label="CSV file", mode="w", filter="*.csv", value="")
        self._export = PushButton(text="Export CSV")
        self._status = Label(label="", value="")
        lower = Container(labels=True, widgets=[self._csv, self._export, self._status])
        lower.margins = (0, 0, 0, 0)
        for label in (self._summary, self._status):
            label.native.setWordWrap(True)  # long lines must not widen the dock
        layout = self.native.layout()
        layout.addWidget(self._table)
        layout.addWidget(self._canvas)
        layout.addWidget(lower.native)
        # atoms are points, not mask components: their own section (widgets/atoms.py)
        self.atoms = AtomsPanel(napari_viewer)
        self._atoms_section = section("Atoms (paint a few, find every atom)", [self.atoms])
        layout.addWidget(self._atoms_section)
        self._lower = lower

        self._task = Runner(self.native, "Measurement")
        self._task.done.connect(self._on_done)
        self._task.failed.connect(self._on_failed)
        self._task.cancelled.connect(lambda: setattr(self._status, "value", "cancelled"))
        self._task.finished.connect(self._on_finished)
        self._split.changed.connect(lambda on: setattr(self._min_distance, "visible", on))
        self._min_size.changed.connect(self._show_min_area)
        self._mask.changed.connect(self._show_min_area)
        self._show_min_area()
        self._measure.changed.connect(self.run)
        self._export.changed.connect(self.export_csv)
        self._table.itemSelectionChanged.connect(self._on_row_selected)

        self.result: Measurement | None = None
        self.particles: Labels | None = None  # the "<mask> particles" layer
        self.marker: Points | None = None  # ring around the particle picked in the table
        self._job: dict[str, Any] | None = None  # what the shown result was made from
        self._pending: dict[str, Any] | None = None  # what the running one is made from
        self._auto_csv: Path | None = None

    # ------------------------------------------------------------------ building

    def reset_choices(self, *args: Any) -> None:
        """Layer lists follow the viewer's layers, the Atoms section's too."""
        super().reset_choices(*args)
        self.atoms.reset_choices()

    def _make_table(self) -> QTableWidget:
        table = QTableWidget(0, 0)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSortingEnabled(True)
        table.verticalHeader().setVisible(False)
        table.setMinimumHeight(180)
        return table

    def _make_canvas(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4, 1.9), dpi=90)  # 171 px: the dock fits a 1000 px screen
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(170)
        return figure, canvas

    # ------------------------------------------------------------------ measuring

    def run(self) -> None:
        """Start measuring the chosen mask with the current options (in the background)."""
        if self._task.running:
            self._status.value = "already measuring…"
            return
        layer = self._mask.value
        if layer is None:
            show_warning("Choose a Labels layer (the mask) to measure.")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            classes = parse_classes(self._classes.value)
        except ValueError as exc:
            self._status.value = str(exc)
            return
        calibration = Calibration.from_layer(layer)
        scale, translate, unit = calibration.yx, calibration.origin_yx, calibration.unit
        idx = frame_index(self._viewer, layer)
        if idx is None and layer.ndim == 3 and self._scope.value != SCOPES[0]:
            idx = (0,)  # every frame of a stack: which one is shown does not matter
        elif idx is None:  # one frame, or the stack an outer axis's position selects
            self._status.value = NO_FRAME_SHOWN.format(layer.name)
            return
        frames = None
        if idx:
            data = data[idx[:-1]]  # (T, Y, X): the stack the frame axis runs through
            if self._scope.value == SCOPES[0]:
                frames = [idx[-1]]
        image = self._intensity_source(layer, idx)
        self._pending = {
            "layer": layer,
            "idx": idx,
            "scale": scale,
            "translate": translate,
            # where the mask lay when measured: its data may be replaced before the end
            "placement": (tuple(layer.scale), tuple(layer.translate), tuple(layer.units)),
        }
        self._measure.enabled = False
        where = f" (frame {idx[-1]})" if frames else ""
        self._status.value = f"measuring '{layer.name}'{where}…"
        minimum = self._min_distance.value
        known = instance_classes(layer.metadata)  # an instance mask our writers wrote
        self._task.start(
            measure,
            data,
            image,
            scale,
            frames=frames,
            translate=translate,
            unit=unit,
            particle_classes=classes,
            instances=self._instances.value or known is not None,
            instance_class=known or None,
            split=self._split.value,
            split_min_distance_nm=minimum if minimum > 0 else None,
            exclude_border=self._exclude_border.value,
            min_size_px=int(self._min_size.value),
        )

    def _show_min_area(self, *_: Any) -> None:
        """Say what the minimum size is in nm² at the chosen mask's pixel size."""
        layer = self._mask.value
        n = int(self._min_size.value)
        if layer is None or n == 0:
            self._min_size_nm.value = "" if n else "specks count"
            return
        calibration = Calibration.from_layer(layer)
        sy, sx = calibration.yx
        self._min_size_nm.value = (
            f"= {n * sy * sx:.3g} {calibration.area_unit}"
            if calibration.calibrated
            else "(uncalibrated)"
        )

    def _intensity_source(self, mask_layer: Labels, idx: tuple[int, ...]) -> Any | None:
        layer = self._image.value
        if layer is None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        if layer.rgb or tuple(data.shape) != tuple(mask_layer.data.shape):
            show_warning(
                f"'{layer.name}' (shape {tuple(data.shape)}) does not match the mask "
                f"(shape {tuple(mask_layer.data.shape)}) pixel for pixel; "
                f"mean intensity is left out."
            )
            return None
        return data[idx[:-1]] if idx else data

    # ------------------------------------------------------------------ results (GUI thread)

    def _on_done(self, result: Measurement) -> None:
        self._job = self._pending  # the shown result and the job it came from change together
        self.result = result
        self._show_particles(result)
        self._fill_table(result)
        self._draw_histogram(result)
        self._summary.value = self._summary_text(result)
        count = len(result.table)
        self._status.value = f"measured {count} particle{'s' if count != 1 else ''}"
        if count == 0 and not self._instances.value and not self._classes.value.strip():
            self._status.value += (
                "; class 1 counts as support/background: to measure it, "
                "type 1 in 'Particle classes'"
            )
        self._suggest_csv_path()

    def _on_failed(self, exc: Exception) -> None:
        self._status.value = f"failed: {exc}"

    def _on_finished(self) -> None:
        self._measure.enabled = True

    def _summary_text(self, result: Measurement) -> str:
        s, u = result.summary, result.unit
        frames = ""
        if result.frames:
            n = len(result.frames)
            frames = f" in frame {result.frames[0]}" if n == 1 else f" in {n} frames"
        if not s["count"]:
            return f"no particles{frames}"
        std = s[f"std_equivalent_diameter_{u}"]
        spread = f" ± {std:.3g}" if not math.isnan(std) else ""
        return (
            f"{s['count']} particles{frames} · coverage {s['coverage']:.1%} · "
            f"eq. diameter {s[f'mean_equivalent_diameter_{u}']:.3g}{spread} {u} "
            f"(median {s[f'median_equivalent_diameter_{u}']:.3g}) · "
            f"mean area {s[f'mean_area_{u}2']:.3g} {u}²"
        )

    def _show_particles(self, result: Measurement) -> None:
        """Put the measured particles in a Labels layer aligned with the mask's frame(s)."""
        layer = self._job["layer"]
        idx = self._job["idx"]
        labels = result.labels
        scale, placed, units = self._job["placement"]
        translate = list(placed)
        if idx:  # (n, Y, X) for the measured frames, placed at their position in the stack
            labels = labels.reshape((1,) * (len(idx) - 1) + labels.shape)
            starts = (*idx[:-1], result.frames[0])
            for axis, start in enumerate(starts):
                translate[axis] += start * scale[axis]
        name = f"{layer.name} particles"
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if isinstance(existing, Labels):  # measuring the same mask again: update in place
            self.particles = existing
            self.particles.data = labels
            self.particles.scale = scale
            self.particles.translate = translate
            self.particles.show_selected_label = False
        else:
            with self._keep_active_layer():
                self.particles = self._viewer.add_labels(
                    labels,
                    name=name,
                    scale=scale,
                    translate=translate,
                    units=units,
                    opacity=0.6,
                )
        # what the ids are, as an instance mask's sidecar says: measured or exported again,
        # the layer's first id was dropped as support and the others became classes
        self.particles.metadata = {
            **self.particles.metadata,
            "sidecar": {
                "kind": "labels",
                "mask": "instance",
                "source": layer.name,
                "instance_class": _classes_of_ids(result.table),
            },
        }
        if self.marker is not None:
            self.marker.visible = False

    def _fill_table(self, result: Measurement) -> None:
        table = result.table
        names = [c for c in table.columns if c not in HIDDEN_COLUMNS]
        widget = self._table
        widget.blockSignals(True)
        widget.setSortingEnabled(False)
        widget.clearContents()
        widget.setColumnCount(len(names))
        widget.setRowCount(len(table))
        widget.setHorizontalHeaderLabels(names)
        columns = [table[name].tolist() for name in names]
        for row in range(len(table)):
            for col, values in enumerate(columns):
                text, key = _format(values[row])
                item = NumericItem(text)
                item.setData(SORT_KEY, key)
                item.setData(ROW_KEY, row)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                widget.setItem(row, col, item)
        widget.setSortingEnabled(True)
        widget.horizontalHeader().setSortIndicatorShown(True)
        widget.resizeColumnsToContents()
        widget.blockSignals(False)

    def _draw_histogram(self, result: Measurement) -> None:
        colors = _theme_colors(self._viewer)
        u = result.unit
        values = result.table[f"equivalent_diameter_{u}"].to_numpy(dtype=float)
        fig = self._figure
        fig.clear()
        fig.set_facecolor(colors["bg"])
        ax = fig.add_subplot()
        ax.set_facecolor(colors["bg"])
        if values.size:
            bins = int(min(40, max(5, math.ceil(math.sqrt(values.size)))))
            ax.hist(values, bins=bins, color=colors["bar"], edgecolor=colors["edge"])
        else:
            ax.text(0.5, 0.5, "no particles", ha="center", va="center", color=colors["fg"])
        ax.set_xlabel(f"equivalent diameter ({u})", color=colors["fg"], fontsize=8)
        ax.set_ylabel("count", color=colors["fg"], fontsize=8)
        ax.tick_params(colors=colors["fg"], labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(colors["fg"])
        fig.subplots_adjust(left=0.15, right=0.97, top=0.95, bottom=0.22)
        self._canvas.draw_idle()

    @property
    def histogram_axes(self):
        """The histogram's matplotlib axes (for scripts and tests)."""
        return self._figure.axes[0] if self._figure.axes else None

    # ------------------------------------------------------------------ selection

    @contextmanager
    def _keep_active_layer(self):
        """napari makes a new layer the active one; keep the user's (they may be painting)."""
        selection = self._viewer.layers.selection
        active = selection.active
        try:
            yield
        finally:
            if active is not None and active in self._viewer.layers:
                selection.active = active

    def _on_row_selected(self) -> None:
        rows = self._table.selectionModel().selectedRows()
        if not rows:
            if self.particles is not None:
                self.particles.show_selected_label = False
            if self.marker is not None:
                self.marker.visible = False
            return
        item = self._table.item(rows[0].row(), 0)
        self.select_particle(int(item.data(ROW_KEY)))

    def select_particle(self, row: int) -> None:
        """Show particle ``row`` of the result alone in the particles layer; centre on it."""
        if self.result is None or self.particles is None:
            return
        if self.particles not in self._viewer.layers:
            self._status.value = "the particles layer was removed; press Measure again"
            return
        rec = self.result.table.iloc[row]
        u = self.result.unit
        (sy, sx), (ty, tx) = self._job["scale"], self._job["translate"]
        y = (float(rec[f"centroid_y_{u}"]) - ty) / sy
        x = (float(rec[f"centroid_x_{u}"]) - tx) / sx
        lead = [0.0] * (self.particles.ndim - 2)
        if "frame" in rec.index:
            lead[-1] = float(int(rec["frame"]) - self.result.frames[0])
        world = self.particles.data_to_world([*lead, y, x])
        first = self._viewer.dims.ndim - self.particles.ndim
        for axis, value in enumerate(world[:-2]):
            self._viewer.dims.set_point(first + axis, value)
        self.particles.selected_label = int(rec["label"])
        self.particles.show_selected_label = True
        to_world = float(self.particles.scale[-1]) / sx  # nm -> the layer's world unit
        self._mark(world, float(rec[f"feret_max_{u}"]) * to_world)
        camera(self._viewer).center = tuple(float(w) for w in world[-2:])
        size = rec[f"equivalent_diameter_{u}"]
        self._status.value = f"particle {int(rec['label'])}: eq. diameter {size:.3g} {u}"

    def _mark(self, world: np.ndarray, size: float) -> None:
        """A yellow ring around the selected particle: easy to find at any zoom."""
        point = np.asarray([world], dtype=float)
        size = 1.3 * size + 4 * min(self.particles.scale[-2:])
        if self.marker is not None and self.marker in self._viewer.layers:
            if self.marker.ndim == point.shape[1]:
                self.marker.data = point
                self.marker.size = size
                self.marker.visible = True
                return
            self._viewer.layers.remove(self.marker)
        with self._keep_active_layer():
            self.marker = self._viewer.add_points(
                point,
                name="selected particle",
                size=size,
                face_color="transparent",
                border_color="yellow",
                border_width=0.12,  # relative to the size: a thin ring at any zoom
                units=self.particles.units,
            )

    # ------------------------------------------------------------------ export

    def _default_csv(self) -> Path:
        layer = self._job["layer"]
        from napari_temseg.io.export import safe_stem

        source = layer.metadata.get("path") or getattr(layer.source, "path", None)
        folder = Path(source).parent if source else Path.cwd()
        return folder / f"{safe_stem(layer.name)}_particles.csv"

    def _suggest_csv_path(self) -> None:
        current = Path(self._csv.value) if str(self._csv.value) not in ("", ".") else None
        if current is None or current == self._auto_csv:
            self._auto_csv = self._default_csv()
            self._csv.value = self._auto_csv

    def export_csv(self) -> Path | None:
        """Write the last table to the CSV path; an existing file gets a suffix, never lost."""
        if self.result is None:
            self._status.value = "press Measure first: there is no table to export"
            return None
        wanted = Path(self._csv.value)
        if str(self._csv.value) in ("", ".") or wanted.is_dir():
            folder = wanted if wanted.is_dir() else None
            wanted = self._default_csv()
            if folder is not None:
                wanted = folder / wanted.name
        try:
            written = write_csv(self.result.table, wanted)
        except OSError as exc:
            self._status.value = f"could not write {wanted}: {exc}"
            show_error(f"CSV export failed: {exc}")
            return None
        text = f"wrote {len(self.result.table)} rows to {written}"
        if written.name != wanted.with_suffix(".csv").name:
            text += f" ({wanted.name} exists and was kept)"
        self._status.value = text
        return written


def _classes_of_ids(table: Any) -> dict[str, int]:
    """id -> class of the measured particles; empty when not known (an instance mask of
    unknown classes) or when a stack's frames, which number their particles anew, give
    one id two classes."""
    if "class" not in table or "label" not in table:
        return {}
    seen: dict[int, set[int]] = {}
    for label, cls in zip(table["label"], table["class"], strict=True):
        if not pd.isna(cls):  # NaN or pd.NA: class not known
            seen.setdefault(int(label), set()).add(int(cls))
    if len(seen) < len(set(table["label"])) or any(len(c) > 1 for c in seen.values()):
        return {}
    return {str(i): c.pop() for i, c in seen.items()}
