"""npe2 reader and writers: the napari face of ``napari_temseg.io``.

The reader never lets an exception reach napari (napari would show a traceback): a
damaged file becomes an error notification naming the file, a spectrum a warning
saying what it is and why it was not opened. When nothing could be opened it returns
napari's "handled, no layers" sentinel ``[(None,)]``: returning ``[]`` would make napari
report a reader failure of its own. Notifications are imported lazily so that this
module imports without Qt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg.display import display_limits
from napari_temseg.io.axes import NOT_IMAGES
from napari_temseg.io.calibration import Calibration
from napari_temseg.io.model import EMImage, ReaderError
from napari_temseg.io.readers import SUFFIXES, not_an_image_reason, read
from napari_temseg.io.sidecar import read_class_table
from napari_temseg.io.tiff import TIFF_MAGIC

NULL_LAYER = [(None,)]
_MAGIC = {".npy": (b"\x93NUMPY",), ".tif": TIFF_MAGIC, ".tiff": TIFF_MAGIC}
READER_SUFFIXES = tuple(s for s in SUFFIXES if s != ".png")  # as in napari.yaml


def _notify(level: str, message: str) -> None:
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning}.get(
        level, notifications.show_info
    )(message)


def _accepts(path: Any) -> bool:
    """Ours by extension; a .tif/.npy that is not one at all is left to other plugins."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in READER_SUFFIXES:
        return False
    if suffix in _MAGIC and p.is_file():
        try:
            with open(p, "rb") as fh:
                head = fh.read(8)
        except OSError:
            return True  # let the reader report why it cannot be read
        return any(head.startswith(m) for m in _MAGIC[suffix]) or not head
    return True


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """npe2 reader hook: a reader function for our files, None for anything else."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    if not paths or not all(_accepts(p) for p in paths):
        return None
    return read_layers


def layer_data(image: EMImage, name: str) -> tuple[Any, dict, str]:
    """One napari LayerData tuple: data, calibration (nm), axis names and metadata."""
    axes = image.axes
    data = image.data
    rgb = bool(axes) and axes[-1].name == "rgb" and axes[-1].size in (3, 4)
    kept = axes[:-1] if rgb else axes
    meta = {
        **image.metadata,
        "path": image.path,
        "kind": image.kind,
        "pixel_size_nm": image.pixel_size_nm,
        "axes": [{"name": a.name, "size": a.size, "scale": a.scale, "unit": a.unit} for a in axes],
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(a.scale for a in kept),
        "units": tuple("nm" if a.spatial else "pixel" for a in kept),
        "axis_labels": tuple(a.name for a in kept),
        "metadata": meta,
        "rgb": rgb,
    }
    side = image.metadata.get("sidecar") or {}
    if side.get("kind") == "labels" and not rgb and np.dtype(image.dtype).kind in "ui":
        return _labels_data(data, kwargs, side)
    if image.lazy and not rgb:
        kwargs["contrast_limits"] = display_limits(data)  # the first frame only
    return (data, kwargs, "image")


def _labels_data(data: Any, kwargs: dict, side: dict) -> tuple[Any, dict, str]:
    """A mask our writers wrote (its sidecar says labels) as a Labels layer with its
    classes' names and colours, as the docks made it: opened as an image it could be
    neither measured nor exported again with its classes."""
    from napari.utils.colormaps import DirectLabelColormap

    table = read_class_table(side.get("classes"))
    names = {v: c["name"] for v, c in table.items() if "name" in c}
    colors = {v: c["color"] for v, c in table.items() if "color" in c}
    meta = dict(kwargs["metadata"])
    if names:
        meta["class_names"] = names
    if colors:
        meta["class_colors"] = colors
    out = {k: v for k, v in kwargs.items() if k != "rgb"}
    out["metadata"] = meta
    if colors:
        out["colormap"] = DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", **colors}
        )
    return (data, out, "labels")


def _read_one(path: str) -> list[tuple]:
    try:
        images = read(path)
    except ReaderError as exc:
        _notify("error", f"napari-temseg: {exc}")
        return []
    except Exception as exc:  # a bug of ours must still not become a napari traceback
        _notify("error", f"napari-temseg: cannot open '{Path(path).name}': {exc!r}")
        return []
    stem = Path(path).stem
    layers = []
    for index, image in enumerate(images):
        if image.kind in NOT_IMAGES or image.kind == "scalar":
            _notify(
                "warning",
                f"napari-temseg: '{Path(path).name}' "
                + (f"dataset {index + 1} " if len(images) > 1 else "")
                + f"is {not_an_image_reason(image)}; it was not opened "
                "(this plugin opens images; use HyperSpy or DigitalMicrograph for spectra).",
            )
            continue
        title = image.metadata.get("title") or ""
        name = stem if len(images) == 1 else f"{stem} [{title or index + 1}]"
        if image.kind == "diffraction":
            _notify(
                "info",
                f"napari-temseg: '{Path(path).name}' is a diffraction pattern; opened "
                "in pixels (its reciprocal-space calibration is in the layer metadata).",
            )
        try:
            layers.append(layer_data(image, name))
        except Exception as exc:
            _notify("error", f"napari-temseg: cannot display '{Path(path).name}': {exc}")
    return layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """The reader function napari calls; never raises."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        layers.extend(_read_one(os.fspath(p)))
    return layers or NULL_LAYER


# --------------------------------------------------------------------------- writers


def layer_scale_nm(meta: dict, ndim: int) -> list[float] | None:
    """The layer scale in nm, or None for an uncalibrated layer (see ``io.calibration``)."""
    return Calibration.from_layer_meta(meta, ndim).scale_nm()


_KNOWN_AXES = {"x", "y", "z", "frame", "time", "channel", "tilt"}


def layer_axis_names(meta: dict, ndim: int) -> list[str] | None:
    """The layer's axis labels when they are ours (z vs frame matters for calibration)."""
    raw = meta.get("axis_labels")
    labels = [str(a) for a in (raw if raw is not None else [])][-ndim:]
    if len(labels) == ndim and set(labels) <= _KNOWN_AXES and len(set(labels)) == ndim:
        return labels
    return None


def class_info(data: Any, meta: dict) -> tuple[Any, Any]:
    """Class names and colours of a Labels layer: its metadata, features or colormap."""
    md = meta.get("metadata") or {}
    names = md.get("class_names")
    colors = md.get("class_colors")
    features = meta.get("features")
    if names is None and features is not None and len(features):
        column = next((c for c in ("name", "class_name", "class") if c in features), None)
        if column is not None:
            index = features["index"] if "index" in features else range(len(features))
            names = {
                int(i): str(n) for i, n in zip(index, features[column], strict=False) if int(i) > 0
            }
    if colors is None and meta.get("colormap") is not None:
        values = np.unique(np.asarray(data))
        values = values[values > 0]
        if 0 < values.size <= 256:
            try:
                rgba = np.asarray(meta["colormap"].map(values))
                colors = {
                    int(v): tuple(float(c) for c in rgba[i][:3]) for i, v in enumerate(values)
                }
            except Exception:
                colors = None
    return names, colors


def _write_labels(path: str, data: Any, meta: dict, fmt: str) -> list[str]:
    from napari_temseg.io.writers import write_labels

    array = np.asarray(data[0] if meta.get("multiscale") else data)
    names, colors = class_info(array, meta)
    return write_labels(
        path,
        array,
        scale=layer_scale_nm(meta, array.ndim),
        class_names=names,
        class_colors=colors,
        fmt=fmt,
        axes=layer_axis_names(meta, array.ndim),
        metadata={"mask": "semantic", "source": meta.get("name", "")},
    )


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer as calibrated uint8/uint16 TIFF + JSON sidecar."""
    return _write_labels(path, data, meta, "tiff")


def write_labels_png(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a 2D Labels layer as PNG + JSON sidecar (refuses 3D data)."""
    return _write_labels(path, data, meta, "png")


def write_labels_npy(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer as NPY + JSON sidecar with scale and classes."""
    return _write_labels(path, data, meta, "npy")


def write_image_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: an Image layer as float32 ImageJ TIFF with its calibration in nm."""
    from napari_temseg.io.metadata import json_safe
    from napari_temseg.io.writers import WriterError, write_image

    array = np.asarray(data[0] if meta.get("multiscale") else data)
    if meta.get("rgb"):
        raise WriterError("RGB images are not saved as float32 TIFF by napari-temseg")
    md = meta.get("metadata") or {}
    keep = {k: v for k, v in md.items() if k != "original_metadata"}
    return write_image(
        path,
        array,
        scale=layer_scale_nm(meta, array.ndim),
        metadata=json_safe(keep),
        axes=layer_axis_names(meta, array.ndim),
    )
