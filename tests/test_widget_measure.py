"""Measure dock widget in a real viewer: table, sorting, selection, histogram, CSV."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

from napari_temseg.widgets._parts import camera
from napari_temseg.widgets.measure import MeasureWidget, parse_classes

PX = 0.2  # nm per pixel
RADII_NM = (2.0, 3.0, 4.0)  # three particles of known size, left to right


def discs(shape=(120, 260), translate_x_px=0) -> np.ndarray:
    """Support (1) with three particle discs (2) at known centres."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.ones(shape, dtype=np.uint8)
    for i, r in enumerate(RADII_NM):
        cy, cx = 60 * PX, (40 + 80 * i + translate_x_px) * PX
        mask[(yy * PX - cy) ** 2 + (xx * PX - cx) ** 2 <= r * r] = 2
    return mask


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def _measure(qtbot, w, timeout=30_000):
    w.run()
    qtbot.waitUntil(lambda: not w._task.running, timeout=timeout)
    assert w.result is not None


def _column(table, name: str) -> list[str]:
    """The cells of the column headed ``name``, as shown."""
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    col = headers.index(name)
    return [table.item(r, col).text() for r in range(table.rowCount())]


def test_measure_table_summary_histogram_and_particles_layer(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask", scale=(PX, PX), translate=(5.0, 10.0))
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    assert ui.table.rowCount() == 3
    diam = sorted(float(t) for t in _column(ui.table, "equivalent_diameter_nm"))
    assert diam == pytest.approx([2 * r for r in RADII_NM], rel=0.02)
    cx = sorted(float(t) for t in _column(ui.table, "centroid_x_nm"))
    assert cx == pytest.approx([10.0 + (40 + 80 * i) * PX for i in range(3)], abs=0.02)
    assert "3 particles" in w._summary.value and "coverage" in w._summary.value
    ax = w.histogram_axes
    assert ax is not None and len(ax.patches) >= 5
    assert sum(p.get_height() for p in ax.patches) == 3  # every particle is in a bar
    particles = viewer.layers["mask particles"]
    assert tuple(particles.scale) == pytest.approx((PX, PX))
    assert tuple(particles.translate) == pytest.approx((5.0, 10.0))
    assert sorted(np.unique(particles.data).tolist()) == [0, 1, 2, 3]


def test_sorting_by_a_column_is_numeric(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    headers = [ui.table.horizontalHeaderItem(c).text() for c in range(ui.table.columnCount())]
    col = headers.index("area_nm2")
    ui.table.sortItems(col, Qt.SortOrder.DescendingOrder)
    areas = [float(t) for t in _column(ui.table, "area_nm2")]
    assert areas == sorted(areas, reverse=True) and areas[0] > areas[-1]
    ui.table.sortItems(col, Qt.SortOrder.AscendingOrder)
    assert [float(t) for t in _column(ui.table, "area_nm2")] == sorted(areas)


def test_clicking_a_row_selects_and_centres_on_the_particle(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask", scale=(PX, PX), translate=(5.0, 10.0))
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    headers = [ui.table.horizontalHeaderItem(c).text() for c in range(ui.table.columnCount())]
    ui.table.sortItems(
        headers.index("area_nm2"), Qt.SortOrder.DescendingOrder
    )  # largest first: the 4 nm disc
    ui.table.resize(600, 300)  # the dock's window is not shown: give the table a size
    cell = ui.table.visualItemRect(ui.table.item(0, 1)).center()
    qtbot.mouseClick(ui.table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    assert ui.table.currentRow() == 0
    particles = viewer.layers["mask particles"]
    label = int(ui.table.item(0, headers.index("label")).text())
    assert particles.selected_label == label and particles.show_selected_label
    big = (particles.data == label).sum() * PX * PX
    assert big == pytest.approx(math.pi * 4.0**2, rel=0.02)
    cy, cx = camera(viewer).center[-2:]
    assert (cy, cx) == pytest.approx((5.0 + 60 * PX, 10.0 + 200 * PX), abs=0.05)
    ring = viewer.layers["selected particle"]
    assert ring.visible and ring.data[0] == pytest.approx([cy, cx])
    assert ring.size[0] > 8.0  # wider than the 8 nm particle it surrounds
    assert viewer.layers.selection.active is viewer.layers["mask"]  # user's layer stays active
    ui.table.clearSelection()
    assert not particles.show_selected_label and not ring.visible


def test_options_split_border_min_area_and_classes(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    mask = discs()
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    mask[(yy * PX - 0.0) ** 2 + (xx * PX - 30.0) ** 2 <= 9.0] = 3  # a class-3 cap on the edge
    viewer.add_labels(mask, name="mask", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    assert ui.table.rowCount() == 4
    ui["exclude particles touching the border"].value = True
    _measure(qtbot, w)
    assert ui.table.rowCount() == 3
    ui["Min. size (px)"].value = 500  # px, 20 nm²: drops the 2 nm disc (12.6 nm², 314 px)
    _measure(qtbot, w)
    assert ui.table.rowCount() == 2
    ui["exclude particles touching the border"].value = False
    ui["Min. size (px)"].value = 0
    ui["Particle classes"].value = "3"
    _measure(qtbot, w)
    assert _column(ui.table, "class") == ["3"]
    assert len(viewer.layers) == 2  # re-measuring updates "mask particles" in place
    assert np.unique(viewer.layers["mask particles"].data).tolist() == [0, 1]
    ui["Particle classes"].value = "two"
    w.run()
    assert "whole numbers" in w._status.value and not w._task.running


def test_split_touching_particles(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    yy, xx = np.mgrid[:100, :160]
    mask = np.ones((100, 160), np.uint8)
    for cx in (6.0, 13.6):  # 4 nm discs, centres 7.6 nm apart: touching
        mask[(yy * PX - 10.0) ** 2 + (xx * PX - cx) ** 2 <= 16.0] = 2
    viewer.add_labels(mask, name="pair", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["pair"]
    _measure(qtbot, w)
    assert ui.table.rowCount() == 1
    assert ui["Split distance (nm)"].native.isHidden()  # only relevant when splitting
    ui["split touching particles (watershed)"].value = True
    assert not ui["Split distance (nm)"].native.isHidden()
    _measure(qtbot, w)
    assert ui.table.rowCount() == 2
    areas = [float(t) for t in _column(ui.table, "area_nm2")]
    assert areas == pytest.approx([math.pi * 16.0] * 2, rel=0.05)


def test_intensity_image_adds_mean_intensity(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    mask = discs()
    viewer.add_labels(mask, name="mask", scale=(PX, PX))
    viewer.add_image(np.where(mask == 2, 50.0, 10.0), name="img", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    ui["Intensity image"].value = viewer.layers["img"]
    _measure(qtbot, w)
    assert {float(t) for t in _column(ui.table, "mean_intensity")} == {50.0}


def test_stack_current_frame_and_all_frames(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    stack = np.stack([discs(), np.ones((120, 260), np.uint8), discs(translate_x_px=10)])
    viewer.add_labels(stack, name="stack", scale=(1.0, PX, PX))
    ui["Mask"].value = viewer.layers["stack"]
    viewer.dims.set_current_step(0, 2)
    ui["Stack"].value = "current frame"
    _measure(qtbot, w)
    assert set(_column(ui.table, "frame")) == {"2"}
    assert "3 particles in frame 2" in w._summary.value
    particles = viewer.layers["stack particles"]
    assert particles.data.shape == (1, 120, 260)
    assert particles.translate[0] == pytest.approx(2.0)  # shown on frame 2 only
    ui["Stack"].value = "all frames"
    _measure(qtbot, w)
    assert ui.table.rowCount() == 6 and sorted(set(_column(ui.table, "frame"))) == ["0", "2"]
    assert particles.data.shape == stack.shape
    assert "in 3 frames" in w._summary.value
    viewer.dims.set_current_step(0, 1)
    row = next(r for r, f in enumerate(_column(ui.table, "frame")) if f == "0")
    ui.table.selectRow(row)
    assert viewer.dims.current_step[0] == 0  # jumped to the particle's frame
    viewer.dims.order = (2, 0, 1)  # rolled: the canvas shows (frame, y), no one frame
    _measure(qtbot, w)  # every frame: measured as before
    assert ui.table.rowCount() == 6
    ui["Stack"].value = "current frame"
    w.run()
    assert "does not show one frame of 'stack'" in w._status.value
    assert ui.table.rowCount() == 6  # the last table stays


def test_csv_export_writes_and_never_overwrites(controls, widget, qtbot, tmp_path):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    assert w.export_csv() is None and "Measure first" in w._status.value
    _measure(qtbot, w)
    assert Path(ui["CSV file"].value).name == "mask_particles.csv"  # a suggested name
    target = tmp_path / "sizes.csv"
    ui["CSV file"].value = target
    first = w.export_csv()
    assert first == target and first.is_file()
    table = pd.read_csv(first)
    assert len(table) == 3 and "equivalent_diameter_nm" in table.columns
    assert "bbox_y0_px" in table.columns  # hidden in the dock, kept in the file
    before = first.read_bytes()
    second = w.export_csv()
    assert second == tmp_path / "sizes_1.csv" and second.is_file()
    assert first.read_bytes() == before
    assert "exists and was kept" in w._status.value


def test_uncalibrated_layer_is_measured_in_pixels(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask")
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    assert "equivalent_diameter_px" in w.result.table.columns
    assert " px" in w._summary.value


def test_layer_in_micrometres_is_measured_in_nm(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    um = PX / 1000
    viewer.add_labels(discs(), name="mask", scale=(um, um), translate=(0.005, 0.01), units="µm")
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    table = w.result.table.sort_values("centroid_x_nm")
    assert table["equivalent_diameter_nm"].tolist() == pytest.approx(
        [2 * r for r in RADII_NM], rel=0.02
    )
    assert table["centroid_x_nm"].iloc[0] == pytest.approx(10.0 + 40 * PX, abs=0.02)
    ui.table.selectRow(0)  # the camera works in the layer's own unit (µm)
    row = w.result.table.iloc[ui.table.item(0, 0).data(Qt.ItemDataRole.UserRole + 1)]
    assert camera(viewer).center[-1] == pytest.approx(row["centroid_x_nm"] / 1000, abs=2e-5)


def test_empty_mask_reports_the_support_convention(controls, widget, qtbot):
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(np.ones((50, 50), np.uint8), name="blank", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["blank"]
    _measure(qtbot, w)
    assert ui.table.rowCount() == 0
    assert "no particles" in w._summary.value and "support" in w._status.value


def test_closing_the_viewer_while_measuring_is_harmless(controls, make_napari_viewer, qtbot):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    w = MeasureWidget(viewer)
    ui = controls(w)
    viewer.window.add_dock_widget(w)
    stack = np.stack([discs()] * 20)
    viewer.add_labels(stack, name="stack", scale=(1.0, PX, PX))
    ui["Mask"].value = viewer.layers["stack"]
    ui["Stack"].value = "all frames"
    w.run()
    assert w._task.running
    viewer.close()
    assert QThreadPool.globalInstance().waitForDone(30_000)
    qtbot.wait(50)  # deliver the late signals: they must not touch the closed dock
    assert w.result is None


def test_real_non_square_file_calibration_and_intensity(controls, widget, qtbot, testdata):
    """A DM3 with 0.2 nm (y) x 1 nm (x) pixels: a round particle in nm is measured round."""
    from napari_temseg.io.napari_hooks import read_layers

    viewer, w = widget
    ui = controls(w)
    data, meta, _ = read_layers(str(testdata / "ncem_float32_nonsquare.dm3"))[0]
    image = viewer.add_image(data, **meta)
    sy, sx = image.scale
    assert (sy, sx) == pytest.approx((0.2, 1.0))
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    r = 5.0  # nm: 50 rows tall, 10 columns wide
    disc = (yy * sy - 6.4) ** 2 + (xx * sx - 64.0) ** 2 <= r * r
    mask = np.where(disc, 2, 1).astype(np.uint8)
    viewer.add_labels(mask, name="mask", scale=image.scale, units=image.units)
    ui["Mask"].value = viewer.layers["mask"]
    ui["Intensity image"].value = image
    _measure(qtbot, w)
    row = w.result.table.iloc[0]
    assert row["area_nm2"] == pytest.approx(math.pi * r * r, rel=0.03)
    assert row["feret_max_nm"] == pytest.approx(2 * r, abs=1.001)  # one pixel along x
    assert row["feret_min_nm"] == pytest.approx(2 * r, abs=1.001)
    assert row["mean_intensity"] == pytest.approx(float(data[disc].mean()), rel=1e-5)


def test_parse_classes():
    assert parse_classes("") is None
    assert parse_classes("2, 3;4") == [2, 3, 4]
    with pytest.raises(ValueError, match=r"1\.\.K"):
        parse_classes("0")


def test_specks_are_not_particles_by_default(controls, widget, qtbot):
    """A network's mask with 1-3 px specks: the default minimum size leaves them out."""
    from napari_temseg.engine.measure import MIN_SIZE_PX

    viewer, w = widget
    ui = controls(w)
    mask = discs()
    for y, x, n in [(5, 10, 1), (100, 20, 2), (110, 200, 3), (10, 250, 1)]:
        mask[y, x : x + n] = 2
    viewer.add_labels(mask, name="mask", scale=(PX, PX), units=("nm", "nm"))
    ui["Mask"].value = viewer.layers["mask"]
    assert ui["Min. size (px)"].value == MIN_SIZE_PX
    assert w._min_size_nm.value == f"= {MIN_SIZE_PX * PX * PX:.3g} nm²"
    _measure(qtbot, w)
    assert ui.table.rowCount() == 3  # the three discs, not the specks
    ui["Min. size (px)"].value = 0
    assert "specks count" in w._min_size_nm.value
    _measure(qtbot, w)
    assert ui.table.rowCount() == 7


def test_atoms_section_finds_every_atom_as_points_with_a_table_and_exports_it(
    widget, qtbot, tmp_path
):
    """Paint 6 atoms and some support on frame 1 of a 2-frame stack, press Find atoms."""
    from atoms_data import atoms_frame, paint
    from napari_temseg.engine.atoms import detection_scores, match_points

    viewer, w = widget
    a, atoms_a = atoms_frame(12)
    b, atoms_b = atoms_frame(13, dose=90.0)
    image = viewer.add_image(np.stack([a, b]), name="haadf", scale=(1, 0.03, 0.03))
    image.units = ("pixel", "nm", "nm")
    strokes = np.zeros((2, *a.shape), np.uint8)
    strokes[1] = paint(b.shape, atoms_b, 6, seed=6)
    viewer.add_labels(strokes, name="strokes", scale=(1, 0.03, 0.03))
    panel = w.atoms
    assert not w._atoms_section.isExpanded()  # folded away until wanted
    panel.image.value = image
    panel.strokes.value = viewer.layers["strokes"]
    panel.find.native.click()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=60_000)
    points = viewer.layers["haadf atoms"]
    assert points.data.shape[1] == 3  # frame, y, x
    assert len(points.data) == panel.result.count
    assert {"frame", "atom", "y_nm", "x_nm", "integrated"} <= set(points.features.columns)
    assert np.allclose(points.scale, image.scale)
    for frame, truth in ((0, atoms_a), (1, atoms_b)):
        pts = points.data[points.data[:, 0] == frame][:, 1:]
        s = detection_scores(match_points(pts, truth, 2.0), len(pts), len(truth))
        assert s["f1"] > 0.9, (frame, s)
    assert "atoms" in panel.status.value and "painted frame 1" in panel.status.value
    panel.csv.value = tmp_path / "atoms.csv"
    panel.export.native.click()
    table = pd.read_csv(tmp_path / "atoms.csv")
    assert len(table) == panel.result.count and "y_nm" in table
    # nothing painted as atoms: one line in the dock, no new layer, no traceback
    viewer.layers["strokes"].data = np.where(strokes == 2, 0, strokes).astype(np.uint8)
    panel.result = None
    qtbot.waitUntil(lambda: panel.find.enabled)  # a click on a disabled button is lost
    panel.find.native.click()
    qtbot.waitUntil(lambda: "no atom painted" in panel.status.value, timeout=30_000)
    assert panel.result is None and len(viewer.layers) == 3


def test_atoms_section_confirms_faint_atoms_with_a_segmentation_layer(widget, qtbot):
    """'Confirm with' a segmentation: a dark frame's faint atoms are found where it says
    atom; the painted strokes themselves, or a layer of another shape, are refused."""
    from atoms_data import atoms_frame, paint
    from napari_temseg.engine.atoms import match_points

    viewer, w = widget
    a, atoms_a = atoms_frame(2, dose=80.0)
    b, atoms_b = atoms_frame(3, dose=18.0)  # under a quarter of the dose: faint atoms
    image = viewer.add_image(np.stack([a, b]), name="haadf")
    strokes = np.zeros((2, *a.shape), np.uint8)
    strokes[0] = paint(a.shape, atoms_a, 8, seed=1)
    viewer.add_labels(strokes, name="strokes")
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    seg = np.ones((2, *a.shape), np.uint8)  # what a segmenter trained on the strokes marks
    for frame, pts in ((0, atoms_a), (1, atoms_b)):
        for y, x in pts:
            seg[frame][(yy - y) ** 2 + (xx - x) ** 2 <= 6] = 2
    viewer.add_labels(seg, name="haadf segmentation")
    panel = w.atoms
    panel.image.value = image
    panel.strokes.value = viewer.layers["strokes"]
    assert panel.confirm.value is None  # off unless chosen

    def found_on_dark() -> int:
        panel.result = None
        qtbot.waitUntil(lambda: panel.find.enabled)  # the last run has let go of the button
        panel.find.native.click()
        qtbot.waitUntil(lambda: panel.result is not None, timeout=60_000)
        pts = viewer.layers["haadf atoms"].data
        return match_points(pts[pts[:, 0] == 1][:, 1:], atoms_b, 2.0)

    alone = found_on_dark()
    panel.confirm.value = viewer.layers["haadf segmentation"]
    confirmed = found_on_dark()
    assert confirmed >= alone + 20 and confirmed > 0.7 * len(atoms_b), (alone, confirmed)
    assert "confirmed by 'haadf segmentation'" in panel.status.value
    panel.confirm.value = viewer.layers["strokes"]
    qtbot.waitUntil(lambda: panel.find.enabled)  # a click on a disabled button is lost
    panel.find.native.click()
    assert "holds the painted strokes" in panel.status.value
    viewer.add_labels(seg[0], name="one frame")
    panel.confirm.value = viewer.layers["one frame"]
    panel.find.native.click()
    assert "differ in shape" in panel.status.value


def test_an_instance_mask_we_wrote_is_measured_as_instances(controls, widget, qtbot, tmp_path):
    from test_measure import _instance_export

    viewer, w = widget
    ui = controls(w)
    [layer] = viewer.open(_instance_export(tmp_path), plugin="napari-temseg")
    ui["Mask"].value = layer
    ui["Min. size (px)"].value = 0
    _measure(qtbot, w)
    assert sorted(_column(ui.table, "class")) == ["2", "2", "3"]


def test_the_particles_layer_measures_and_exports_as_the_particles_it_shows(
    controls, widget, qtbot, tmp_path
):
    """Measured again, the dock's own particles layer lost particle 1 (taken for the
    support) and its ids became classes; exported, it was written as a class mask."""
    from napari_temseg.io import read
    from napari_temseg.widgets.export import ExportWidget

    viewer, w = widget
    ui = controls(w)
    mask = discs()
    mask[mask == 2] = 3  # the particles' class is 3
    mask[:, :150][mask[:, :150] == 3] = 2  # ... and 2 for the first two
    viewer.add_labels(mask, name="mask", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    _measure(qtbot, w)
    first = sorted(_column(ui.table, "area_nm2"))
    particles = viewer.layers["mask particles"]
    ui["Mask"].value = particles
    _measure(qtbot, w)
    assert sorted(_column(ui.table, "area_nm2")) == first
    assert sorted(_column(ui.table, "class")) == ["2", "2", "3"]

    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export)
    ex = controls(export)
    ex["Labels layers"].value = [particles.name]
    ex["Folder"].value = tmp_path
    ex["instance mask (connected components per class)"].value = True
    ex["Export"].clicked.emit()
    result = export.last_result
    assert result is not None and len(result.masks) == 2
    semantic, instances = (read(p)[0] for p in result.masks)
    assert np.array_equal(np.asarray(semantic.data), np.where(mask > 1, mask, 0))
    assert not semantic.metadata["sidecar"].get("classes")  # not one "class" per particle
    assert np.array_equal(np.asarray(instances.data), particles.data)
    assert instances.metadata["sidecar"]["instance_class"] == {"1": 2, "2": 2, "3": 3}


def test_instances_ticked_on_a_class_mask_measures_without_a_traceback(controls, widget, qtbot):
    """The particles layer's id -> class table met pd.NA (classes unknown) and raised
    "boolean value of NA is ambiguous": no table, a stuck status."""
    viewer, w = widget
    ui = controls(w)
    viewer.add_labels(discs(), name="mask", scale=(PX, PX))
    ui["Mask"].value = viewer.layers["mask"]
    ui["instance mask (one id per particle)"].value = True
    _measure(qtbot, w)
    assert ui.table.rowCount() > 0 and w._status.value.startswith("measured")
    assert viewer.layers["mask particles"].metadata["sidecar"]["instance_class"] == {}


def test_a_mask_replaced_while_measured_gets_the_particles_of_what_was_measured(
    controls, widget, qtbot
):
    """The particles layer took the mask's scale when the job ended: replaced meanwhile by a
    stack, it raised a broadcast error and the result was lost."""
    viewer, w = widget
    ui = controls(w)
    mask = np.ones((768, 768), np.uint8)
    mask[100:140, 100:140] = mask[400:460, 500:560] = 2
    layer = viewer.add_labels(mask, name="big", scale=(PX, PX))
    ui["Mask"].value = layer
    w.run()
    layer.data = np.ones((3, 40, 40), np.uint8)  # while it is measured
    qtbot.waitUntil(lambda: not w._task.running, timeout=30_000)
    particles = viewer.layers["big particles"]
    assert particles.data.shape == (768, 768) and tuple(particles.scale) == pytest.approx((PX, PX))
    assert w._status.value == "measured 2 particles"
