"""The JSON sidecar written next to every mask: scale, axes and class names/colours.

NPY and PNG cannot carry a calibration or class names, and TIFF readers other than
ImageJ ignore what we put in the TIFF. A small ``<file>.json`` beside the file (e.g.
``mask.tif.json``) keeps that information readable by anything, including our readers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FORMAT_TAG = "napari-temseg"
VERSION = 1
#: what a reader keeps of a mask's sidecar in ``metadata["sidecar"]``
KEPT = ("classes", "mask", "kind", "source", "instance_class", "semantic_classes", "segmented_with")


def instance_classes(metadata: Mapping[str, Any]) -> dict[int, int] | None:
    """id -> class of a mask our writers recorded as an instance mask (empty when the
    sidecar does not say); None for any other mask. Measuring such a mask as classes
    dropped id 1 as the support and named every particle's id its class."""
    side = metadata.get("sidecar") or {}
    if side.get("mask") != "instance":
        return None
    table = side.get("instance_class") or {}
    try:
        return {int(i): int(c) for i, c in dict(table).items()}
    except (TypeError, ValueError):
        return {}


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _hex(color: Any) -> str:
    """'#rrggbb' from a hex string, an RGB(A) tuple in 0..1 or in 0..255."""
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) in (6, 8):
            int(text, 16)  # validates
            return "#" + text[:6].lower()
        from matplotlib.colors import to_hex

        return to_hex(color)
    values = [float(c) for c in list(color)[:3]]
    if len(values) != 3:
        raise ValueError(f"not a colour: {color!r}")
    if max(values) > 1.0:
        values = [v / 255.0 for v in values]
    return "#" + "".join(f"{round(min(max(v, 0.0), 1.0) * 255):02x}" for v in values)


def class_table(
    class_names: Mapping[int, str] | Sequence[str] | None,
    class_colors: Mapping[int, Any] | Sequence[Any] | None,
) -> list[dict]:
    """[{"value": 1, "name": ..., "color": "#rrggbb"}, ...]; sequences name labels 1, 2, ..."""

    def as_map(obj: Any) -> dict[int, Any]:
        if obj is None:
            return {}
        if isinstance(obj, Mapping):
            return {int(k): v for k, v in obj.items()}
        return {i + 1: v for i, v in enumerate(obj)}

    names, colors = as_map(class_names), as_map(class_colors)
    table = []
    for value in sorted(set(names) | set(colors)):
        entry: dict[str, Any] = {"value": value}
        if value in names:
            entry["name"] = str(names[value])
        if value in colors and colors[value] is not None:
            entry["color"] = _hex(colors[value])
        table.append(entry)
    return table


def read_class_table(classes: Any) -> dict[int, dict[str, str]]:
    """value -> {"name", "color"} (each where stored) from a stored class table: the list
    :func:`class_table` writes (entries without a value number labels 1, 2, ...) or a
    mapping value -> name or entry. Entries that are not readable are left out; a file
    from elsewhere must not stop its mask from opening."""
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        items = [
            (c.get("value", i + 1) if isinstance(c, Mapping) else i + 1, c)
            for i, c in enumerate(classes)
        ]
    else:
        return {}
    table: dict[int, dict[str, str]] = {}
    for value, entry in items:
        try:
            v = int(value)
        except (TypeError, ValueError):
            continue
        if not isinstance(entry, Mapping):
            entry = {"name": entry}
        table[v] = {k: str(entry[k]) for k in ("name", "color") if entry.get(k) is not None}
    return table


def write_sidecar(path: str | Path, info: dict[str, Any]) -> Path:
    target = sidecar_path(path)
    payload = {"format": FORMAT_TAG, "version": VERSION, "file": Path(path).name, **info}
    target.write_text(json.dumps(payload, indent=1))
    return target


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``path`` if one of ours is there and readable, else None."""
    target = sidecar_path(path)
    if not target.is_file():
        return None
    try:
        info = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != FORMAT_TAG:
        return None
    return info
