"""The Export dock widget driven in a real viewer: files, contents, no overwriting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_temseg.io import read
from napari_temseg.widgets.export import ExportWidget


@pytest.fixture
def viewer_with_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = np.zeros((3, 40, 50), np.int32)
    stack[:, 5:10, 5:10] = 1
    stack[:, 20:30, 20:25] = 2
    stack[1, 30:35, 30:35] = 2
    layer = viewer.add_labels(
        stack, name="particles mask", scale=(1.0, 0.25, 0.5), units=("pixel", "nm", "nm")
    )
    layer.metadata["class_names"] = ["support", "particle"]
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="other", units=("nm", "nm"))
    viewer.add_image(np.zeros((8, 8)), name="not labels", units=("nm", "nm"))
    return viewer


@pytest.fixture
def export_dock(viewer_with_labels, controls):
    """``dock, ui = export_dock(folder, fmt="npy", ...)``: the Export dock, options set."""

    def opened(folder, **options):
        widget = ExportWidget(viewer_with_labels)
        viewer_with_labels.window.add_dock_widget(widget)
        ui = controls(widget)
        ui["Labels layers"].value = options.pop("layers", ["particles mask"])
        ui["Format"].value = options.pop("fmt", "tiff")
        ui["Folder"].value = folder
        ui["semantic mask (class per pixel)"].value = options.pop("semantic", True)
        ui["instance mask (connected components per class)"].value = options.pop("instance", False)
        ui["one file per frame of a stack"].value = options.pop("per_frame", False)
        return widget, ui

    return opened


def test_only_labels_layers_are_offered(viewer_with_labels, export_dock, tmp_path):
    _, ui = export_dock(tmp_path)
    assert set(ui["Labels layers"].choices) == {"particles mask", "other"}
    viewer_with_labels.add_labels(np.zeros((4, 4), np.uint8), name="new one")
    assert "new one" in ui["Labels layers"].choices


def test_export_tiff_writes_calibrated_mask_and_sidecar(viewer_with_labels, export_dock, tmp_path):
    widget, ui = export_dock(tmp_path)
    ui["Export"].clicked.emit()
    mask = tmp_path / "particles_mask.tif"
    assert mask.is_file() and (tmp_path / "particles_mask.tif.json").is_file()
    image = read(mask)[0]
    assert np.array_equal(image.data, viewer_with_labels.layers["particles mask"].data)
    assert image.scale == (1.0, 0.25, 0.5)
    assert [a.name for a in image.axes] == ["frame", "y", "x"]
    side = json.loads((tmp_path / "particles_mask.tif.json").read_text())
    assert [c["name"] for c in side["classes"]] == ["support", "particle"]
    assert "wrote 1 mask file" in widget._status.value
    assert str(mask) in ui["Written"].value


def test_second_export_does_not_overwrite(viewer_with_labels, export_dock, tmp_path):
    widget, ui = export_dock(tmp_path)
    ui["Export"].clicked.emit()
    first = (tmp_path / "particles_mask.tif").read_bytes()
    viewer_with_labels.layers["particles mask"].data = np.zeros((3, 40, 50), np.int32)
    ui["Export"].clicked.emit()
    assert (tmp_path / "particles_mask.tif").read_bytes() == first
    second = read(tmp_path / "particles_mask_1.tif")[0]
    assert second.data.max() == 0
    assert "renamed" in widget._status.value and "particles_mask_1.tif" in widget._status.value


def test_instance_and_per_frame_export_npy(viewer_with_labels, export_dock, tmp_path):
    widget, _ = export_dock(tmp_path, fmt="npy", instance=True, per_frame=True)
    result = widget.export()
    assert len(result.masks) == 6  # semantic + instance for each of 3 frames
    frame = read(tmp_path / "particles_mask_frame0001.npy")[0]
    assert frame.scale == (0.25, 0.5)
    assert np.array_equal(frame.data, viewer_with_labels.layers["particles mask"].data[1])
    inst = read(tmp_path / "particles_mask_instances_frame0001.npy")[0]
    assert len(np.unique(inst.data)) == 4  # 0 + three particles/supports in frame 1
    ids0 = set(np.unique(read(tmp_path / "particles_mask_instances_frame0000.npy")[0].data))
    assert ids0 & set(np.unique(inst.data)) == {0}  # ids unique across the stack


def test_png_of_a_stack_without_per_frame_is_explained_not_raised(
    viewer_with_labels, export_dock, tmp_path
):
    widget, _ = export_dock(tmp_path, fmt="png")
    assert widget.export() is None
    assert "one file per frame" in widget._status.value
    assert not list(tmp_path.glob("*.png"))


def test_several_layers_at_once(viewer_with_labels, export_dock, tmp_path):
    widget, _ = export_dock(tmp_path, layers=["particles mask", "other"], fmt="png", per_frame=True)
    result = widget.export()
    assert (tmp_path / "other.png").is_file()
    assert len(result.masks) == 4


def test_nothing_selected_is_a_status_message(viewer_with_labels, export_dock, tmp_path):
    widget, _ = export_dock(tmp_path, layers=[])
    assert widget.export() is None
    assert "choose at least one" in widget._status.value
