"""One calibration value: every face reads a file's or a layer's pixel size the same way."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_temseg.io.calibration import Calibration
from napari_temseg.io.model import Axis, EMImage
from napari_temseg.io.napari_hooks import layer_data, layer_scale_nm


def _image(units=("nm", "nm"), scale=(0.5, 0.25)) -> EMImage:
    axes = [Axis(n, 4, s, u) for n, s, u in zip(("y", "x"), scale, units, strict=True)]
    return EMImage(np.zeros((4, 4), np.float32), axes, "image")


def test_a_file_in_nm_is_calibrated_from_the_file():
    c = Calibration.from_image(_image())
    assert (c.yx, c.unit, c.source, c.calibrated) == ((0.5, 0.25), "nm", "file", True)
    assert c.pixel_size_nm == 0.25 and c.area_unit == "nm²"


def test_an_uncalibrated_file_stays_in_pixels():
    c = Calibration.from_image(_image(units=("", ""), scale=(1.0, 1.0)))
    assert (c.yx, c.unit, c.source, c.calibrated) == ((1.0, 1.0), "px", "none", False)
    assert c.pixel_size_nm is None and c.area_unit == "px²"


@pytest.mark.parametrize(
    ("units", "expected"),
    [(("nm", "nm"), 0.2), (("µm", "µm"), 200.0), (("angstrom", "angstrom"), 0.02)],
)
def test_a_layer_in_any_length_unit_is_calibrated_in_nm(units, expected):
    layer = Image(np.zeros((3, 8, 8)), scale=(1.0, 0.2, 0.2), units=("pixel", *units))
    c = Calibration.from_layer(layer)
    assert c.source == "layer" and c.unit == "nm"
    assert c.yx == pytest.approx((expected, expected))
    assert c.pixel_size[0] == 1.0  # the frame axis is not a length: left as it was


def test_a_layer_in_pixels_is_uncalibrated_unless_it_is_scaled():
    """Scale 1 in pixels is never 1 nm; a scale set without units is nm (napari < units)."""
    plain = Calibration.from_layer(Labels(np.zeros((8, 8), np.uint8)))
    assert not plain.calibrated and plain.yx == (1.0, 1.0) and plain.unit == "px"
    assert layer_scale_nm({"scale": (1.0, 1.0), "units": ("pixel", "pixel")}, 2) is None
    scaled = Calibration.from_layer(Labels(np.zeros((8, 8), np.uint8), scale=(2.0, 2.0)))
    assert scaled.calibrated and scaled.yx == (2.0, 2.0) and scaled.unit == "nm"


def test_the_layer_origin_is_converted_with_the_pixel_size():
    layer = Image(np.zeros((8, 8)), scale=(0.002, 0.002), translate=(0.1, 0.2), units="µm")
    c = Calibration.from_layer(layer)
    assert c.origin_yx == pytest.approx((100.0, 200.0)) and c.yx == pytest.approx((2.0, 2.0))


def test_a_layer_reset_to_pixels_keeps_the_calibration_its_file_had():
    data, kwargs, _ = layer_data(_image(), "x")
    kwargs.pop("scale"), kwargs.pop("units")
    c = Calibration.from_layer(Image(data, **kwargs))
    assert c.calibrated and c.yx == (0.5, 0.25)


def test_a_file_and_its_layer_give_the_same_calibration():
    image = _image(scale=(0.3, 0.3))
    data, kwargs, _ = layer_data(image, "x")
    from_file, from_layer = (
        Calibration.from_image(image),
        Calibration.from_layer(Image(data, **kwargs)),
    )
    assert from_file.yx == pytest.approx(from_layer.yx) and from_file.unit == from_layer.unit


def test_an_uncalibrated_layer_is_written_without_a_fake_pixel_size():
    meta = {"scale": (1.0, 1.0, 1.0), "units": ("pixel", "pixel", "pixel")}
    assert Calibration.from_layer_meta(meta, 3).scale_nm() is None
    c = Calibration.from_layer(Labels(np.zeros((2, 8, 8), np.uint8), scale=(5.0, 1.0, 1.0)))
    assert not c.calibrated and c.pixel_size_nm is None  # a frame step is not a pixel size


def test_a_lazy_file_opens_with_the_one_contrast_rule():
    """The reader, sample data and docks share display_limits (0.5/99.5 % of the first,
    middle and last frames)."""
    from napari_temseg.display import display_limits

    rng = np.random.default_rng(0)
    stack = rng.normal(100.0, 10.0, (3, 64, 64)).astype(np.float32)
    stack[0, 0, 0] = 1e6  # a hot pixel must not set the upper limit
    axes = [Axis("frame", 3), Axis("y", 64, 0.5, "nm"), Axis("x", 64, 0.5, "nm")]
    import dask.array as da

    image = EMImage(da.from_array(stack, chunks=(1, 64, 64)), axes, "image")
    _, kwargs, _ = layer_data(image, "x")
    assert kwargs["contrast_limits"] == display_limits(stack)
    assert kwargs["contrast_limits"][1] < 200
    # a series that brightens: its last frames are inside the limits, not white
    drift = np.stack([stack[1] + 300 * k for k in range(30)])
    lazy = da.from_array(drift, chunks=(1, 64, 64))
    _, kwargs, _ = layer_data(EMImage(lazy, [Axis("frame", 30), *axes[1:]], "stack"), "x")
    lo, hi = kwargs["contrast_limits"]
    assert lo < float(np.median(drift[0])) and hi > float(np.median(drift[-1]))
