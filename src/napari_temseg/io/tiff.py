"""TIFF reading with tifffile: ImageJ, OME, FEI/Thermo and plain calibrated TIFFs.

Calibration is taken, in this order, from: our own JSON (ImageJ ``Info`` or tifffile's
shaped description, exact), ImageJ (XResolution/YResolution in ``unit``, ``spacing`` for
Z), OME-XML (PhysicalSize* with units, µm by default), the FEI/Thermo ``PixelWidth`` tag
(m), and finally the baseline XResolution when its ResolutionUnit is a length (cm, mm,
µm). Inch resolutions are print DPI, never a pixel size, so they count as uncalibrated.
Real files are messier than what tifffile writes (ImageJ omits the Compression tag, vendors
add private tags), so metadata is read defensively: a failure there is a note in the
metadata and the image opens uncalibrated; only unreadable pixels are an error.
Large files open lazily: as a memory map when the pixels are stored contiguously and
uncompressed, else one dask chunk per TIFF page (LZW/zstd decoded by imagecodecs).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg.io.logs import quiet_log
from napari_temseg.io.model import Axis, EMImage
from napari_temseg.io.sidecar import KEPT
from napari_temseg.io.units import to_nm

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_AXIS_NAMES = {"X": "x", "Y": "y", "Z": "z", "T": "time", "C": "channel", "S": "rgb"}
_RESUNIT_NM = {3: 1e7, 4: 1e6, 5: 1e3}  # CENTIMETER, MILLIMETER, MICROMETER (non-standard)


def _temseg_json(tf: Any) -> dict | None:
    """The calibration block our writers embed (ImageJ Info or shaped description)."""
    candidates: list[Any] = []
    if tf.is_imagej and tf.imagej_metadata:
        candidates.append(tf.imagej_metadata.get("Info"))
    if tf.is_shaped and tf.shaped_metadata:
        candidates.extend(m.get("temseg") for m in tf.shaped_metadata)
    for item in candidates:
        if isinstance(item, dict):
            block = item.get("napari-temseg", item)
        elif isinstance(item, str) and item.lstrip().startswith("{"):
            try:
                block = json.loads(item).get("napari-temseg")
            except ValueError:
                continue
        else:
            continue
        if isinstance(block, dict) and "axes" in block:
            return block
    return None


def _rational_size(tag: Any) -> float | None:
    """Pixel size in the file's unit from an X/YResolution tag (pixels per unit)."""
    if tag is None:
        return None
    value = tag.value
    try:
        per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (ZeroDivisionError, TypeError, IndexError):
        return None
    if not per_unit or not math.isfinite(per_unit) or per_unit <= 0:
        return None
    return 1.0 / per_unit


def _imagej_calibration(tf: Any, page: Any) -> dict[str, float]:
    ij = tf.imagej_metadata or {}
    unit = ij.get("unit", "")
    out: dict[str, float] = {}
    for letter, tag, key in (("X", "XResolution", "unit"), ("Y", "YResolution", "yunit")):
        size = _rational_size(page.tags.get(tag))
        nm = to_nm(size, ij.get(key, unit)) if size is not None else None
        if nm is not None:
            out[letter] = nm
    if "spacing" in ij:
        nm = to_nm(ij["spacing"], ij.get("zunit", unit))
        if nm is not None:
            out["Z"] = nm
    return out


def _ome_calibration(tf: Any, series_index: int) -> dict[str, float]:
    import tifffile

    try:
        images = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]
    except (KeyError, TypeError, ValueError):
        return {}
    if isinstance(images, dict):
        images = [images]
    if series_index >= len(images):
        return {}
    pixels = images[series_index].get("Pixels", {})
    out = {}
    for letter in "XYZ":
        if f"PhysicalSize{letter}" in pixels:
            unit = pixels.get(f"PhysicalSize{letter}Unit", "µm")  # OME's default unit
            nm = to_nm(pixels[f"PhysicalSize{letter}"], unit)
            if nm is not None:
                out[letter] = nm
    return out


def _fei_calibration(tf: Any) -> dict[str, float]:
    scan = (tf.fei_metadata or {}).get("Scan", {})
    out = {}
    for letter, key in (("X", "PixelWidth"), ("Y", "PixelHeight")):
        nm = to_nm(scan.get(key), "m")
        if nm is not None:
            out[letter] = nm
    return out


def _baseline_calibration(page: Any) -> dict[str, float]:
    unit = page.tags.get("ResolutionUnit")
    factor = _RESUNIT_NM.get(int(unit.value)) if unit is not None else None
    if factor is None:
        return {}
    out = {}
    for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
        size = _rational_size(page.tags.get(tag))
        if size is not None:
            out[letter] = size * factor
    return out


def _calibration(tf: Any, series: Any, index: int) -> tuple[dict[str, float], str]:
    page = series.keyframe
    if tf.is_imagej:
        return _imagej_calibration(tf, page), "ImageJ"
    if tf.is_ome:
        return _ome_calibration(tf, index), "OME"
    if getattr(tf, "is_fei", False) and tf.fei_metadata:
        return _fei_calibration(tf), "FEI/Thermo"
    return _baseline_calibration(page), "TIFF resolution tags"


def _lazy_array(path: Path, series: Any, index: int) -> Any:
    """A memory map when the data is contiguous, else a dask array of one chunk per page."""
    import tifffile

    if series.dataoffset is not None:
        return tifffile.memmap(str(path), series=index, mode="r")
    import dask
    import dask.array as da

    pages = list(series.pages)
    page_shape = tuple(series.keyframe.shape)
    if any(p is None for p in pages) or len(pages) * math.prod(page_shape) != math.prod(
        series.shape
    ):
        return None
    indices = [p.index for p in pages]

    def read_page(i: int) -> np.ndarray:
        with tifffile.TiffFile(str(path)) as tf:
            return tf.pages[i].asarray()

    frames = [
        da.from_delayed(dask.delayed(read_page)(i), shape=page_shape, dtype=series.dtype)
        for i in indices
    ]
    return da.stack(frames).reshape(series.shape)


def _compression(page: Any) -> str:
    """The compression's name; tifffile gives a plain int when the tag is missing (ImageJ)."""
    import tifffile

    value = page.compression
    try:
        return tifffile.COMPRESSION(int(value)).name
    except (TypeError, ValueError):
        return str(value)


class _Notes(list):
    """What could not be read from a file's metadata: kept, shown, never fatal."""

    def attempt(self, what: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # any parser quirk: the pixels are still readable
            self.append(f"{what} ignored ({type(exc).__name__}: {exc})")
            return default


def _describe(tf: Any, series: Any, index: int) -> tuple[list[Axis], dict[str, Any]]:
    """Axes and metadata of one series. Never raises: metadata that cannot be read
    degrades to 'not calibrated' plus a note, so it can never make the image unreadable."""
    import tifffile

    notes = _Notes()
    shape = tuple(int(s) for s in series.shape)
    letters = _letters(series)
    ours = notes.attempt("napari-temseg metadata", lambda: _temseg_json(tf), None)
    calib, source = notes.attempt(
        "calibration", lambda: _calibration(tf, series, index), ({}, "none")
    )
    axes = notes.attempt("calibrated axes", lambda: _axes(letters, shape, calib, ours), None)
    if axes is None:
        calib = {}
        axes = _axes(letters, shape, {}, None)
    meta: dict[str, Any] = {
        "format": "TIFF" + (" (ImageJ)" if tf.is_imagej else "") + (" (OME)" if tf.is_ome else ""),
        "reader": f"tifffile {tifffile.__version__}",
        "calibration_source": source if calib else "none in file",
        "tiff_axes": series.axes,
        "compression": notes.attempt("compression", lambda: _compression(series.keyframe), ""),
    }
    if ours:
        meta["calibration_source"] = "napari-temseg metadata"
        meta["sidecar"] = {k: ours[k] for k in KEPT if k in ours}
        if "metadata" in ours:
            meta["original_metadata"] = ours["metadata"]
    if tf.is_imagej:
        meta["imagej_metadata"] = notes.attempt("ImageJ metadata", lambda: _imagej_meta(tf), {})
    meta.update(notes.attempt("microscope metadata", lambda: _microscope(tf), {}))
    if notes:
        meta["metadata_notes"] = list(notes)
    return axes, meta


def _letters(series: Any) -> str:
    """The series' axis letters; samples are 'rgb' only when the photometric says RGB."""
    page = series.keyframe
    rgb = int(getattr(page, "photometric", 0) or 0) == 2  # PHOTOMETRIC.RGB
    return series.axes if rgb else series.axes.replace("S", "C")


def _imagej_meta(tf: Any) -> dict[str, Any]:
    return {k: v for k, v in (tf.imagej_metadata or {}).items() if isinstance(v, (str, int, float))}


def _microscope(tf: Any) -> dict[str, Any]:
    """Acquisition facts (microscope, voltage, ...) from FEI/Thermo and other vendor tags."""
    from napari_temseg.io.metadata import json_safe, microscope_metadata

    trees = {}
    if getattr(tf, "is_fei", False) and tf.fei_metadata:
        trees["fei_metadata"] = json_safe(tf.fei_metadata)
    if not trees:
        return {}
    return {**microscope_metadata(*trees.values()), **trees}


def tifffile_quiet() -> AbstractContextManager[None]:
    """Silence tifffile's log while we read: of a damaged file it printed a line for every
    tag it could not parse (``<TiffTag.fromfile> raised TiffFileError(...)``) beside the
    one line our readers give."""
    return quiet_log("tifffile", logging.CRITICAL + 1)  # its errors are ours to say


def read_tiff(path: Path, lazy: bool) -> list[EMImage]:
    with tifffile_quiet():
        return _read_tiff(path, lazy)


def _read_tiff(path: Path, lazy: bool) -> list[EMImage]:
    import tifffile

    images = []
    with tifffile.TiffFile(str(path)) as tf:
        for index, series in enumerate(tf.series):
            data = _lazy_array(path, series, index) if lazy else None
            if data is None:
                data = series.asarray()
            axes, meta = _describe(tf, series, index)
            shape = tuple(a.size for a in axes)
            if math.prod(shape) == math.prod(data.shape) and shape != tuple(data.shape):
                data = data.reshape(shape)  # ours: (1, H, W) that ImageJ squeezed to (H, W)
            names = [a.name for a in axes]
            if "rgb" in names[:-1]:  # planar RGB(A): colour last, as napari shows it
                order = [i for i, n in enumerate(names) if n != "rgb"] + [names.index("rgb")]
                data, axes = data.transpose(order), [axes[i] for i in order]
            plane_dims = len([a for a in axes if a.name != "rgb"])
            kind = "spectrum" if plane_dims < 2 else "image" if plane_dims == 2 else "stack"
            images.append(EMImage(data=data, axes=axes, kind=kind, metadata=meta, path=str(path)))
    return images


def _axes(letters: str, shape: tuple[int, ...], calib: dict[str, float], ours: dict | None):
    sizes = [int(a["size"]) for a in ours["axes"]] if ours else []
    if (
        ours
        and math.prod(sizes) == math.prod(shape)
        and [s for s in sizes if s != 1] == [s for s in shape if s != 1]
    ):  # our own axes, also when ImageJ dropped a length-1 axis of ours
        exact = [
            Axis(a["name"], int(a["size"]), float(a.get("scale", 1.0)), str(a.get("unit", "")))
            for a in ours["axes"]
        ]
        # keep our exact value unless the file's own calibration disagrees (edited in Fiji)
        by_letter = {"x": "X", "y": "Y", "z": "Z"}
        if all(
            a.unit != "nm"
            or by_letter.get(a.name) not in calib
            or math.isclose(calib[by_letter[a.name]], a.scale, rel_tol=1e-4)
            for a in exact
        ):
            return exact
    axes = []
    used: dict[str, int] = {}
    for letter, size in zip(letters, shape, strict=True):
        name = _AXIS_NAMES.get(letter, "frame")
        used[name] = used.get(name, -1) + 1
        if used[name]:
            name = f"{name}{used[name]}"
        if letter in calib and name in ("x", "y", "z"):
            axes.append(Axis(name, int(size), float(calib[letter]), "nm"))
        else:
            axes.append(Axis(name, int(size)))
    return axes
