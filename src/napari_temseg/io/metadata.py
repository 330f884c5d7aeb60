"""Microscope metadata worth keeping, found in whatever tree a format provides.

Formats store the same facts under different names (DM "Microscope Info.Voltage", TIA
"High tension_kV", Velox "Optics.AccelerationVoltage" in V, Berkeley EMD "high tension").
We pull what a microscopist looks for first into flat keys (``microscope``, ``voltage_kV``,
``magnification``, ``detector``, ``dwell_time_us``, ``dose``, ``acquisition_time``) and
keep the full original tree,
made JSON-safe, under ``original_metadata`` so nothing is lost.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

_MAX_LIST = 64  # long tag arrays (LUTs, thumbnails) are summarised, not copied
_MAX_DEPTH = 24


def json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` made of dict/list/str/int/float/bool/None only."""
    if depth > _MAX_DEPTH:
        return "…"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.size > _MAX_LIST:
            return f"<array {value.shape} {value.dtype}>"
        return json_safe(value.tolist(), depth + 1)
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST:
            return f"<list of {len(value)} items>"
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if hasattr(value, "as_dictionary"):  # hyperspy DictionaryTreeBrowser
        return json_safe(value.as_dictionary(), depth + 1)
    return str(value)


def _walk(tree: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > _MAX_DEPTH or not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _walk(value, path, depth + 1)
        else:
            yield path, value


def _number(value: Any) -> float | None:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.strip().split()[0] if value.strip() else ""
        value = value.rstrip("xX")
    try:
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _first(flat: dict[str, Any], *endings: str) -> tuple[str, Any] | None:
    """The first (path, value) whose path ends with one of ``endings`` (case-insensitive)."""
    lowered = {k.lower(): k for k in flat}
    for ending in endings:
        e = ending.lower()
        for low, key in lowered.items():
            if (low == e or low.endswith("." + e)) and flat[key] not in ("", None, b""):
                return key, flat[key]
    return None


def _voltage_kv(flat: dict[str, Any]) -> float | None:
    found = _first(flat, "High tension_kV", "beam_energy")
    if found and (v := _number(found[1])):
        return v
    found = _first(
        flat,
        "Microscope Info.Voltage",
        "AccelerationVoltage",
        "AcceleratingVoltage",
        "high tension",
        "Beam.HV",  # FEI/Thermo TIFF
        "EBeam.HV",
        "voltage",
    )
    if found and (v := _number(found[1])):
        return v / 1000.0 if v > 1000 else v  # stored in V by DM/Velox/TIA/EMD
    return None


def _acquisition_time(flat: dict[str, Any]) -> str | None:
    found = _first(flat, "AcquisitionStartDatetime.DateTime", "AcquisitionDatetime.DateTime")
    if found and (v := _number(found[1])):
        return _dt.datetime.fromtimestamp(v, tz=_dt.timezone.utc).isoformat()
    date = _first(flat, "General.date", "DataBar.Acquisition Date", "AcquireDate", "User.Date")
    time = _first(flat, "General.time", "DataBar.Acquisition Time", "User.Time")
    if date and time:
        return _iso(str(date[1]), str(time[1]))
    if date:
        return str(date[1])
    return None


#: how DigitalMicrograph's DataBar and other headers spell a date and a time of day
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d")
_TIME_FORMATS = ("%H:%M:%S.%f", "%H:%M:%S", "%I:%M:%S %p", "%I:%M:%S.%f %p", "%H:%M")


def _iso(date: str, time: str) -> str:
    """ISO 8601 from a header's date and time strings ("8/29/2017" and "1:58:43 PM" gave
    "8/29/2017T1:58:43 PM", which is no timestamp); both as given, joined by a space, when
    neither is a spelling known here."""
    for df in _DATE_FORMATS:
        for tf in _TIME_FORMATS:
            try:
                return _dt.datetime.strptime(
                    f"{date.strip()} {time.strip()}", f"{df} {tf}"
                ).isoformat()
            except ValueError:
                continue
    return f"{date} {time}"


def _dwell_time_us(flat: dict[str, Any]) -> float | None:
    """Pixel dwell time in µs (files store seconds, DigitalMicrograph µs)."""
    found = _first(flat, "DigiScan.Sample Time")
    if found and (v := _number(found[1])) is not None:
        return v
    found = _first(
        flat, "Scan.DwellTime", "Scan.Dwelltime", "AcquireInfo.DwellTimePath", "dwell time"
    )
    if found and found[0].endswith("DwellTimePath") and _first(flat, "CameraNamePath"):
        return None  # TIA stores a camera's exposure there: not a scan's dwell time
    if found and (v := _number(found[1])) is not None:
        return v * 1e6
    return None


def microscope_metadata(*trees: Mapping | None) -> dict[str, Any]:
    """Well-known acquisition facts from one or more metadata trees (flat keys, JSON-safe)."""
    flat: dict[str, Any] = {}
    for tree in trees:
        if tree:
            flat.update(dict(_walk(tree)))
    out: dict[str, Any] = {}
    found = _first(
        flat,
        "Acquisition_instrument.TEM.microscope",
        "ExperimentalDescription.Microscope",
        "Microscope Info.Microscope",
        "Microscope Info.Name",
        "Instrument.InstrumentModel",
        "microscope.name",
        "System.SystemType",  # FEI/Thermo TIFF
    )
    if found:
        out["microscope"] = json_safe(found[1])
    if (kv := _voltage_kv(flat)) is not None:
        out["voltage_kV"] = kv
    found = _first(
        flat,
        "Acquisition_instrument.TEM.magnification",
        "Magnification_x",
        "Indicated Magnification",
        "Actual Magnification",
        "NominalMagnification",
        "microscope.magnification",
        "AcquireInfo.Magnification",
    )
    if found and (v := _number(found[1])) is not None:
        out["magnification"] = v
    found = _first(
        flat,
        "BinaryResult.Detector",  # Velox: the detector that recorded this image
        "AcquireInfo.CameraNamePath",  # TIA
        "Acquisition.Device.Name",  # DigitalMicrograph
        "Detectors.Name",  # FEI/Thermo TIFF
        "DigiScan.Signal Name",
    )
    if found:
        out["detector"] = json_safe(found[1])
    if (dwell := _dwell_time_us(flat)) is not None:
        out["dwell_time_us"] = dwell
    found = _first(flat, "dose", "Dose", "DoseRate", "Dose rate", "electron_dose")
    if found is None:
        doses = [(k, v) for k, v in flat.items() if "dose" in k.lower()]
        found = doses[0] if doses else None
    if found and (v := _number(found[1])) is not None:
        out["dose"] = v
        out["dose_key"] = found[0]
    if (when := _acquisition_time(flat)) is not None:
        out["acquisition_time"] = when
    return out
