"""Length units as microscopes spell them all become nm; other units are not spatial."""

from __future__ import annotations

import pytest

from napari_temseg.io.axes import RawAxis, classify, convert_axes
from napari_temseg.io.units import to_nm, unit_kind


@pytest.mark.parametrize(
    ("scale", "unit", "nm"),
    [
        (2.0, "nm", 2.0),
        (2.0, "n_m", 2.0),  # Velox-era EMD
        (2.0, "NM", 2.0),
        (1.0, "Å", 0.1),
        (1.0, "\u212b", 0.1),  # ANGSTROM SIGN
        (1.0, "A", 0.1),  # DigitalMicrograph
        (1.0, "angstrom", 0.1),
        (1.0, "pm", 0.001),
        (1.0, "µm", 1000.0),
        (1.0, "μm", 1000.0),  # Greek mu
        (1.0, "um", 1000.0),
        (1.0, "micron", 1000.0),  # ImageJ
        (1.0, "\\u00B5m", 1000.0),  # ImageJ's escaped micro sign
        (3.1e-9, "m", 3.1),  # Velox PixelSize in metres
        (0.5, "mm", 5e5),
    ],
)
def test_length_units_convert_to_nm(scale, unit, nm):
    assert to_nm(scale, unit) == pytest.approx(nm)


@pytest.mark.parametrize("unit", ["", "[]", "pixel", "eV", "1/nm", "mrad", "s", "counts"])
def test_non_lengths_have_no_nm_scale(unit):
    assert to_nm(1.0, unit) is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_unusable_scales_are_uncalibrated(bad):
    assert to_nm(bad, "nm") is None


@pytest.mark.parametrize(
    ("unit", "kind"),
    [("keV", "energy"), ("1/nm", "reciprocal"), ("nm^-1", "reciprocal"), ("mrad", "angle")],
)
def test_unit_kinds(unit, kind):
    assert unit_kind(unit) == kind


def test_kinds_from_axes():
    img = [RawAxis("y", 8, 0.1, "nm", navigate=False), RawAxis("x", 8, 0.1, "nm", navigate=False)]
    assert classify(img) == "image"
    movie = [RawAxis("t", 5, 0.5, "s", navigate=True), *img]
    assert classify(movie) == "stack"
    axes = convert_axes(movie, "stack")
    assert [a.name for a in axes] == ["time", "y", "x"]
    assert [a.scale for a in axes] == [1.0, 0.1, 0.1]  # time keeps scale 1
    si = [
        RawAxis("y", 4, 1, "nm", navigate=True),
        RawAxis("x", 5, 1, "nm", navigate=True),
        RawAxis("E", 100, 0.5, "eV", navigate=False),
    ]
    assert classify(si) == "spectrum_image"
    assert [a.name for a in convert_axes(si, "spectrum_image")] == ["y", "x", "energy"]
    dp = [RawAxis("ky", 8, 0.1, "1/nm", False), RawAxis("kx", 8, 0.1, "1/nm", False)]
    assert classify(dp) == "diffraction"
    converted = convert_axes(dp, "diffraction")
    assert [a.name for a in converted] == ["ky", "kx"]
    assert all(a.scale == 1.0 and a.unit == "" for a in converted)
    tilt = [RawAxis("tilt", 3, 2.0, "deg", navigate=True), *img]
    assert [a.name for a in convert_axes(tilt, classify(tilt))] == ["tilt", "y", "x"]
