"""Mask export as the Export widget (and scripts) need it: several files, never overwriting.

One call turns a label layer's data into the files a user asked for: the semantic mask,
an instance mask (connected components per class), optionally one file per frame of a
stack. Existing files are never replaced: a numeric suffix is added (``mask_1.tif``)
and reported, so the widget can say so instead of blocking on a dialog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg.io.sidecar import class_table, sidecar_path
from napari_temseg.io.writers import (
    FORMATS,
    WriterError,
    instance_mask,
    mask_axes,
    target_path,
    write_labels,
)


@dataclass
class ExportResult:
    """What an export wrote: mask files, every file (with sidecars), and renames."""

    masks: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (wanted, used) names


def safe_stem(name: str) -> str:
    """A file-name stem from a layer name: no path separators or odd characters."""
    stem = re.sub(r"[^\w.\-]+", "_", name.strip()).strip("._")
    return stem or "labels"


def free_path(path: Path) -> Path:
    """``path`` itself if neither it nor its sidecar exists, else ``stem_1``, ``stem_2``..."""

    def taken(p: Path) -> bool:
        return p.exists() or sidecar_path(p).exists()

    if not taken(path):
        return path
    n = 1
    while taken(candidate := path.with_name(f"{path.stem}_{n}{path.suffix}")):
        n += 1
    return candidate


def export_labels(
    data: Any,
    folder: str | Path,
    stem: str,
    fmt: str = "tiff",
    *,
    scale: Sequence[float] | None = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    class_colors: Mapping[int, Any] | Sequence[Any] | None = None,
    semantic: bool = True,
    instance: bool = False,
    per_frame: bool = False,
    axes: Sequence[str] | None = None,
    source: str = "",
    instance_class: Mapping[int, int] | None = None,
) -> ExportResult:
    """Write ``FOLDER/<stem>[_instances][_frameNNNN].<ext>`` (+ sidecars), never overwriting.

    Instance ids are unique over the whole stack; a stack whose leading axis is not a
    spatial z is labelled frame by frame, so particles in successive frames stay apart.

    ``instance_class`` (id -> class, ``io.sidecar.instance_classes``; empty: classes not
    known) says ``data`` already is an instance mask, as the Measure dock's particles are:
    its ids are written as they are, and its semantic mask is each id's class. Exported
    as classes, each particle id became a class and the first one the support.
    """
    array = np.asarray(data)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _, fmt_name = target_path(folder / "x", fmt)
    suffix = FORMATS[fmt_name][0]
    ax = mask_axes(array.shape, scale, axes)
    names = [a.name for a in ax]
    full_scale = [a.scale for a in ax] if scale is not None else None
    jobs: list[tuple[str, np.ndarray, str]] = []
    known = instance_class
    class_of: dict[int, int] = {}  # instance id -> class (0: not known)
    if known is not None:  # an instance mask already: its ids, and their classes
        class_names = class_colors = None  # a layer's names/colours are its ids', no class's
        if semantic and not known:
            raise WriterError(
                f"'{stem}' holds one id per particle whose classes are not known: "
                "tick instance mask only"
            )
        ids, where = np.unique(array, return_inverse=True)  # any ids, however large
        classes = np.array([int(known.get(int(i), 0)) for i in ids], np.int64)
        class_of = dict(zip(ids.tolist(), classes.tolist(), strict=True))
        if semantic:
            jobs.append(("", classes[where].reshape(array.shape), "semantic"))
        if instance:
            jobs.append(("_instances", array, "instance"))
    elif semantic:
        jobs.append(("", array, "semantic"))
    if instance and known is None:
        volume = array.ndim > 2 and names[-3] == "z"
        ids = instance_mask(array, per_frame=not volume)
        lut = np.zeros(int(ids.max()) + 1, dtype=np.int64)
        lut[ids.ravel()] = array.ravel()  # every pixel of an id has one class
        class_of = dict(enumerate(lut.tolist()))
        jobs.append(("_instances", ids, "instance"))
    if fmt_name == "png":
        for _tag, mask, _kind in jobs:
            if mask.ndim > 2 and not per_frame:
                raise WriterError(
                    f"PNG holds a single 2D image and '{stem}' is {mask.ndim}-D "
                    f"{tuple(mask.shape)}: tick 'one file per frame', or use TIFF or NPY"
                )
            if mask.size and int(mask.max()) > 65535:
                raise WriterError("more than 65535 labels do not fit in a PNG: use TIFF or NPY")
    result = ExportResult()
    for tag, mask, kind in jobs:
        if per_frame and mask.ndim > 2:
            pieces = [
                (f"_frame{'_'.join(f'{i:04d}' for i in idx)}", mask[idx], idx)
                for idx in np.ndindex(mask.shape[:-2])
            ]
            piece_scale = full_scale[-2:] if full_scale else None
            piece_axes: list[str] | None = names[-2:]
        else:
            pieces = [("", mask, None)]
            piece_scale, piece_axes = full_scale, names
        for frame_tag, piece, idx in pieces:
            wanted = folder / f"{stem}{tag}{frame_tag}{suffix}"
            target = free_path(wanted)
            if target != wanted:
                result.renamed.append((wanted.name, target.name))
            extra: dict[str, Any] = {"mask": kind, "source": source}
            if kind == "instance" and class_names is not None:
                extra["semantic_classes"] = class_table(class_names, None)
            if idx is not None:
                extra["frame_index"] = list(idx)
            if kind == "instance" and class_of:
                present = np.unique(piece)
                extra["instance_class"] = {
                    str(int(i)): class_of[int(i)] for i in present if i > 0 and class_of[int(i)]
                }
            files = write_labels(
                target,
                piece,
                scale=piece_scale,
                class_names=class_names if kind == "semantic" else None,
                class_colors=class_colors if kind == "semantic" else None,
                fmt=fmt_name,
                axes=piece_axes,
                metadata=extra,
            )
            result.masks.append(files[0])
            result.written.extend(files)
    return result
