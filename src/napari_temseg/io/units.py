"""Length units as microscopes write them, converted to nm.

Files spell units in many ways: "nm", "Å", "A", "angstrom", "pm", "µm", "um", "micron",
"m", and oddities such as Velox-era "n_m" or ImageJ's escaped "\\u00B5m". Normalising here
keeps every reader's calibration rule the same: spatial axes in nm, everything else
(energy, time, reciprocal space, angles, uncalibrated) is not spatial.
"""

from __future__ import annotations

import math

# factor to nm for each normalised spelling
_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "a": 0.1,
    "å": 0.1,
    "ångström": 0.1,
    "angstrom": 0.1,
    "angström": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "meters": 1e9,
}

_ENERGY = {"ev", "kev", "mev"}
_TIME = {"s", "ms", "us", "µs", "ns", "sec", "second", "seconds", "min", "h"}
_ANGLE = {"rad", "mrad", "deg", "°", "degree", "degrees"}


def _clean(unit: object) -> str:
    """Lower-case, unescaped, without separators: "n_m" -> "nm", "\\u00B5m" -> "µm"."""
    if unit is None:
        return ""
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1", "replace")
    text = str(unit).strip()
    if text in ("[]", "<undefined>", "None", "pixel", "pixels", "px"):
        return ""
    text = text.replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("\\u00C5", "Å")
    text = text.replace("\u212b", "Å")  # ANGSTROM SIGN -> LATIN CAPITAL A WITH RING
    text = text.replace("_", "").replace(" ", "").replace(".", "")
    return text.lower()


def length_factor_to_nm(unit: object) -> float | None:
    """Multiplier turning a length in ``unit`` into nm; None when it is not a length unit."""
    return _TO_NM.get(_clean(unit))


def is_reciprocal(unit: object) -> bool:
    """Reciprocal-space units (1/nm, nm^-1, 1/Å): diffraction patterns and FFTs."""
    text = _clean(unit)
    for prefix in ("1/",):
        if text.startswith(prefix) and text[len(prefix) :] in _TO_NM:
            return True
    for suffix in ("^-1", "-1", "⁻¹"):
        if text.endswith(suffix) and text[: -len(suffix)] in _TO_NM:
            return True
    return False


def unit_kind(unit: object) -> str:
    """One of "length", "energy", "time", "reciprocal", "angle" or "" (unknown/none)."""
    text = _clean(unit)
    if not text:
        return ""
    if text in _TO_NM:
        return "length"
    if text in _ENERGY:
        return "energy"
    if text in _TIME:
        return "time"
    if text in _ANGLE:
        return "angle"
    if is_reciprocal(unit):
        return "reciprocal"
    return ""


def to_nm(scale: float, unit: object) -> float | None:
    """``scale`` in nm, or None when the unit is not a length or the scale is unusable."""
    factor = length_factor_to_nm(unit)
    try:
        value = float(scale)
    except (TypeError, ValueError):
        return None
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor
