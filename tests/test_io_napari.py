"""The npe2 reader and writers as napari uses them, in a real viewer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_temseg.io import read
from napari_temseg.io import readers as readers_module
from napari_temseg.io.napari_hooks import NULL_LAYER, get_reader, read_layers


@pytest.fixture
def notes():
    """Notifications napari receives during the test: (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(notification) -> None:
        seen.append((str(notification.severity), notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def test_get_reader_declines_what_is_not_ours(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "not_a_tiff.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    (tmp_path / "not.npy").write_bytes(b"hello world")
    np.save(tmp_path / "ok.npy", np.zeros((3, 3)))
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader(str(tmp_path / "not_a_tiff.tif")) is None  # other plugins may try
    assert get_reader(str(tmp_path / "not.npy")) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "ok.npy"), str(tmp_path / "a.png")]) is None
    assert callable(get_reader(str(tmp_path / "ok.npy")))
    # a damaged microscope file is still ours: we explain what is wrong with it
    (tmp_path / "broken.dm4").write_bytes(b"\x00" * 10)
    assert callable(get_reader(str(tmp_path / "broken.dm4")))


def test_layer_data_carries_scale_units_axes_and_metadata(testdata, notes):
    [(data, meta, kind)] = read_layers(str(testdata / "ncem_float32_nonsquare.dm4"))
    assert kind == "image" and data.shape == (64, 128)
    assert meta["scale"] == pytest.approx((0.2, 1.0))
    assert meta["units"] == ("nm", "nm") and meta["axis_labels"] == ("y", "x")
    assert meta["name"] == "ncem_float32_nonsquare"
    assert meta["metadata"]["original_units"] == ["A", "nm"]
    assert meta["metadata"]["path"].endswith("ncem_float32_nonsquare.dm4")
    assert not notes


def test_reader_never_raises_and_returns_the_null_sentinel(tmp_path, notes):
    (tmp_path / "broken.dm4").write_bytes(b"\x00\x00\x00\x04" + b"\xff" * 200)
    assert read_layers(str(tmp_path / "broken.dm4")) == NULL_LAYER
    assert notes and notes[-1][0] == "error" and "broken.dm4" in notes[-1][1]


def test_lazy_stack_gets_contrast_limits_from_three_frames_only(tmp_path, monkeypatch):
    import mrcfile

    data = np.arange(8 * 128 * 128, dtype=np.float32).reshape(8, 128, 128)
    with mrcfile.new(tmp_path / "movie.mrcs") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 16)
    [(lazy, meta, _)] = read_layers(str(tmp_path / "movie.mrcs"))
    assert isinstance(lazy, np.memmap)
    lo, hi = meta["contrast_limits"]
    # the first, middle and last frames were looked at: the late ones are not white
    assert lo < data[0].max() and data[-1].min() < hi <= data[-1].max()
    assert meta["scale"] == pytest.approx((1.0, 0.15, 0.15))
    assert meta["axis_labels"] == ("frame", "y", "x")


def test_viewer_opens_a_dm4_with_its_calibration(make_napari_viewer, testdata, notes):
    viewer = make_napari_viewer()
    layers = viewer.open(str(testdata / "ncem_3d_int16_64x65x66.dm4"), plugin="napari-temseg")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == (66, 65, 64)
    assert tuple(layer.scale) == pytest.approx((4000.0, 3.0, 0.002))
    assert [str(u) for u in layer.units] == ["nanometer"] * 3
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    assert layer.metadata["kind"] == "stack"
    assert layer.metadata["original_units"] == ["um", "nm", "pm"]
    assert not [n for n in notes if n[0] == "error"]


def test_viewer_opens_a_velox_emd_with_microscope_metadata(make_napari_viewer, testdata):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(testdata / "velox_camera_ceta_imaging.emd"), plugin="napari-temseg")
    assert tuple(layer.scale) == pytest.approx((3.13884, 3.13884), rel=1e-5)
    assert layer.metadata["voltage_kV"] == pytest.approx(300.0)


def test_viewer_notifies_for_the_eels_spectrum_and_does_not_crash(
    make_napari_viewer, testdata, notes
):
    viewer = make_napari_viewer()
    layers = viewer.open(str(testdata / "ncem_08_carbon.dm3"), plugin="napari-temseg")
    assert layers == [] and len(viewer.layers) == 0
    warnings = [m for s, m in notes if s == "warning"]
    assert any("ncem_08_carbon.dm3" in m and "EELS spectrum" in m for m in warnings), notes


def test_viewer_reports_a_truncated_file(make_napari_viewer, testdata, tmp_path, notes):
    raw = (testdata / "ncem_float32_nonsquare.dm4").read_bytes()
    (tmp_path / "cut.dm4").write_bytes(raw[: len(raw) // 3])
    viewer = make_napari_viewer()
    assert viewer.open(str(tmp_path / "cut.dm4"), plugin="napari-temseg") == []
    errors = [m for s, m in notes if s == "error"]
    assert errors and "cut.dm4" in errors[-1] and "truncated" in errors[-1]


def test_viewer_chooses_our_reader_for_a_dm4_without_being_told(make_napari_viewer, testdata):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(testdata / "ncem_float32_nonsquare.dm3"), plugin=None)
    assert tuple(layer.scale) == pytest.approx((0.2, 1.0))


@pytest.mark.parametrize("ext", [".tif", ".npy"])
def test_labels_layer_saved_through_napari_reads_back(make_napari_viewer, tmp_path, ext):
    viewer = make_napari_viewer()
    labels = np.zeros((20, 30), np.int32)
    labels[2:8, 3:9] = 1
    labels[10:15, 10:20] = 2
    layer = viewer.add_labels(labels, scale=(0.4, 0.5), units=("nm", "nm"), name="mask")
    layer.metadata["class_names"] = {1: "support", 2: "particle"}
    written = viewer.layers.save(
        str(tmp_path / f"mask{ext}"), selected=False, plugin="napari-temseg"
    )
    assert written and written[0].endswith(ext)
    image = read(written[0])[0]
    assert np.array_equal(image.data, labels) and image.scale == (0.4, 0.5)
    side = json.loads((tmp_path / f"mask{ext}.json").read_text())
    assert [c["name"] for c in side["classes"]] == ["support", "particle"]
    assert all(c["color"].startswith("#") for c in side["classes"])  # from the layer colormap
    # opened again: a Labels layer with its classes, as saved (it came back as an image,
    # which the Measure dock could not pick)
    [back] = viewer.open(written[0], plugin="napari-temseg")
    from napari.layers import Labels

    assert isinstance(back, Labels) and np.array_equal(back.data, labels)
    assert tuple(back.scale) == pytest.approx((0.4, 0.5))
    assert back.metadata["class_names"] == {1: "support", 2: "particle"}
    colour = {c["value"]: c["color"] for c in side["classes"]}
    shown = back.colormap.map(np.array([2]))[0][:3]
    assert np.allclose(shown, [int(colour[2][i : i + 2], 16) / 255 for i in (1, 3, 5)], atol=0.01)
    from napari_temseg.io.napari_hooks import class_info

    names, _ = class_info(back.data, {"metadata": back.metadata})
    assert names == {1: "support", 2: "particle"}  # what Export and Measure read


def test_image_layer_saved_as_float32_tiff(make_napari_viewer, testdata, tmp_path):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(testdata / "ncem_float32_nonsquare.dm4"), plugin="napari-temseg")
    written = viewer.layers.save(str(tmp_path / "img.tif"), selected=False, plugin="napari-temseg")
    image = read(written[0])[0]
    assert image.dtype == np.float32 and np.array_equal(image.data, layer.data)
    assert image.scale == pytest.approx((0.2, 1.0))
    with tifffile.TiffFile(written[0]) as tf:
        assert tf.imagej_metadata["unit"] == "nm"


def test_viewer_shows_a_lazy_compressed_stack(make_napari_viewer, tmp_path, monkeypatch):
    import dask.array as da

    data = np.arange(12 * 64 * 64, dtype=np.uint16).reshape(12, 64, 64)
    tifffile.imwrite(
        tmp_path / "movie.tif",
        data,
        imagej=True,
        compression="lzw",
        resolution=(5.0, 5.0),
        metadata={"axes": "TYX", "unit": "nm"},
    )
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1024)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "movie.tif"), plugin="napari-temseg")
    assert isinstance(layer.data, da.Array)
    assert tuple(layer.scale) == pytest.approx((1.0, 0.2, 0.2))
    viewer.dims.set_point(0, 7)
    # world position (frame 7, y 10 px * 0.2 nm, x 20 px * 0.2 nm)
    assert layer.get_value((7.0, 2.0, 4.0), world=True) == data[7, 10, 20]
