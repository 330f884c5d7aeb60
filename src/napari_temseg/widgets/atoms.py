"""The Measure dock's Atoms section: paint a few atoms, get every atom as a point with a table.

A thin face on ``engine/atoms.py``: it reads the image and the painted Labels layer (and,
optionally, a segmentation of the image to confirm fainter candidates), fits the atom
finder and finds atoms on every frame in the background, and writes a Points layer
"<image> atoms" whose features are the per-atom table (napari shows them in the layer's
feature table and on hover), plus a CSV export of the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from magicgui.widgets import Container, FileEdit, Label, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels, Points

from napari_temseg.defaults import ATOM_CLASS
from napari_temseg.engine.atoms import AtomResult, find_atoms
from napari_temseg.engine.measure import write_csv
from napari_temseg.io.calibration import Calibration
from napari_temseg.widgets._tasks import Runner, one_line


def _find(
    image: np.ndarray,
    labels: np.ndarray,
    atom_class: int,
    pixel_size: tuple[float, float],
    unit: str,
    origin: tuple[float, float],
    segmentation: np.ndarray | None = None,
    progress: Any = None,
    cancel: Any = None,
) -> AtomResult:
    return find_atoms(image, labels, atom_class, pixel_size, unit, origin, segmentation)


class AtomsPanel(Container):
    """Image + painted atoms (one class) + painted support -> Points layer and atom table."""

    def __init__(self, napari_viewer: Any) -> None:
        """The image's pixel size is read as the Measure dock reads it
        (``io.calibration.Calibration``), so both sections report the same units."""
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="Image")
        self.strokes = create_widget(annotation=Labels, label="Painted atoms")
        self.strokes.tooltip = (
            "a Labels layer of the image's shape: a dot or small disc on a few atoms (the "
            "atom class) and a few strokes on the support between atoms (any other class)"
        )
        self.atom_class = SpinBox(label="Atom class", value=ATOM_CLASS, min=1, max=255)
        # Optional[...] is what gives magicgui's layer box its empty first choice
        self.confirm = create_widget(annotation=Optional[Labels], label="Confirm with")  # noqa: UP045
        self.confirm.tooltip = (
            "optional: this image segmented by a model trained on the same strokes (Train "
            "dock). Fainter candidates are then kept where it says 'atom': more of the faint "
            "atoms, fewer specks of the support"
        )
        self.find = PushButton(text="Find atoms")
        self.status = Label(label="", value="")
        self.status.native.setWordWrap(True)
        self.csv = FileEdit(label="CSV file", mode="w", filter="*.csv", value="")
        self.export = PushButton(text="Export atoms CSV")
        self.extend(
            [
                self.image,
                self.strokes,
                self.atom_class,
                self.confirm,
                self.find,
                self.status,
                self.csv,
                self.export,
            ]
        )
        self.result: AtomResult | None = None
        self._judge_name: str | None = None  # the segmentation that confirmed the last run
        self.points: Points | None = None
        self._runner = Runner(self.native, "Finding atoms")
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(lambda exc: setattr(self.status, "value", one_line(exc)))
        self._runner.finished.connect(lambda: setattr(self.find, "enabled", True))
        self.find.changed.connect(self.run)
        self.export.changed.connect(self.export_csv)

    def run(self) -> None:
        image, strokes = self.image.value, self.strokes.value
        if image is None or strokes is None:
            self.status.value = "choose an image and a Labels layer with painted atoms"
            return
        data = np.asarray(image.data)
        labels = np.asarray(strokes.data)
        if image.rgb or data.ndim not in (2, 3):
            self.status.value = f"atoms are found on a grey frame or stack, not shape {data.shape}"
            return
        if labels.shape != data.shape:
            self.status.value = (
                f"'{strokes.name}' {labels.shape} and '{image.name}' {data.shape} differ in "
                "shape: paint on a Labels layer made for this image"
            )
            return
        judge = self.confirm.value
        segmentation = None
        if judge is not None:
            if judge is strokes:
                self.status.value = (
                    f"'{judge.name}' holds the painted strokes: confirm with the segmentation "
                    "a trained model made of this image, or with nothing"
                )
                return
            segmentation = np.asarray(judge.data)
            if segmentation.shape != data.shape:
                self.status.value = (
                    f"'{judge.name}' {segmentation.shape} and '{image.name}' {data.shape} "
                    "differ in shape: confirm with a segmentation of this image"
                )
                return
        calibration = Calibration.from_layer(image)
        scale, origin, unit = calibration.yx, calibration.origin_yx, calibration.unit
        self.find.enabled = False
        self.status.value = "finding atoms…"
        self._pending: Image | None = image
        self._judge_name = None if judge is None else judge.name
        self._runner.start(
            _find, data, labels, int(self.atom_class.value), scale, unit, origin, segmentation
        )

    def _on_done(self, result: AtomResult) -> None:
        self.result = result
        image = self._pending
        f = result.finder
        frames = f"painted frame{'s' if len(result.painted_frames) > 1 else ''} " + ", ".join(
            str(i) for i in result.painted_frames
        )
        self.status.value = (
            f"{result.count} atoms (width sigma {f.sigma:.2f} px, fitted on {frames})"
            if image is not None and np.ndim(image.data) == 3
            else f"{result.count} atoms (width sigma {f.sigma:.2f} px)"
        )
        if self._judge_name:
            self.status.value += f", confirmed by '{self._judge_name}'"
        if result.warnings:
            frames = ", ".join(str(i) for i, _ in result.warnings)
            self.status.value += f". Unsure on frame(s) {frames}: {result.warnings[0][1]}"
        if image is None or image not in self._viewer.layers:
            return
        name = f"{image.name} atoms"
        pts = result.points()
        features = result.table.reset_index(drop=True)
        if self.points is not None and self.points in self._viewer.layers:
            self.points.data = pts
            self.points.features = features
            self.points.size = 4 * f.sigma
        else:
            self.points = self._viewer.add_points(
                pts,
                name=name,
                features=features,
                size=4 * f.sigma,
                face_color="transparent",
                border_color="yellow",
                border_width=0.1,
                scale=image.scale,
                translate=image.translate,
            )
        if not self.csv.value or str(self.csv.value) in ("", "."):
            src = (image.source.path or "") if getattr(image, "source", None) else ""
            folder = Path(src).parent if src else Path.cwd()
            self.csv.value = folder / f"{image.name}_atoms.csv"

    def export_csv(self) -> Path | None:
        if self.result is None:
            self.status.value = "find atoms first"
            return None
        target = Path(str(self.csv.value)) if str(self.csv.value) not in ("", ".") else None
        if target is None:
            self.status.value = "choose a CSV file"
            return None
        try:
            path = write_csv(self.result.table, target)
        except (OSError, ValueError) as exc:
            self.status.value = f"could not write the CSV: {exc}"
            return None
        self.status.value = f"wrote {path.name} ({self.result.count} atoms)"
        return path
