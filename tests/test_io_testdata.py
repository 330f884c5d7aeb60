"""Every real microscope file in ../shared/testdata reads with the README's shapes and scales."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_temseg.io import NotAnImageError, info_dict, read

# name: (shape, dtype, axis names, scale per axis in nm (None: uncalibrated), kind)
EXPECTED = {
    "tkrem_hrstem_example.ser": ((1024, 1024), "uint16", ("y", "x"), (0.05241, 0.05241), "image"),
    "16_STOimage_1.ser": ((1024, 1024), "uint16", ("y", "x"), (0.01001, 0.01001), "image"),
    "16_STOimage.emi": ((1024, 1024), "uint16", ("y", "x"), (0.01001, 0.01001), "image"),
    "64x64_TEM_images_acquire_1.ser": (
        (64, 64),
        "float32",
        ("y", "x"),
        (6.28183, 6.28183),
        "image",
    ),
    "64x64_TEM_images_acquire.emi": ((64, 64), "float32", ("y", "x"), (6.28183, 6.28183), "image"),
    "velox_Acquisition_18.emd": ((1024, 1024), "uint16", ("y", "x"), (0.01225, 0.01225), "image"),
    "velox_camera_ceta_imaging.emd": ((512, 512), "int16", ("y", "x"), (3.13884, 3.13884), "image"),
    "berkeley_example_image.emd": ((3, 3), "int32", ("y", "x"), None, "image"),
    # y written in Å (2 Å = 0.2 nm), x in nm: a different pixel size per axis
    "ncem_float32_nonsquare.dm3": ((64, 128), "float32", ("y", "x"), (0.2, 1.0), "image"),
    "ncem_float32_nonsquare.dm4": ((64, 128), "float32", ("y", "x"), (0.2, 1.0), "image"),
    # z in µm, y in nm, x in pm
    "ncem_3d_int16_64x65x66.dm4": (
        (66, 65, 64),
        "int16",
        ("z", "y", "x"),
        (4000.0, 3.0, 0.002),
        "stack",
    ),
    "rsciio_2d_test-1.dm3": ((2, 2), "int16", ("y", "x"), None, "image"),
    "rsciio_2d_test-1.dm4": ((2, 2), "int16", ("y", "x"), None, "image"),
    "rsciio_3d_test-1.dm4": ((2, 2, 2), "int16", ("frame", "y", "x"), None, "stack"),
    # an MRC image stack: frames are not spatial (scale 1), pixels 2 Å
    "ncem_temp.mrc": ((3, 128, 128), "float32", ("frame", "y", "x"), (1.0, 0.2, 0.2), "stack"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_shape_dtype_axes_and_calibration(testdata, name):
    shape, dtype, names, scale, kind = EXPECTED[name]
    images = read(testdata / name)
    assert len(images) == 1
    image = images[0]
    assert image.shape == shape
    assert image.dtype == np.dtype(dtype)
    assert tuple(a.name for a in image.axes) == names
    assert image.kind == kind
    if scale is None:
        assert image.pixel_size_nm is None
        assert image.scale == (1.0,) * len(shape)
    else:
        assert image.scale == pytest.approx(scale, rel=1e-3)
        assert image.pixel_size_nm == pytest.approx(scale[-1], rel=1e-3)
        for ax, s in zip(image.axes, scale, strict=True):
            assert ax.unit == ("nm" if ax.name in ("x", "y", "z") else "")
            assert ax.scale == pytest.approx(s, rel=1e-3)
    assert isinstance(image.data, np.ndarray)  # small files load into memory
    assert image.metadata["original_units"]


def test_dm_non_square_keeps_original_units(testdata):
    image = read(testdata / "ncem_float32_nonsquare.dm4")[0]
    assert image.metadata["original_units"] == ["A", "nm"]


def test_3d_dm_stack_converts_um_nm_and_pm(testdata):
    image = read(testdata / "ncem_3d_int16_64x65x66.dm4")[0]
    assert image.metadata["original_units"] == ["um", "nm", "pm"]
    assert image.scale == pytest.approx((4000.0, 3.0, 0.002))


def test_velox_era_emd_unit_n_m_is_nanometres(testdata):
    image = read(testdata / "velox_Acquisition_18.emd")[0]
    assert image.metadata["original_units"] == ["n_m", "n_m"]
    assert image.pixel_size_nm == pytest.approx(0.012246524915099144)
    assert image.metadata["microscope"] == "TEAM 0.5"
    assert image.metadata["voltage_kV"] == pytest.approx(200.0)
    assert image.metadata["magnification"] == pytest.approx(5.1e6)


@pytest.mark.parametrize("lazy", [False, True])
def test_a_berkeley_emd_keeps_its_rows_and_each_axis_its_pixel_size(testdata, tmp_path, lazy):
    """RosettaSciIO transposes NCEM-layout EMD files and names their axes (X, Y); taken by
    position, the frame came out transposed and a non-square one with swapped pixel sizes."""
    import h5py

    real = testdata / "velox_Acquisition_18.emd"
    with h5py.File(real, "r") as f:
        assert f["data/single/dim1"].attrs["name"] == b"Y"  # rows first, as stored
        stored = f["data/single/data"][()]
    np.testing.assert_array_equal(np.asarray(read(real, lazy=lazy)[0].data), stored)
    frame = np.arange(100 * 200, dtype=np.uint16).reshape(100, 200)
    path = tmp_path / "nonsquare.emd"
    with h5py.File(path, "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        g = f.create_group("data/img")
        g.attrs["emd_group_type"] = 1
        g.create_dataset("data", data=frame)
        for dim, (name, size, step) in enumerate((("Y", 100, 0.05), ("X", 200, 0.1)), 1):
            d = g.create_dataset(f"dim{dim}", data=np.arange(size) * step)
            d.attrs["name"], d.attrs["units"] = np.bytes_(name), np.bytes_(b"n_m")
    image = read(path, lazy=lazy)[0]
    np.testing.assert_array_equal(np.asarray(image.data), frame)
    assert [(a.name, a.size) for a in image.axes] == [("y", 100), ("x", 200)]
    assert image.scale == pytest.approx((0.05, 0.1))


def test_a_ser_beside_its_emi_brings_the_acquisition(testdata, tmp_path):
    """Opened alone, a .ser had no microscope, voltage, magnification or dwell time, though
    its .emi beside it holds them."""
    ser = read(testdata / "16_STOimage_1.ser")[0]
    emi = read(testdata / "16_STOimage.emi")[0]
    np.testing.assert_array_equal(np.asarray(ser.data), np.asarray(emi.data))
    for key in ("microscope", "voltage_kV", "magnification", "dwell_time_us", "acquisition_time"):
        assert ser.metadata[key] == emi.metadata[key], key
    alone = tmp_path / "16_STOimage_1.ser"  # without its .emi: the pixels, and no more
    alone.write_bytes((testdata / "16_STOimage_1.ser").read_bytes())
    lone = read(alone)[0]
    np.testing.assert_array_equal(np.asarray(lone.data), np.asarray(ser.data))
    assert lone.pixel_size_nm == pytest.approx(ser.pixel_size_nm)
    assert "voltage_kV" not in lone.metadata


def test_a_dm_acquisition_time_is_an_iso_timestamp(testdata):
    """The DataBar's "8/29/2017" and "1:58:43 PM" were glued into "8/29/2017T1:58:43 PM"."""
    from napari_temseg.io.metadata import _iso

    meta = read(testdata / "ncem_08_carbon.dm3")[0].metadata
    assert meta["acquisition_time"] == "2017-08-29T13:58:43"
    assert _iso("29.08.2017", "13:58:43") == "2017-08-29T13:58:43"
    assert _iso("Tuesday", "noon") == "Tuesday noon"  # unknown spellings stay as given


def test_velox_metadata_reaches_the_image(testdata):
    meta = read(testdata / "velox_camera_ceta_imaging.emd")[0].metadata
    assert meta["voltage_kV"] == pytest.approx(300.0)
    assert meta["microscope"] == "Titan"
    assert meta["magnification"] == pytest.approx(26996.349)
    assert meta["acquisition_time"].startswith("2020-07-29T16:48:19")
    json.dumps(meta)  # JSON-safe, so layer metadata can be saved anywhere


def test_emi_brings_the_acquisition_metadata_of_its_ser(testdata):
    with_emi = read(testdata / "16_STOimage.emi")[0]
    ser_only = read(testdata / "16_STOimage_1.ser")[0]
    assert np.array_equal(with_emi.data, ser_only.data)
    assert with_emi.scale == ser_only.scale
    assert with_emi.metadata["voltage_kV"] == pytest.approx(80.0)
    assert with_emi.metadata["magnification"] == pytest.approx(13.5e6)
    assert "TitanCubed" in with_emi.metadata["microscope"]


def test_ser_without_emi_reads(testdata):
    assert not list(testdata.glob("tkrem_hrstem_example*.emi"))
    image = read(testdata / "tkrem_hrstem_example.ser")[0]
    assert image.pixel_size_nm == pytest.approx(0.05241, rel=1e-3)
    assert image.data.std() > 0


def test_the_eels_spectrum_is_reported_as_a_spectrum(testdata):
    image = read(testdata / "ncem_08_carbon.dm3")[0]
    assert image.kind == "spectrum"
    assert image.shape == (1, 2048)
    assert image.dtype == np.float32
    energy = image.metadata["original_axes"][-1]
    assert energy["units"] == "eV" and energy["scale"] == pytest.approx(0.1)
    assert image.axes[-1].name == "energy"
    assert image.axes[-1].scale == pytest.approx(0.1) and image.axes[-1].unit == "eV"
    assert image.pixel_size_nm is None
    with pytest.raises(NotAnImageError, match=r"ncem_08_carbon\.dm3.*EELS spectrum.*0\.1 eV"):
        read(testdata / "ncem_08_carbon.dm3", image_only=True)


def test_info_describes_the_image_of_a_file_of_several_and_lists_them_all(monkeypatch, capsys):
    """A Velox file with a diffraction pattern first was described by the pattern alone,
    with no word of the image beside it."""
    from napari_temseg.cli import main
    from napari_temseg.io import readers
    from napari_temseg.io.model import Axis, EMImage

    def made(kind, names, title):
        axes = [Axis(n, 8, 0.1 if n in "yx" else 1.0, "nm" if n in "yx" else "") for n in names]
        return EMImage(np.zeros((8,) * len(names)), axes, kind, metadata={"title": title})

    found = [made("diffraction", "kk", "DP"), made("image", "yx", "HAADF")]
    monkeypatch.setattr(readers, "read", lambda *a, **k: found)
    info = info_dict("x.emd")
    assert info["kind"] == "image" and info["described"] == 1 and info["pixel_size_nm"] == 0.1
    assert [d["title"] for d in info["datasets"]] == ["DP", "HAADF"]
    monkeypatch.setattr("napari_temseg.io.info_dict", info_dict)
    assert main(["info", "x.emd"]) == 0
    out = capsys.readouterr().out
    assert "the file holds 2 datasets (above: number 2):" in out and "1 'DP': diffraction" in out


def test_info_dict_matches_the_cli_contract(testdata):
    info = info_dict(testdata / "ncem_float32_nonsquare.dm3")
    assert info == {
        "shape": [64, 128],
        "dtype": "float32",
        "axes": [
            {"name": "y", "size": 64, "scale": pytest.approx(0.2), "unit": "nm"},
            {"name": "x", "size": 128, "scale": pytest.approx(1.0), "unit": "nm"},
        ],
        "pixel_size_nm": pytest.approx(1.0),
        "kind": "image",
        "acquisition": {},
        "notes": [],
        "described": 0,
        "datasets": [
            {"kind": "image", "shape": [64, 128], "title": "dmTest_float32_nonSquare_diffPixelSize"}
        ],
    }
    json.dumps(info)
    spectrum = info_dict(testdata / "ncem_08_carbon.dm3")
    assert spectrum["kind"] == "spectrum" and spectrum["pixel_size_nm"] is None
    assert spectrum["axes"][-1] == {
        "name": "energy",
        "size": 2048,
        "scale": pytest.approx(0.1),
        "unit": "eV",
    }
    uncalibrated = info_dict(testdata / "berkeley_example_image.emd")
    assert uncalibrated["pixel_size_nm"] is None


@pytest.mark.parametrize(
    "name", ["ncem_3d_int16_64x65x66.dm4", "tkrem_hrstem_example.ser", "velox_Acquisition_18.emd"]
)
def test_lazy_read_gives_the_same_pixels(testdata, name):
    eager = read(testdata / name, lazy=False)[0]
    lazy = read(testdata / name, lazy=True)[0]
    assert lazy.lazy and not eager.lazy
    assert np.array_equal(np.asarray(lazy.data), eager.data)
    assert lazy.scale == eager.scale


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "velox_camera_ceta_imaging.emd",
            {
                "microscope": "Titan",
                "voltage_kV": 300.0,
                "magnification": pytest.approx(26996.349),
                "detector": "BM-Ceta",
                "acquisition_time": "2020-07-29T16:48:19+00:00",
            },
        ),
        (
            "16_STOimage.emi",
            {
                "microscope": "TitanCubed D3147 S-Twin",
                "voltage_kV": 80.0,
                "magnification": 13500000.0,
                "dwell_time_us": pytest.approx(29.0),
                "acquisition_time": "2011-10-18T18:18:46",
            },
        ),
        (
            "velox_Acquisition_18.emd",
            {
                "microscope": "TEAM 0.5",
                "voltage_kV": 200.0,
                "magnification": 5100000.0,
                "dwell_time_us": pytest.approx(1.0),
            },
        ),
        (
            "64x64_TEM_images_acquire.emi",  # a camera: TIA's "dwell time" is its exposure
            {
                "microscope": "Microscope Tecnai 200 kV D2267 SuperTwin",
                "voltage_kV": 200.0,
                "magnification": 19500.0,
                "detector": "WA-Orius",
                "acquisition_time": "2016-02-21T17:50:18",
            },
        ),
    ],
)
def test_info_shows_the_acquisition_first(testdata, name, expected, capsys):
    from napari_temseg.cli import main

    assert info_dict(testdata / name)["acquisition"] == expected
    assert main(["info", str(testdata / name), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acquisition"] == expected
    assert main(["info", str(testdata / name)]) == 0
    out = capsys.readouterr().out
    assert f"microscope: {expected['microscope']}" in out
    assert f"voltage: {expected['voltage_kV']:g} kV" in out


def test_a_spectrum_is_named_once_in_the_error(testdata, tmp_path, capsys):
    from napari_temseg.cli import main

    path = testdata / "ncem_08_carbon.dm3"
    assert main(["denoise", str(path), "-o", str(tmp_path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("ncem_08_carbon") == 1
    assert "EELS spectrum (2048 channels, 0.1 eV/channel)" in err
