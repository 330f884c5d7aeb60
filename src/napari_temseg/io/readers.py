"""``read(path)``: one entry point for every supported file, with clear errors.

Picks the library by extension, decides whether to load lazily (large files are
memory-mapped or dask-backed so napari shows the first frame at once), and turns
every failure a damaged file can provoke inside a third-party parser (struct errors,
HDF5 errors, MemoryError from a garbled size field, ...) into a :class:`ReaderError`
whose message names the file and the problem.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg.io.axes import NOT_IMAGES
from napari_temseg.io.model import EMImage, NotAnImageError, ReaderError

#: files at least this large are opened lazily unless ``lazy`` says otherwise
LAZY_THRESHOLD_BYTES = 256 * 2**20

MICROSCOPE_SUFFIXES = (".dm3", ".dm4", ".ser", ".emi", ".emd")
SUFFIXES = (*MICROSCOPE_SUFFIXES, ".mrc", ".mrcs", ".rec", ".tif", ".tiff", ".npy", ".png")
KIND_WORDS = {
    "spectrum": "a spectrum",
    "spectrum_image": "a spectrum image",
    "diffraction": "a diffraction pattern",
    "scalar": "a single number",
}


def _reader_for(suffix: str):
    from napari_temseg.io import simple_readers, tiff

    if suffix in MICROSCOPE_SUFFIXES:
        from napari_temseg.io.rsciio_reader import read_rsciio

        return read_rsciio
    return {
        ".mrc": simple_readers.read_mrc,
        ".mrcs": simple_readers.read_mrc,
        ".rec": simple_readers.read_mrc,
        ".tif": tiff.read_tiff,
        ".tiff": tiff.read_tiff,
        ".npy": simple_readers.read_npy,
        ".png": simple_readers.read_png,
    }[suffix]


def _check_path(path: Path) -> str:
    if not path.exists():
        raise ReaderError(f"cannot open '{path}': no such file", path)
    if path.is_dir():
        raise ReaderError(f"cannot open '{path}': it is a folder, not a file", path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ReaderError(
            f"cannot open '{path.name}': unsupported file type '{path.suffix}' "
            f"(supported: {', '.join(SUFFIXES)})",
            path,
        )
    if path.stat().st_size == 0:
        raise ReaderError(f"cannot open '{path.name}': the file is empty (0 bytes)", path)
    return suffix


def _describe(exc: BaseException, fmt: str) -> str:
    """A sentence a microscopist can act on, with the parser's own words for experts."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, MemoryError):
        return "it declares more data than fits in memory (corrupt header?)"
    if isinstance(exc, RecursionError):
        return "its metadata is nested impossibly deep (corrupt file?)"
    if isinstance(exc, EOFError) or any(
        hint in text
        for hint in ("unpack requires a buffer", "truncated", "file size", "ends early")
    ):
        return f"the file ends early (truncated or incomplete copy?) [{detail}]"
    return f"the file is damaged or not a valid {fmt} file [{detail}]"


def _validate(image: EMImage, touch: bool = True) -> None:
    """Fail now, not later inside napari, when the pixels are not all there."""
    shape = image.shape
    if any(s <= 0 for s in shape):
        raise ValueError(f"empty data of shape {shape}")
    if len(image.axes) != len(shape):
        raise ValueError(f"{len(image.axes)} axes described for {len(shape)}-D data")
    if touch and image.lazy:  # touch the first and the last pixel: a truncated file fails here
        first = image.data[(0,) * len(shape)]
        last = image.data[tuple(s - 1 for s in shape)]
        np.asarray(first), np.asarray(last)


def _why_empty(path: Path, suffix: str) -> str:
    """Why a reader found no dataset in ``path``, as far as the file's kind tells."""
    if suffix == ".emi" and not list(path.parent.glob(f"{glob.escape(path.stem)}_*.ser")):
        return (
            f"an .emi holds only the metadata; its pixels are in '{path.stem}_1.ser' "
            "(and _2, ...), which is not beside it: copy it along"
        )
    if suffix in (".tif", ".tiff"):
        return "no complete image in it: the file is damaged or cut short (incomplete copy?)"
    return "the file holds no datasets"


def read(
    path: str | Path,
    *,
    lazy: bool | None = None,
    image_only: bool = False,
    touch_pixels: bool = True,
) -> list[EMImage]:
    """Every dataset in ``path`` with nm calibration, in the array's own axis order.

    ``lazy=None`` loads files under ``LAZY_THRESHOLD_BYTES`` into memory and maps or
    dask-wraps larger ones. ``image_only=True`` drops spectra and raises
    :class:`NotAnImageError` when nothing image-like is left. ``touch_pixels=False`` (with
    ``lazy=True``) reads no pixel at all: a description of the file, as ``info`` needs,
    costs no memory even when a small compressed file decodes to gigabytes. Any other
    failure is a :class:`ReaderError` naming the file.
    """
    path = Path(path)
    suffix = _check_path(path)
    if lazy is None:
        from napari_temseg.io.rsciio_reader import file_size_for

        try:
            size = file_size_for(path)
        except OSError:
            size = 0
        lazy = size >= LAZY_THRESHOLD_BYTES
    try:
        images = _reader_for(suffix)(path, lazy)
        for image in images:
            _validate(image, touch_pixels)
    except ReaderError as exc:
        if str(exc).startswith("cannot open") or path.name in str(exc):
            raise
        raise ReaderError(f"cannot open '{path.name}': {exc}", path) from exc
    except Exception as exc:  # incl. MemoryError, RecursionError from garbled headers
        raise ReaderError(
            f"cannot open '{path.name}' as {suffix[1:].upper()}: "
            f"{_describe(exc, suffix[1:].upper())}",
            path,
        ) from exc
    if not images:
        raise ReaderError(f"cannot open '{path.name}': {_why_empty(path, suffix)}", path)
    if image_only:
        kept = [im for im in images if im.kind not in NOT_IMAGES and im.kind != "scalar"]
        if not kept:
            raise NotAnImageError(f"'{path.name}' is {not_an_image_reason(images[0])}", path)
        images = kept
    return images


def read_images(path: str | Path) -> list[EMImage]:
    """The 2D images and stacks of a file, for the commands that process images.

    Narrower than ``read(image_only=True)``, which keeps diffraction patterns too: denoise
    and segment take only ``image``/``stack`` datasets. Colour images come back grey, with
    a note (``io.grey``). A file holding none raises :class:`NotAnImageError` saying what
    it holds instead.
    """
    from napari_temseg.io.grey import to_grey

    found = read(path)
    images = [to_grey(d, Path(path).name) for d in found if d.kind in ("image", "stack")]
    if not images:
        kinds = ", ".join(sorted({d.kind for d in found})) or "nothing"
        what = next((d for d in found if d.kind in NOT_IMAGES), None)
        reason = f"; it is {not_an_image_reason(what)}" if what is not None else ""
        # no path in the message: every caller puts it in front of the message already
        raise NotAnImageError(f"holds no image to process (found: {kinds}){reason}", path)
    return images


def not_an_image_reason(image: EMImage) -> str:
    """E.g. "an EELS spectrum (2048 channels, 0.1 eV/channel), not an image"."""
    what = KIND_WORDS.get(image.kind, f"a '{image.kind}' dataset")
    signal = image.metadata.get("signal_type") or ""
    if signal:
        what = f"{'an' if signal[0].upper() in 'AEFHILMNORSX' else 'a'} {signal} {what[2:]}"
    detail = ""
    original = image.metadata.get("original_axes") or []
    if original:
        last = original[-1]
        unit = last.get("units") or "channel"
        detail = f" ({last['size']} channels, {last['scale']:.4g} {unit}/channel)"
    return f"{what}{detail}, not an image"


#: what ``info`` shows a microscopist first, when the file has it
ACQUISITION_KEYS = (
    "microscope",
    "voltage_kV",
    "magnification",
    "detector",
    "dwell_time_us",
    "dose",
    "acquisition_time",
)


def info_dict(path: str | Path) -> dict[str, Any]:
    """What ``temseg info FILE --json`` prints: shape, dtype, axes, pixel size, kind, the
    acquisition facts the file holds and notes on metadata that could not be read.

    Describes the first real-space image or stack (else the first diffraction pattern,
    else the first dataset) from metadata only: no pixel is read, whatever the file's size
    or compression. ``datasets`` lists every dataset of the file, ``described`` which one
    is described: a Velox file with a pattern first was described by its pattern alone.
    """
    images = read(path, lazy=True, touch_pixels=False)
    rank = {"image": 0, "stack": 0, "diffraction": 1}
    described = min(range(len(images)), key=lambda i: rank.get(images[i].kind, 2))
    image = images[described]  # the first of the best rank
    meta = image.metadata
    return {
        "described": described,
        "datasets": [
            {"kind": im.kind, "shape": list(im.shape), "title": im.metadata.get("title", "")}
            for im in images
        ],
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "axes": [
            {"name": a.name, "size": a.size, "scale": a.scale, "unit": a.unit} for a in image.axes
        ],
        "pixel_size_nm": image.pixel_size_nm,
        "kind": image.kind,
        "acquisition": {k: meta[k] for k in ACQUISITION_KEYS if meta.get(k) not in (None, "")},
        "notes": list(meta.get("metadata_notes", [])),
    }
