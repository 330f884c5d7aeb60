"""Writers for masks and images that other tools read with the right scale.

Labels go to TIFF (ImageJ hyperstack with calibration so Fiji shows nm, the smallest of
uint8/uint16 that holds every label, zlib-compressed), PNG (2D only) or NPY, always with
a JSON sidecar (``<file>.json``) holding scale, axes and class names/colours; the TIFF
also embeds the same block in ImageJ's ``Info`` property. Images go to float32 TIFF.
Files are written to a temporary name first and renamed, so a failed write never
leaves half a file under the real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg.io.metadata import json_safe
from napari_temseg.io.model import Axis
from napari_temseg.io.outputs import replace_atomically as _replace_atomically
from napari_temseg.io.sidecar import class_table, write_sidecar

FORMATS = {"tiff": (".tif", ".tiff"), "png": (".png",), "npy": (".npy",)}
_ALIASES = {"tif": "tiff", "tiff": "tiff", "png": "png", "npy": "npy"}
_IJ_LETTERS = {"x": "X", "y": "Y", "z": "Z", "frame": "T", "time": "T", "channel": "C"}
_MAX_INFO_BYTES = 1_000_000


class WriterError(ValueError):
    """The data cannot be written as asked (wrong dimensionality, dtype, format)."""


def target_path(path: str | os.PathLike, fmt: str | None) -> tuple[Path, str]:
    """The path to write (extension added when missing) and the format name."""
    path = Path(path)
    suffix = path.suffix.lower()
    if fmt is None:
        for name, suffixes in FORMATS.items():
            if suffix in suffixes:
                return path, name
        raise WriterError(
            f"cannot tell the format of '{path.name}' from its extension: use .tif, .png or .npy"
        )
    name = _ALIASES.get(str(fmt).lower().lstrip("."))
    if name is None:
        raise WriterError(f"unknown format '{fmt}': choose TIFF, PNG or NPY")
    if suffix not in FORMATS[name]:
        path = path.with_name(path.name + FORMATS[name][0])
    return path, name


def label_dtype(data: np.ndarray) -> np.dtype:
    """uint8 when every label fits, else uint16, else uint32."""
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if data.dtype.kind not in "iu":
        raise WriterError(f"labels must be integers, got {data.dtype}")
    if data.size == 0:
        raise WriterError("the labels are empty (size 0)")
    lo, hi = int(data.min()), int(data.max())
    if lo < 0:
        raise WriterError(f"labels must be >= 0 (0 = not labelled), found {lo}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise WriterError(f"label {hi} does not fit in 32 bits")


class FrameStream:
    """A stack written frame by frame: ``frames`` yields its 2D frames in order.

    Pass one to :func:`write_image` or :func:`write_labels` instead of an array when the
    frames are computed one at a time (denoising or segmenting a long stack): tifffile
    writes each frame as it comes, so only one frame is ever in memory. TIFF only.
    """

    def __init__(self, shape: Sequence[int], dtype: Any, frames: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._frames = frames

    def __iter__(self):
        height, width = self.shape[-2:]
        count = 0
        for frame in self._frames:
            frame = np.asarray(frame)
            if frame.shape != (height, width):
                raise WriterError(
                    f"frame {count} has shape {frame.shape}, expected {(height, width)}"
                )
            count += 1
            yield frame.astype(self.dtype, copy=False)
        expected = int(np.prod(self.shape[:-2], dtype=np.int64))
        if count != expected:
            raise WriterError(f"got {count} frames, expected {expected}")


class TileStream:
    """A 2D image written band by band: ``bands`` yields full-width row bands, top to bottom.

    For frames larger than memory (``engine.large``): the TIFF is tiled (``tile`` x
    ``tile``) and each band is cut into tiles and written as it comes, so only one band is
    ever in memory. Every band but the last must be a whole number of tile rows high.
    ImageJ cannot read tiled files, so these are plain TIFFs carrying our calibration
    (resolution tags and the JSON block); Fiji opens them through Bio-Formats. TIFF only.
    """

    def __init__(self, shape: Sequence[int], dtype: Any, bands: Any, tile: int = 256) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 2:
            raise WriterError(f"a band-by-band image is 2D, got shape {self.shape}")
        if tile < 16 or tile % 16:
            raise WriterError(f"TIFF tiles must be a multiple of 16 pixels, got {tile}")
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self.tile = int(tile)
        self._bands = bands

    def tiles(self):
        """The image's tiles in TIFF order (row of tiles by row of tiles, left to right)."""
        height, width = self.shape
        t, row = self.tile, 0
        pending = np.empty((0, width), self.dtype)
        for band in self._bands:
            band = np.asarray(band)
            if band.ndim != 2 or band.shape[1] != width:
                raise WriterError(f"band of shape {band.shape} does not fit width {width}")
            pending = np.concatenate([pending, band.astype(self.dtype, copy=False)])
            if row + len(pending) > height:
                raise WriterError(f"bands hold more than the image's {height} rows")
            while len(pending) >= t or (len(pending) and row + len(pending) == height):
                strip, pending = pending[:t], pending[t:]
                for x0 in range(0, width, t):
                    yield strip[:, x0 : x0 + t]  # tifffile zero-pads incomplete tiles
                row += len(strip)
        if row != height:
            raise WriterError(f"got {row} rows, expected {height}")


def mask_axes(
    shape: Sequence[int],
    scale: Sequence[float] | None,
    names: Sequence[str] | Sequence[Axis] | None = None,
) -> list[Axis]:
    """Axes for an array being written: y, x last; z or frame in front; nm when scaled.

    ``names`` may be the input's own :class:`Axis` list: then names, scales and units are
    written exactly as read (``scale`` is ignored), so an uncalibrated input stays
    uncalibrated and a time axis stays a time axis through denoise/segment.
    """
    ndim = len(shape)
    if names is not None and all(isinstance(n, Axis) for n in names):
        given = list(names)
        if [a.size for a in given] != [int(s) for s in shape]:
            raise WriterError(f"axes {[a.size for a in given]} do not match shape {tuple(shape)}")
        return [Axis(a.name, int(a.size), float(a.scale), a.unit) for a in given]
    if scale is not None:
        scale = [float(s) for s in list(scale)[-ndim:]]
        if len(scale) != ndim:
            raise WriterError(f"scale {tuple(scale)} does not match {ndim}-D data")
        if any(not np.isfinite(s) or s <= 0 for s in scale):
            raise WriterError(f"scale must be positive, got {tuple(scale)}")
    if names is None:
        lead = []
        for i in range(ndim - 2):
            last_lead = i == ndim - 3
            lead.append("z" if last_lead and scale is not None and scale[i] != 1.0 else "frame")
        names = [*lead, "y", "x"][-ndim:]
        seen: dict[str, int] = {}
        unique = []
        for n in names:
            seen[n] = seen.get(n, -1) + 1
            unique.append(f"{n}{seen[n]}" if seen[n] else n)
        names = unique
    if len(names) != ndim:
        raise WriterError(f"{len(names)} axis names for {ndim}-D data")
    axes = []
    for i, (size, name) in enumerate(zip(shape, names, strict=True)):
        if scale is not None and name in ("x", "y", "z"):
            axes.append(Axis(name, int(size), scale[i], "nm"))
        else:
            axes.append(Axis(name, int(size)))
    return axes


def _axes_json(axes: list[Axis]) -> list[dict]:
    return [{"name": a.name, "size": a.size, "scale": a.scale, "unit": a.unit} for a in axes]


def _lut(classes: list[dict]) -> np.ndarray | None:
    """An ImageJ LUT (3 x 256) showing each class in its colour; grey ramp elsewhere."""
    coloured = [c for c in classes if "color" in c and 0 <= c["value"] <= 255]
    if not coloured:
        return None
    lut = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    lut[:, 0] = 0
    for c in coloured:
        hexa = c["color"].lstrip("#")
        lut[:, c["value"]] = [int(hexa[k : k + 2], 16) for k in (0, 2, 4)]
    return lut


def _write_tiff(path: Path, data: np.ndarray, axes: list[Axis], info: dict, **extra) -> None:
    import tifffile

    letters = "".join(_IJ_LETTERS.get(a.name, "?") for a in axes)
    stream = isinstance(data, FrameStream)
    tiled = isinstance(data, TileStream)
    if tiled:
        source = {"data": data.tiles(), "shape": data.shape, "dtype": data.dtype}
        source["tile"] = (data.tile, data.tile)
    elif stream:
        source = {"data": iter(data), "shape": data.shape, "dtype": data.dtype}
    else:
        source = {"data": data}
    imagej_ok = (
        not tiled
        and data.dtype in (np.uint8, np.uint16, np.float32)
        and "?" not in letters
        and len(set(letters)) == len(letters)
        and letters == "".join(c for c in "TZCYX" if c in letters)
    )
    by_name = {a.name: a for a in axes}
    calibrated = "x" in by_name and by_name["x"].unit == "nm"
    resolution = None
    if calibrated and "y" in by_name:
        resolution = (1.0 / by_name["x"].scale, 1.0 / by_name["y"].scale)
    dm_tags = _dm_scale_tags(by_name["x"].scale, by_name["y"].scale) if resolution else []
    block = json.dumps({"napari-temseg": info})
    if len(block) > _MAX_INFO_BYTES:
        info = {k: v for k, v in info.items() if k != "metadata"}
        block = json.dumps({"napari-temseg": info})

    def write(tmp: Path) -> None:
        if imagej_ok:
            metadata: dict[str, Any] = {"axes": letters, "Info": block}
            if calibrated:
                metadata["unit"] = "nm"
            if "z" in by_name and by_name["z"].unit == "nm":
                metadata["spacing"] = by_name["z"].scale
            if extra.get("lut") is not None:
                metadata["LUTs"] = [extra["lut"]]
            tifffile.imwrite(
                tmp,
                **source,
                imagej=True,
                resolution=resolution,
                metadata=metadata,
                extratags=dm_tags,
                compression=extra.get("compression"),
            )
        else:  # ImageJ cannot hold this dtype/axis layout (or tiles): plain TIFF + our JSON
            tifffile.imwrite(
                tmp,
                **source,
                photometric="minisblack",
                **_cm_resolution(resolution),
                metadata={"temseg": {"napari-temseg": info}},
                extratags=dm_tags,
                compression=extra.get("compression"),
            )

    _replace_atomically(path, write)


def _dm_scale_tags(x_nm: float, y_nm: float) -> list[tuple]:
    """Gatan DigitalMicrograph's private scale and unit tags, in nm.

    RosettaSciIO (so HyperSpy) takes its units only from these (ImageJ's ``unit`` counts
    for it only when it is "micron"), so without them our files open there with the
    right scale and no unit. Its reader pairs 65003 / 65009 with the rows and 65004 /
    65010 with the columns."""
    return [
        (65003, "s", 0, "nm", True),
        (65004, "s", 0, "nm", True),
        (65009, "d", 1, float(y_nm), True),
        (65010, "d", 1, float(x_nm), True),
    ]


def _cm_resolution(per_nm: tuple[float, float] | None) -> dict[str, Any]:
    """Baseline TIFF resolution tags (pixels per cm) for readers that know no ImageJ."""
    if per_nm is None or max(per_nm) * 1e7 >= 2**31:
        return {}
    return {"resolution": tuple(r * 1e7 for r in per_nm), "resolutionunit": "CENTIMETER"}


def _write_png(path: Path, data: np.ndarray) -> None:
    import imagecodecs

    if data.ndim != 2:
        raise WriterError(
            f"PNG holds a single 2D image, but '{path.name}' would be {data.ndim}-D "
            f"{tuple(data.shape)}: save as TIFF or NPY, or export one file per frame"
        )
    if data.dtype not in (np.uint8, np.uint16):
        raise WriterError(
            f"PNG holds labels up to 65535; these need {data.dtype}: save as TIFF or NPY"
        )
    encoded = imagecodecs.png_encode(np.ascontiguousarray(data))
    _replace_atomically(path, lambda tmp: tmp.write_bytes(encoded))


def _write_npy(path: Path, data: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, data, allow_pickle=False)

    _replace_atomically(path, write)


def write_labels(
    path: str | os.PathLike,
    data: Any,
    scale: Sequence[float] | None = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    class_colors: Mapping[int, Any] | Sequence[Any] | None = None,
    fmt: str | None = None,
    *,
    axes: Sequence[str] | Sequence[Axis] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write a label image (0 = not labelled) and its JSON sidecar; return both paths.

    ``scale`` is per axis in nm (None: uncalibrated). ``class_names``/``class_colors``
    are mappings {label: value} or sequences naming labels 1, 2, ... ``fmt`` is
    "tiff", "png" or "npy" (default: from the extension, which is added when missing).
    ``metadata`` (JSON-able) is stored in the sidecar, e.g. {"mask": "instance"}.
    """
    target, name = target_path(path, fmt)
    if isinstance(data, FrameStream | TileStream):
        if name != "tiff":
            raise WriterError("a stack written frame by frame can only be saved as TIFF")
        if data.dtype not in (np.uint8, np.uint16, np.uint32):
            raise WriterError(f"labels must be unsigned integers, got {data.dtype}")
        array, dtype = data, data.dtype
    else:
        array = np.asarray(data)
        dtype = label_dtype(array)
        array = array.astype(dtype, copy=False)
    ax = mask_axes(array.shape, scale, axes)
    classes = class_table(class_names, class_colors)
    info: dict[str, Any] = {
        "kind": "labels",
        "shape": list(array.shape),
        "dtype": str(dtype),
        "axes": _axes_json(ax),
        "classes": classes,
        **json_safe(dict(metadata or {})),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    if name == "tiff":
        lut = _lut(classes) if dtype == np.uint8 else None
        _write_tiff(target, array, ax, info, lut=lut, compression="zlib")
    elif name == "png":
        _write_png(target, array)
    else:
        _write_npy(target, array)
    sidecar = write_sidecar(target, info)
    return [str(target), str(sidecar)]


def write_image(
    path: str | os.PathLike,
    data: Any,
    scale: Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    axes: Sequence[str] | Sequence[Axis] | None = None,
) -> list[str]:
    """Write an image as a calibrated float32 ImageJ TIFF; ``metadata`` goes in its Info.

    ``axes`` (names, or the input's own :class:`Axis` list) overrides the axes guessed
    from the shape and ``scale``."""
    target, _ = target_path(path, "tiff")
    if isinstance(data, FrameStream):
        data = FrameStream(data.shape, np.float32, data._frames)
    elif isinstance(data, TileStream):
        data = TileStream(data.shape, np.float32, data._bands, data.tile)
    streamed = isinstance(data, FrameStream | TileStream)
    array = data if streamed else np.asarray(data)
    if array.dtype.kind == "c":
        raise WriterError("complex images cannot be saved as float32 TIFF; take abs() first")
    if array.dtype.kind not in "biuf" or array.ndim < 2:
        raise WriterError(
            f"expected a 2D or larger numeric image, got {array.ndim}-D {array.dtype}"
        )
    if not streamed:
        array = array.astype(np.float32, copy=False)
    ax = mask_axes(array.shape, scale, axes)
    info = {
        "kind": "image",
        "shape": list(array.shape),
        "dtype": "float32",
        "axes": _axes_json(ax),
        "metadata": json_safe(dict(metadata or {})),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_tiff(target, array, ax, info)
    return [str(target)]


def instance_mask(semantic: Any, *, per_frame: bool = False) -> np.ndarray:
    """Connected components of each class, numbered 1..N across all classes (uint32).

    Components are 8-connected in 2D (fully connected in nD), as in Fiji's particle
    analysis. With ``per_frame`` each 2D frame of a stack is labelled on its own (frames
    in time must not merge); otherwise a 3D stack is labelled as a volume.
    """
    from scipy import ndimage

    sem = np.asarray(semantic)
    if sem.dtype.kind not in "biu":
        raise WriterError(f"a semantic mask must hold integers, got {sem.dtype}")
    out = np.zeros(sem.shape, dtype=np.uint32)
    if sem.size == 0:
        return out
    planes = list(np.ndindex(sem.shape[:-2])) if per_frame and sem.ndim > 2 else [()]
    next_id = 1
    for index in planes:
        plane = sem[index]
        target = out[index]
        structure = ndimage.generate_binary_structure(plane.ndim, plane.ndim)
        for value in np.unique(plane):
            if value == 0:
                continue
            components, count = ndimage.label(plane == value, structure=structure)
            inside = components > 0
            target[inside] = components[inside] + (next_id - 1)
            next_id += count
    return out
