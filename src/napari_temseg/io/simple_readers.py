"""MRC (mrcfile), NPY (numpy) and PNG (imagecodecs) readers.

MRC files are memory-mapped by mrcfile when large, so a tomogram or movie opens at once.
Old MRC files without the "MAP " tag are common (the test file from openNCEM is one),
so mrcfile runs in permissive mode and we check the header ourselves instead.
NPY and PNG carry no calibration; the JSON sidecar our writers leave beside them does.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_temseg.io.axes import classify, default_axes
from napari_temseg.io.model import Axis, DataWarning, EMImage, ReaderError
from napari_temseg.io.sidecar import KEPT, read_sidecar


def axes_from_sidecar(path: Path, shape: tuple[int, ...]) -> tuple[list[Axis] | None, dict]:
    """Axes recorded in our sidecar when it matches ``shape``, and the sidecar's content."""
    info = read_sidecar(path)
    if not info:
        return None, {}
    axes = info.get("axes")
    if not isinstance(axes, list) or [a.get("size") for a in axes] != list(shape):
        return None, info
    try:
        parsed = [
            Axis(
                name=str(a["name"]),
                size=int(a["size"]),
                scale=float(a.get("scale", 1.0)),
                unit=str(a.get("unit", "")),
            )
            for a in axes
        ]
    except (KeyError, TypeError, ValueError):
        return None, info
    return parsed, info


def sidecar_metadata(info: dict) -> dict:
    keep = {k: info[k] for k in KEPT if k in info}
    return {"sidecar": keep} if keep else {}


def _kind(shape: tuple[int, ...]) -> str:
    from napari_temseg.io.axes import RawAxis

    return classify([RawAxis(name="", size=s) for s in shape])


# --------------------------------------------------------------------------- MRC

_MRC_MODES = {0, 1, 2, 3, 4, 6, 12, 101}


def _check_mrc_size(path: Path, header) -> None:
    """Compare the data size the header declares with the bytes actually in the file."""
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    try:
        dtype = data_dtype_from_header(header)
        shape = data_shape_from_header(header)
    except ValueError as exc:
        raise ReaderError(f"corrupt MRC header: {exc}") from exc
    if any(int(s) <= 0 for s in shape):
        raise ReaderError(f"corrupt MRC header: image size {tuple(int(s) for s in shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    available = path.stat().st_size - header.nbytes - int(header.nsymbt)
    if available < expected:
        raise ReaderError(
            f"the file ends early (truncated or incomplete copy?): the header declares "
            f"{expected} bytes of {tuple(int(s) for s in shape)} {dtype.name} data, "
            f"the file holds {max(available, 0)}"
        )


def read_mrc(path: Path, lazy: bool) -> list[EMImage]:
    import mrcfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opener = mrcfile.mmap if lazy else mrcfile.open
        mrc = opener(str(path), mode="r", permissive=True)
    notes = sorted({str(w.message) for w in caught})
    try:
        header = mrc.header
        if int(header.mode) not in _MRC_MODES:
            raise ReaderError(f"unknown MRC data mode {int(header.mode)} (corrupt header?)")
        _check_mrc_size(path, header)
        if mrc.data is None:
            raise ReaderError("no image data: " + ("; ".join(notes) or "data block missing"))
        data = mrc.data if lazy else np.array(mrc.data)
        voxel = mrc.voxel_size
        volume = mrc.is_volume() or mrc.is_volume_stack()
        stack = mrc.is_image_stack()
        meta = {
            "format": "MRC",
            "reader": f"mrcfile {mrcfile.__version__}",
            "original_units": ["Å"] * 3,
            "voxel_size_A": {"x": float(voxel.x), "y": float(voxel.y), "z": float(voxel.z)},
            "ispg": int(header.ispg),
            "mode": int(header.mode),
            "labels": [
                bytes(label).decode("latin-1").strip()
                for label in header.label[: max(0, min(int(header.nlabl), 10))]
            ],
        }
        if notes:
            meta["reader_warnings"] = notes
    finally:
        mrc.close()  # the memmap we keep stays valid (read-only) after closing the file
    suffix = path.suffix.lower()
    if suffix == ".rec":
        volume, stack = True, False
    elif suffix == ".mrcs":
        volume, stack = False, True
    axes = default_axes(data.shape)
    calib = {"x": float(voxel.x), "y": float(voxel.y), "z": float(voxel.z)}
    for i, ax in enumerate(axes):
        name = ax.name
        if data.ndim >= 3 and i == data.ndim - 3:
            name = "z" if volume and not stack else "frame"
        size_a = calib.get(name, 0.0)
        if name in calib and size_a > 0 and np.isfinite(size_a):
            axes[i] = Axis(name=name, size=ax.size, scale=size_a / 10.0, unit="nm")
        else:
            axes[i] = Axis(name=name, size=ax.size)
    kind = "image" if data.ndim == 2 else ("stack" if data.ndim >= 3 else _kind(data.shape))
    return [EMImage(data=data, axes=axes, kind=kind, metadata=meta, path=str(path))]


# --------------------------------------------------------------------------- NPY / PNG


def _with_sidecar(path: Path, data, fmt: str, reader: str) -> EMImage:
    shape = tuple(int(s) for s in data.shape)
    axes, info = axes_from_sidecar(path, shape)
    kind = _kind(shape)
    meta = {"format": fmt, "reader": reader, **sidecar_metadata(info)}
    if axes is None:
        axes = default_axes(shape, kind)
        meta["calibration"] = "none in file"
    return EMImage(data=data, axes=axes, kind=kind, metadata=meta, path=str(path))


def read_npy(path: Path, lazy: bool) -> list[EMImage]:
    try:
        data = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ReaderError("holds Python objects, not a numeric array") from exc
        raise
    if not isinstance(data, np.ndarray):
        raise ReaderError("is an .npz archive, not a single array")
    if data.dtype.kind not in "biufc" or data.ndim == 0:
        raise ReaderError(f"holds a {data.ndim}-D {data.dtype} array, not an image")
    return [_with_sidecar(path, data, "NPY", f"numpy {np.__version__}")]


def read_png(path: Path, lazy: bool) -> list[EMImage]:
    """A PNG holds one picture, so a third axis is always its samples, never frames:
    RGB(A) comes back with a colour axis (``io.grey`` makes it grey for processing, as
    for TIFF), grey with alpha as the grey alone, with a note."""
    import imagecodecs

    data = imagecodecs.png_decode(path.read_bytes())
    note = None
    if data.ndim == 3 and data.shape[-1] == 2:
        data, note = np.ascontiguousarray(data[..., 0]), "grey with alpha: alpha dropped"
    image = _with_sidecar(path, data, "PNG", f"imagecodecs {imagecodecs.__version__}")
    if data.ndim == 3 and image.axes[-1].name != "rgb":
        axes = [*default_axes(data.shape[:2]), Axis("rgb", int(data.shape[-1]))]
        image = replace(image, axes=axes, kind="image")
    if note:
        warnings.warn(f"{path.name}: {note}", DataWarning, stacklevel=2)
        notes = [*image.metadata.get("notes", []), note]
        image = replace(image, metadata={**image.metadata, "notes": notes})
    return [image]
