"""Turn a format's axis descriptions into our named, nm-calibrated axes and a dataset kind.

RosettaSciIO describes axes in array order with a name, a unit, a scale and a
"navigate" flag (navigation axes index positions/frames, signal axes are what one pixel
records). From the units we decide what the dataset is: an energy signal axis makes it a
spectrum (or a spectrum image over a 2D scan), reciprocal-space or angular signal axes a
diffraction pattern, anything else an image (2D) or a stack (more dimensions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from napari_temseg.io.model import Axis
from napari_temseg.io.units import to_nm, unit_kind

NOT_IMAGES = ("spectrum", "spectrum_image")
_GENERIC_NAMES = {"", "x", "y", "z", "number", "dim", "<undefined>", "undefined", "t"}


@dataclass
class RawAxis:
    """An axis as a file describes it, before conversion."""

    name: str
    size: int
    scale: float = 1.0
    unit: str = ""
    offset: float = 0.0
    navigate: bool | None = None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "scale": self.scale,
            "offset": self.offset,
            "units": self.unit,
            "navigate": self.navigate,
        }


def _leading_name(raw: RawAxis) -> str:
    """Name of an axis in front of the image plane, from its unit or else its own name."""
    kind = unit_kind(raw.unit)
    if kind == "length":
        return "z"
    if kind == "time":
        return "time"
    if kind == "angle":
        return "tilt"
    if kind == "energy":
        return "energy"
    name = raw.name.strip().lower()
    if name in ("tilt", "angle", "alpha"):
        return "tilt"
    if name in ("time", "frame", "frames"):
        return name.rstrip("s")
    if name and name not in _GENERIC_NAMES:
        return name
    return "frame"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def classify(raw_axes: Sequence[RawAxis]) -> str:
    """The dataset kind from its axes: image, stack, spectrum, spectrum_image, diffraction."""
    if not raw_axes:
        return "scalar"
    signal = [a for a in raw_axes if a.navigate is False]
    if not signal:  # no navigate flags: the last two axes are the recorded signal
        signal = list(raw_axes[-2:])
    kinds = {unit_kind(a.unit) for a in signal}
    if "energy" in kinds or len(signal) == 1 or len(raw_axes) == 1:
        scan = [a for a in raw_axes if a not in signal and a.size > 1]
        return "spectrum_image" if len(scan) >= 2 else "spectrum"
    if kinds & {"reciprocal", "angle"}:
        return "diffraction"
    return "image" if sum(a.size > 1 for a in raw_axes) <= 2 and len(raw_axes) == 2 else "stack"


def convert_axes(raw_axes: Sequence[RawAxis], kind: str) -> list[Axis]:
    """Named axes in array order; spatial lengths in nm, every other axis with scale 1."""
    n = len(raw_axes)
    if kind in NOT_IMAGES:
        signal_names = ["energy" if unit_kind(raw_axes[-1].unit) == "energy" else "channel"]
        signal_count = 1
        plane = ["y", "x"]
    else:
        signal_count = min(2, n)
        plane = ["ky", "kx"] if kind == "diffraction" else ["y", "x"]
        signal_names = plane[-signal_count:]
    names: list[str] = []
    lead = raw_axes[: n - signal_count]
    if kind in NOT_IMAGES or kind == "diffraction":
        # navigation axes of a scan are the real-space positions, innermost last
        scan = ["y", "x"][-len(lead) :] if 0 < len(lead) <= 2 else []
        names = scan or [_leading_name(a) for a in lead]
    else:
        names = [_leading_name(a) for a in lead]
    names = _unique([*names, *signal_names])
    axes = []
    for raw, name in zip(raw_axes, names, strict=True):
        nm = to_nm(raw.scale, raw.unit)
        spatial_name = name in ("x", "y", "z")
        if nm is not None and spatial_name:
            axes.append(Axis(name=name, size=int(raw.size), scale=nm, unit="nm"))
        elif kind in NOT_IMAGES and name == "energy":  # a spectrum keeps its eV
            axes.append(Axis(name, int(raw.size), float(raw.scale), raw.unit))
        else:
            axes.append(Axis(name=name, size=int(raw.size), scale=1.0, unit=""))
    return axes


def default_axes(shape: Sequence[int], kind: str | None = None) -> list[Axis]:
    """Uncalibrated axes for a bare array: (…, frame, y, x)."""
    raw = [RawAxis(name="", size=int(s)) for s in shape]
    return convert_axes(raw, kind or classify(raw))
