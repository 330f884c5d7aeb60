"""Files written here with each format's own library read back with data and nm scale."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from napari_temseg.io import read
from napari_temseg.io import readers as readers_module


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(4, 32, 48)).astype(np.uint16)


@pytest.mark.parametrize("compression", [None, "lzw", "zstd", "zlib"])
def test_imagej_tiff_with_calibration(tmp_path, stack, compression):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),  # pixels per unit, x then y
        metadata={"axes": "ZYX", "unit": "nm", "spacing": 2.5},
        compression=compression,
    )
    image = read(path)[0]
    assert np.array_equal(image.data, stack)
    assert [a.name for a in image.axes] == ["z", "y", "x"]
    assert image.scale == pytest.approx((2.5, 0.5, 0.25))
    assert image.kind == "stack"


@pytest.mark.parametrize(("unit", "factor"), [("micron", 1000.0), ("\\u00B5m", 1000.0), ("A", 0.1)])
def test_imagej_units_convert(tmp_path, unit, factor):
    path = tmp_path / "u.tif"
    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0), metadata={"unit": unit})
    image = read(path)[0]
    assert image.pixel_size_nm == pytest.approx(0.5 * factor)


def test_imagej_time_series_frames_are_not_spatial(tmp_path, stack):
    path = tmp_path / "t.tif"
    tifffile.imwrite(
        path, stack, imagej=True, resolution=(10.0, 10.0), metadata={"axes": "TYX", "unit": "nm"}
    )
    image = read(path)[0]
    assert [a.name for a in image.axes] == ["time", "y", "x"]
    assert image.scale == pytest.approx((1.0, 0.1, 0.1))


def test_ome_tiff_physical_sizes(tmp_path, stack):
    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(
        path,
        stack,
        ome=True,
        compression="zlib",
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 2.0,
            "PhysicalSizeXUnit": "Å",
            "PhysicalSizeY": 0.3,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.01,  # default unit µm
        },
    )
    image = read(path)[0]
    assert np.array_equal(image.data, stack)
    assert image.scale == pytest.approx((10.0, 0.3, 0.2))
    assert image.metadata["calibration_source"] == "OME"


def test_plain_tiff_resolution_in_cm_is_a_calibration(tmp_path):
    data = np.ones((6, 7), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", data, resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    assert read(tmp_path / "cm.tif")[0].pixel_size_nm == pytest.approx(10.0)  # 1e-6 cm


def test_plain_tiff_dpi_is_not_a_pixel_size(tmp_path):
    data = np.ones((6, 7), np.uint8)
    tifffile.imwrite(tmp_path / "dpi.tif", data, resolution=(72, 72), resolutionunit="INCH")
    image = read(tmp_path / "dpi.tif")[0]
    assert image.pixel_size_nm is None and image.scale == (1.0, 1.0)


def test_fei_tiff_pixel_width(tmp_path):
    text = "[Scan]\nPixelWidth=1.5e-09\nPixelHeight=1.5e-09\n[Beam]\nHV=300000\n"
    data = np.zeros((8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "fei.tif", data, extratags=[(34682, "s", 0, text, True)])
    with tifffile.TiffFile(tmp_path / "fei.tif") as tf:
        assert tf.fei_metadata  # the tag tifffile knows as FEI_HELIOS
    assert read(tmp_path / "fei.tif")[0].pixel_size_nm == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("suffix", "ispg", "names", "lead_scale"),
    [
        (".mrc", 1, ("z", "y", "x"), 0.3),  # a volume: z is spatial
        (".mrc", 0, ("frame", "y", "x"), 1.0),  # an image stack: frames are not
        (".mrcs", 1, ("frame", "y", "x"), 1.0),  # .mrcs is a stack by convention
        (".rec", 0, ("z", "y", "x"), 0.3),  # .rec is a tomogram by convention
    ],
)
def test_mrc_written_by_mrcfile(tmp_path, stack, suffix, ispg, names, lead_scale):
    path = tmp_path / f"m{suffix}"
    data = stack.astype(np.float32)
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.header.ispg = ispg
        mrc.voxel_size = (2.5, 2.0, 3.0)  # Å, x y z
    image = read(path)[0]
    assert np.array_equal(image.data, data)
    assert tuple(a.name for a in image.axes) == names
    assert image.scale == pytest.approx((lead_scale, 0.2, 0.25))


def test_mrc_2d_image(tmp_path):
    with mrcfile.new(tmp_path / "one.mrc") as mrc:
        mrc.set_data(np.arange(12, dtype=np.int16).reshape(3, 4))
        mrc.voxel_size = 10.0
    image = read(tmp_path / "one.mrc")[0]
    assert image.kind == "image" and image.pixel_size_nm == pytest.approx(1.0)


def test_npy_round_trip_without_calibration(tmp_path, stack):
    np.save(tmp_path / "a.npy", stack)
    image = read(tmp_path / "a.npy")[0]
    assert np.array_equal(image.data, stack)
    assert image.pixel_size_nm is None and image.kind == "stack"


# --------------------------------------------------------------------------- lazy


def _big_stack(frames: int = 16) -> np.ndarray:
    return np.arange(frames * 256 * 256, dtype=np.float32).reshape(frames, 256, 256)


def test_large_mrc_is_memory_mapped(tmp_path, monkeypatch):
    data = _big_stack()  # 4 MiB
    with mrcfile.new(tmp_path / "big.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.0
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 20)
    image = read(tmp_path / "big.mrc")[0]
    assert isinstance(image.data, np.memmap) and image.lazy
    assert np.array_equal(image.data[7], data[7])
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 30)
    assert not read(tmp_path / "big.mrc")[0].lazy


def test_large_uncompressed_tiff_is_memory_mapped(tmp_path, monkeypatch):
    data = _big_stack()
    tifffile.imwrite(tmp_path / "big.tif", data, imagej=True, metadata={"axes": "TYX"})
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 20)
    image = read(tmp_path / "big.tif")[0]
    assert isinstance(image.data, np.memmap)
    assert np.array_equal(image.data[-1], data[-1])


def test_large_compressed_tiff_is_a_dask_array_read_page_by_page(tmp_path, monkeypatch):
    import dask.array as da

    data = _big_stack()
    tifffile.imwrite(tmp_path / "big.tif", data, compression="zstd", metadata={"axes": "ZYX"})
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 10)
    image = read(tmp_path / "big.tif")[0]
    assert isinstance(image.data, da.Array)
    assert image.data.chunks[0] == (1,) * 16  # one chunk per page
    assert np.array_equal(image.data[5].compute(), data[5])


def test_large_npy_is_memory_mapped(tmp_path, monkeypatch):
    np.save(tmp_path / "big.npy", _big_stack())
    monkeypatch.setattr(readers_module, "LAZY_THRESHOLD_BYTES", 1 << 20)
    assert isinstance(read(tmp_path / "big.npy")[0].data, np.memmap)


def test_large_dm4_opens_as_dask(testdata):
    import dask.array as da

    image = read(testdata / "ncem_3d_int16_64x65x66.dm4", lazy=True)[0]
    assert isinstance(image.data, da.Array)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_info_reads_no_pixels(tmp_path, monkeypatch, compression):
    """`temseg info` describes a file from its metadata: a 1.7 MB compressed TIFF that
    decodes to 1.6 GB must not be decoded (issue 14). Every decoding path of tifffile
    fails here, so any pixel read fails the test."""
    from napari_temseg.cli import main
    from napari_temseg.io import info_dict

    path = tmp_path / "big.tif"
    data = np.zeros((3, 512, 512), np.uint16)
    tifffile.imwrite(path, data, photometric="minisblack", compression=compression)

    def no_pixels(*_a, **_k):
        raise AssertionError("info read pixels")

    for owner, name in (
        (tifffile.TiffPage, "asarray"),
        (tifffile.TiffPage, "decode"),
        (tifffile.TiffPageSeries, "asarray"),
        (tifffile.TiffFile, "asarray"),
    ):  # a memory map (uncompressed) is fine: mapping reads nothing
        monkeypatch.setattr(owner, name, no_pixels)
    assert info_dict(path)["shape"] == [3, 512, 512]
    assert main(["info", str(path)]) == 0
