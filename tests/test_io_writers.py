"""Writers round trip through our readers: same data, same nm scale, class names kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_temseg.io import WriterError, instance_mask, read, write_image, write_labels
from napari_temseg.io.export import export_labels, free_path


@pytest.fixture
def labels():
    lab = np.zeros((3, 40, 50), np.int32)
    lab[:, 5:10, 5:10] = 1
    lab[:, 20:30, 20:25] = 2
    lab[1, 30:35, 30:35] = 2
    return lab


@pytest.mark.parametrize("fmt", ["tiff", "npy"])
@pytest.mark.parametrize("scale", [(7.0, 0.3, 0.25), (1.0, 0.0524071945734839, 0.0524071945734839)])
def test_labels_round_trip(tmp_path, labels, fmt, scale):
    files = write_labels(
        tmp_path / "mask", labels, scale=scale, class_names=["carbon", "particle"], fmt=fmt
    )
    assert files[0].endswith(".tif" if fmt == "tiff" else ".npy")
    assert files[1] == files[0] + ".json"
    image = read(files[0])[0]
    assert image.dtype == np.uint8
    assert np.array_equal(image.data, labels)
    assert image.scale == scale  # exactly, not just close
    expected_lead = "z" if scale[0] != 1.0 else "frame"
    assert [a.name for a in image.axes] == [expected_lead, "y", "x"]


def test_png_round_trip_2d(tmp_path, labels):
    files = write_labels(tmp_path / "m.png", labels[1], scale=(0.3, 0.25))
    image = read(files[0])[0]
    assert np.array_equal(image.data, labels[1]) and image.scale == (0.3, 0.25)


def test_png_refuses_3d_with_a_clear_message(tmp_path, labels):
    with pytest.raises(WriterError, match=r"PNG holds a single 2D image.*3-D \(3, 40, 50\)"):
        write_labels(tmp_path / "m.png", labels)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_sidecar_has_class_names_colours_and_scale(tmp_path, labels):
    files = write_labels(
        tmp_path / "m.tif",
        labels,
        scale=(2.0, 0.5, 0.5),
        class_names={1: "support", 2: "particle"},
        class_colors={1: (1.0, 0.0, 0.0, 1.0), 2: "#00ff00"},
    )
    side = json.loads((tmp_path / "m.tif.json").read_text())
    assert side["format"] == "napari-temseg" and side["file"] == "m.tif"
    assert side["classes"] == [
        {"value": 1, "name": "support", "color": "#ff0000"},
        {"value": 2, "name": "particle", "color": "#00ff00"},
    ]
    assert [a["scale"] for a in side["axes"]] == [2.0, 0.5, 0.5]
    # the same block is inside the TIFF, and Fiji sees nm and the class colours
    with tifffile.TiffFile(files[0]) as tf:
        ij = tf.imagej_metadata
        assert ij["unit"] == "nm" and ij["spacing"] == 2.0
        assert json.loads(ij["Info"])["napari-temseg"]["classes"][1]["name"] == "particle"
        lut = np.asarray(ij["LUTs"]).reshape(-1, 3, 256)[0]
        assert tuple(lut[:, 1]) == (255, 0, 0) and tuple(lut[:, 2]) == (0, 255, 0)
        x_res = tf.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(2.0)  # pixels per nm
    assert read(files[0])[0].metadata["sidecar"]["classes"][0]["name"] == "support"


def test_uint16_when_more_than_255_labels(tmp_path):
    many = np.arange(300 * 4).reshape(40, 30) % 300
    for fmt in ("tiff", "png", "npy"):
        files = write_labels(tmp_path / f"many.{fmt}", many, scale=(1.0, 1.0), fmt=fmt)
        image = read(files[0])[0]
        assert image.dtype == np.uint16 and np.array_equal(image.data, many)


def test_more_than_65535_labels_go_to_uint32_tiff_not_png(tmp_path):
    huge = np.arange(70000, dtype=np.int64).reshape(700, 100)
    files = write_labels(tmp_path / "huge.tif", huge, scale=(0.5, 0.5))
    image = read(files[0])[0]
    assert image.dtype == np.uint32 and np.array_equal(image.data, huge)
    assert image.scale == (0.5, 0.5)
    with pytest.raises(WriterError, match="65535"):
        write_labels(tmp_path / "huge.png", huge)


def test_invalid_labels_are_refused(tmp_path):
    with pytest.raises(WriterError, match=">= 0"):
        write_labels(tmp_path / "n.tif", np.array([[-1, 0], [1, 2]]))
    with pytest.raises(WriterError, match="integers"):
        write_labels(tmp_path / "f.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(WriterError, match="extension"):
        write_labels(tmp_path / "x.bmp", np.zeros((4, 4), np.uint8))


def test_uncalibrated_labels_stay_uncalibrated(tmp_path):
    files = write_labels(tmp_path / "u.tif", np.eye(5, dtype=np.uint8))
    image = read(files[0])[0]
    assert image.pixel_size_nm is None and image.scale == (1.0, 1.0)


def test_image_round_trip_float32(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(2, 30, 40))
    files = write_image(tmp_path / "img", img, scale=(1.0, 0.2, 0.3), metadata={"voltage_kV": 300})
    assert files == [str(tmp_path / "img.tif")]
    image = read(files[0])[0]
    assert image.dtype == np.float32
    assert np.array_equal(image.data, img.astype(np.float32))
    assert image.scale == (1.0, 0.2, 0.3)
    assert image.metadata["original_metadata"] == {"voltage_kV": 300}
    with tifffile.TiffFile(files[0]) as tf:  # a plain ImageJ float32 stack for Fiji
        assert tf.is_imagej and tf.series[0].dtype == np.float32


def test_instance_mask_numbers_components_per_class():
    sem = np.zeros((10, 12), np.uint8)
    sem[1:3, 1:3] = 1
    sem[5:7, 5:7] = 1
    sem[1:3, 8:10] = 2
    sem[3:5, 3:5] = 2  # touches the first class-1 square diagonally: different class
    inst = instance_mask(sem)
    assert inst.dtype == np.uint32
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4]
    for value in range(1, 5):  # every instance lies inside one class
        assert len(np.unique(sem[inst == value])) == 1
    diag = np.zeros((4, 4), np.uint8)
    diag[0, 0] = diag[1, 1] = 1
    assert instance_mask(diag).max() == 1  # 8-connected, as in Fiji


def test_instance_mask_per_frame_keeps_frames_apart(labels):
    per_frame = instance_mask(labels, per_frame=True)
    volume = instance_mask(labels)
    assert volume.max() == 3  # the squares run through all frames
    assert per_frame.max() == 7  # 2 + 3 + 2 instances, ids unique over the stack
    assert len(set(np.unique(per_frame[0])) & set(np.unique(per_frame[1]))) == 1  # just 0


def test_free_path_adds_a_suffix(tmp_path):
    target = tmp_path / "m.tif"
    assert free_path(target) == target
    target.write_bytes(b"x")
    assert free_path(target) == tmp_path / "m_1.tif"
    (tmp_path / "m_1.tif.json").write_text("{}")  # a lone sidecar also counts as taken
    assert free_path(target) == tmp_path / "m_2.tif"


def test_export_labels_never_overwrites(tmp_path, labels):
    first = export_labels(labels, tmp_path, "mask", "tiff", scale=(1.0, 0.5, 0.5))
    before = (tmp_path / "mask.tif").read_bytes()
    second = export_labels(labels * 0, tmp_path, "mask", "tiff", scale=(1.0, 0.5, 0.5))
    assert first.masks == [str(tmp_path / "mask.tif")]
    assert second.masks == [str(tmp_path / "mask_1.tif")]
    assert second.renamed == [("mask.tif", "mask_1.tif")]
    assert (tmp_path / "mask.tif").read_bytes() == before


def test_export_labels_instances_per_frame_png(tmp_path, labels):
    result = export_labels(
        labels, tmp_path, "m", "png", scale=(1.0, 0.5, 0.5), instance=True, per_frame=True
    )
    names = sorted(p.rsplit("/", 1)[-1] for p in result.masks)
    assert names == sorted(
        [f"m_frame{i:04d}.png" for i in range(3)]
        + [f"m_instances_frame{i:04d}.png" for i in range(3)]
    )
    frame1 = read(tmp_path / "m_instances_frame0001.png")[0]
    assert frame1.scale == (0.5, 0.5)
    assert len(np.unique(frame1.data)) == 4  # background + 3 instances in frame 1
    side = json.loads((tmp_path / "m_instances_frame0001.png.json").read_text())
    assert side["mask"] == "instance" and side["frame_index"] == [1]
    assert sorted(side["instance_class"].values()) == [1, 2, 2]


def test_export_png_of_a_stack_needs_per_frame(tmp_path, labels):
    with pytest.raises(WriterError, match="one file per frame"):
        export_labels(labels, tmp_path, "m", "png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["image", "float64 image", "labels"])
def test_hyperspy_reads_the_scale_and_its_unit(tmp_path, kind):
    """RosettaSciIO (HyperSpy's reader) takes a TIFF's unit from Gatan's tags only; non-square
    pixels show which axis each scale lands on."""
    tiff_api = pytest.importorskip("rsciio.tiff")
    data = np.random.default_rng(0).random((2, 30, 40))
    if kind == "labels":
        files = write_labels(tmp_path / "m.tif", (data > 0.5).astype(np.uint8), scale=(1, 0.7, 0.5))
    else:
        dtype = np.float64 if kind.startswith("float64") else np.float32
        files = write_image(tmp_path / "i.tif", data.astype(dtype), scale=(1, 0.7, 0.5))
    axes = tiff_api.file_reader(files[0])[0]["axes"]
    assert [(a["scale"], a["units"]) for a in axes[1:]] == [(0.7, "nm"), (0.5, "nm")]
    assert read(files[0])[0].scale == (1.0, 0.7, 0.5)


def test_a_class_table_reads_back_what_was_written_and_skips_what_is_not_readable():
    from napari_temseg.io.sidecar import class_table, read_class_table

    written = class_table({1: "support", 3: "particle"}, {1: (1.0, 0, 0), 3: "#00FF00"})
    assert read_class_table(written) == {
        1: {"name": "support", "color": "#ff0000"},
        3: {"name": "particle", "color": "#00ff00"},
    }
    # other tools' tables: a list without values, a mapping, junk entries among them
    assert read_class_table([{"name": "a"}, "b"]) == {1: {"name": "a"}, 2: {"name": "b"}}
    assert read_class_table({"2": "grain", "x": "?", 4: {"color": "#0000ff"}}) == {
        2: {"name": "grain"},
        4: {"color": "#0000ff"},
    }
    assert read_class_table("support") == read_class_table(None) == {}
