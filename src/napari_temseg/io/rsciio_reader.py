"""Gatan DM3/DM4, FEI TIA SER/EMI and Velox/Berkeley EMD through RosettaSciIO.

RosettaSciIO (GPL-3.0-or-later, imported as a library; see docs/io.md) knows the
binary layouts of these vendor formats far better than we could. We call its
``file_reader`` and translate the returned dictionaries (data, axes in array order,
metadata, original_metadata) into :class:`EMImage`. It is imported lazily so that
importing ``napari_temseg.io`` stays cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from napari_temseg.io.axes import RawAxis, classify, convert_axes
from napari_temseg.io.logs import quiet_log
from napari_temseg.io.metadata import json_safe, microscope_metadata
from napari_temseg.io.model import EMImage, ReaderError

FORMATS = {
    ".dm3": ("rsciio.digitalmicrograph", "Gatan DigitalMicrograph"),
    ".dm4": ("rsciio.digitalmicrograph", "Gatan DigitalMicrograph"),
    ".ser": ("rsciio.tia", "FEI TIA"),
    ".emi": ("rsciio.tia", "FEI TIA"),
    ".emd": ("rsciio.emd", "EMD (Velox/Berkeley)"),
}


def _raw_axes(axes: list[dict], ndim: int) -> list[RawAxis]:
    ordered = sorted(enumerate(axes), key=lambda ia: int(ia[1].get("index_in_array", ia[0])))
    out = []
    for _i, ax in ordered:
        units = ax.get("units", "")
        if isinstance(units, (list, tuple)) or units is None:  # DM writes [] for "none"
            units = ""
        out.append(
            RawAxis(
                name=str(ax.get("name", "") or ""),
                size=int(ax.get("size", 1)),
                scale=float(ax.get("scale", 1.0) or 1.0),
                unit=str(units),
                offset=float(ax.get("offset", 0.0) or 0.0),
                navigate=ax.get("navigate"),
            )
        )
    if len(out) != ndim:
        raise ValueError(f"the file describes {len(out)} axes for {ndim}-dimensional data")
    return out


def file_size_for(path: Path) -> int:
    """Bytes of pixel data on disk: an .emi keeps its pixels in the .ser files beside it."""
    if path.suffix.lower() == ".emi":
        return sum(p.stat().st_size for p in path.parent.glob(f"{path.stem}_*.ser"))
    return path.stat().st_size


def _with_emi(path: Path, lazy: bool) -> list[dict]:
    """A TIA ``<name>_N.ser`` read through the ``<name>.emi`` beside it, which holds the
    acquisition (microscope, voltage, magnification, dwell time, date): read alone, the
    .ser had none of it. Empty when there is no .emi, it cannot be read, or it does not
    list this .ser."""
    stem, sep, number = path.stem.rpartition("_")
    emi = path.with_name(f"{stem}.emi")
    if path.suffix.lower() != ".ser" or not sep or not number.isdigit() or not emi.is_file():
        return []
    try:  # this .ser only, with its object of the .emi, as rsciio's emi_reader does per
        # file (emi_reader itself reads every sibling .ser's pixels in full)
        import xml.etree.ElementTree as ET

        from rsciio.tia._api import emixml2dtb, get_xml_info_from_emi, ser_reader
        from rsciio.utils._dictionary import DTBox

        objects = get_xml_info_from_emi(str(emi))
        index = int(number) - 1
        if index >= len(objects):
            return []
        signals = ser_reader(str(path), objects, lazy)
        for sig in signals:
            tree = DTBox(sig["original_metadata"], box_dots=True)
            emixml2dtb(ET.fromstring(objects[index]), tree)
            sig["original_metadata"] = tree.to_dict()
        return signals
    except Exception:  # a damaged .emi, another rsciio: the .ser alone, as before
        return []


def _rows_first(data: Any, raw: list[RawAxis]) -> tuple[Any, list[RawAxis]]:
    """The frame's rows first, as every reader gives them, also where RosettaSciIO names the
    plane's axes (X, Y) in array order: it does so for Berkeley (NCEM) EMD files, whose
    data it transposes. Taken by position, their X became the rows and, in a non-square
    frame, each pixel size the other axis's."""
    if len(raw) >= 2 and [a.name.strip().lower() for a in raw[-2:]] == ["x", "y"]:
        return data.swapaxes(-1, -2), [*raw[:-2], raw[-1], raw[-2]]
    return data, raw


def read_rsciio(path: Path, lazy: bool) -> list[EMImage]:
    """Every dataset RosettaSciIO finds in ``path`` (a Velox EMD may hold several)."""
    import importlib

    module_name, fmt = FORMATS[path.suffix.lower()]
    try:
        reader = importlib.import_module(module_name).file_reader
    except ImportError as exc:
        raise ReaderError(
            f"reading {fmt} files needs RosettaSciIO (pip install rosettasciio), "
            f"which is not available: {exc}"
        ) from exc
    # rsciio logs expected quirks of real files as warnings
    with quiet_log("rsciio"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signals = _with_emi(path, lazy) or reader(str(path), lazy=lazy)
    notes = sorted({str(w.message) for w in caught})
    images = []
    for index, sig in enumerate(signals):
        data = sig["data"]
        raw = _raw_axes(list(sig.get("axes", [])), data.ndim)
        data, raw = _rows_first(data, raw)
        kind = classify(raw)
        md = sig.get("metadata", {}) or {}
        original = sig.get("original_metadata", {}) or {}
        meta: dict[str, Any] = {
            "format": fmt,
            "reader": f"RosettaSciIO {module_name}",
            **microscope_metadata(md, original),
            "title": md.get("General", {}).get("title", ""),
            "signal_type": md.get("Signal", {}).get("signal_type", ""),
            "dataset_index": index,
            "original_axes": [a.as_dict() for a in raw],
            "original_units": [a.unit for a in raw],
            "original_metadata": json_safe(original),
            "rsciio_metadata": json_safe(md),
        }
        if notes:
            meta["reader_warnings"] = notes
        images.append(
            EMImage(
                data=data,
                axes=convert_axes(raw, kind),
                kind=kind,
                metadata=meta,
                path=str(path),
            )
        )
    return images
