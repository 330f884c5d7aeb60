"""The in-memory description of one dataset read from a microscope file.

Every reader (RosettaSciIO, mrcfile, tifffile, numpy) returns the same two small
dataclasses so the rest of the plugin never needs to know which format a file was in.
Axes follow the array's axis order, which is also napari's order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ReaderError(Exception):
    """A file could not be read: corrupt, truncated or unsupported. The message names the file."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class NotAnImageError(ReaderError):
    """The file is valid but holds no image (an EELS spectrum, a spectrum image, ...)."""


class DataWarning(UserWarning):
    """Something done to the data that the user must hear about (colour made grey,
    non-finite pixels replaced): ``temseg`` prints it as a note, napari shows it."""


class ResultWarning(DataWarning):
    """A result to doubt (a frame segmented unlike the painted ones, or into one class):
    ``temseg`` prints it as a warning, and a batch's summary keeps it beside the file."""


@dataclass
class Axis:
    """One array axis: spatial axes ("z", "y", "x") carry a scale in nm, others scale 1."""

    name: str
    size: int
    scale: float = 1.0
    unit: str = ""

    @property
    def spatial(self) -> bool:
        return self.unit == "nm"


@dataclass
class EMImage:
    """An array (numpy, memmap or dask) with its axes, kind and microscope metadata."""

    data: Any
    axes: list[Axis]
    kind: str
    metadata: dict = field(default_factory=dict)
    path: str = ""

    @property
    def pixel_size_nm(self) -> float | None:
        """The in-plane (x) pixel size in nm, or None for an uncalibrated file."""
        for name in ("x", "y"):
            for ax in self.axes:
                if ax.name == name and ax.spatial:
                    return float(ax.scale)
        return None

    @property
    def scale(self) -> tuple[float, ...]:
        """Per-axis scale for ``layer.scale``: nm for spatial axes, 1 otherwise."""
        return tuple(float(ax.scale) for ax in self.axes)

    @property
    def units(self) -> tuple[str, ...]:
        """Per-axis unit for ``layer.units``: "nm" for spatial axes, "pixel" otherwise."""
        return tuple("nm" if ax.spatial else "pixel" for ax in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def lazy(self) -> bool:
        """True when the pixels are not (all) in memory: a dask array or a memory map."""
        return isinstance(self.data, np.memmap) or not isinstance(self.data, np.ndarray)
