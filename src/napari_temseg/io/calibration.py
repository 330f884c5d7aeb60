"""One calibration value: how big a pixel is, made once from a file or a layer.

The reader writes a file's calibration into a layer's ``scale``/``units``; Measure, Train,
Export and the CLI used to read it back with four rules (Train only took "nm", so a µm
layer was calibrated for Measure but not for Train). :class:`Calibration` is the one
reading: per-axis pixel size in a length unit, or an honest "px" when nothing says how
big a pixel is (never a pixel size of 1 dressed up as nm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from napari_temseg.io.units import length_factor_to_nm, to_nm

Source = Literal["file", "layer", "none"]
PIXEL_UNITS = ("pixel", "pixels", "px", "", "None")


@dataclass(frozen=True)
class Calibration:
    """Per-axis pixel size in ``unit``: "nm" (lengths converted) or "px" (uncalibrated).

    ``pixel_size`` and ``origin`` cover every axis of the array they were read from; the
    in-plane pair is ``yx``. Axes that are not lengths (frames, energy) keep their scale
    as it was and are not converted. ``source`` says where it came from.
    """

    pixel_size: tuple[float, ...]
    unit: str = "px"
    source: Source = "none"
    origin: tuple[float, ...] = ()

    @classmethod
    def uncalibrated(cls, ndim: int = 2, origin: Sequence[float] | None = None) -> Calibration:
        """Pixels: a pixel size of 1 px on every axis."""
        return cls(
            (1.0,) * ndim,
            "px",
            "none",
            tuple(float(o) for o in (origin if origin is not None else [0.0] * ndim)),
        )

    @classmethod
    def from_scale(
        cls,
        scale: Sequence[float],
        units: Sequence[Any],
        source: Source,
        origin: Sequence[float] | None = None,
        scale_only_is_nm: bool = False,
    ) -> Calibration:
        """From per-axis scale and unit names; calibrated when y and x are both lengths.

        Length axes are converted to nm; other axes keep their scale. ``scale_only_is_nm``
        is the rule for layers: a layer scaled in "pixel" units (napari before units
        existed, or a script that only sets ``scale``) is in nm, as this plugin always
        read it; an in-plane scale of 1 in pixels is uncalibrated, never 1 nm.
        """
        scale = [float(s) for s in scale]
        names = [str(u) for u in units][-len(scale) :] if len(scale) else []
        if len(names) != len(scale):
            names = ["pixel"] * len(scale)
        offsets = [float(o) for o in (origin if origin is not None else [0.0] * len(scale))]
        pixel = [u in PIXEL_UNITS for u in names]
        nm = [None if px else to_nm(s, u) for s, u, px in zip(scale, names, pixel, strict=True)]
        if scale_only_is_nm and all(pixel[-2:]) and any(s != 1.0 for s in scale[-2:]):
            return cls(tuple(scale), "nm", source, tuple(offsets))
        if len(scale) < 2 or nm[-1] is None or nm[-2] is None:
            return cls.uncalibrated(len(scale), offsets)
        sizes = tuple(n if n is not None else s for n, s in zip(nm, scale, strict=True))
        factors = [
            (length_factor_to_nm(u) or 1.0) if n is not None else 1.0
            for n, u in zip(nm, names, strict=True)
        ]
        return cls(sizes, "nm", source, tuple(o * f for o, f in zip(offsets, factors, strict=True)))

    @classmethod
    def from_image(cls, image: Any) -> Calibration:
        """From a file read by ``napari_temseg.io`` (an ``EMImage``): its axes' scale/unit."""
        return cls.from_scale(
            [a.scale for a in image.axes], [a.unit or "pixel" for a in image.axes], "file"
        )

    @classmethod
    def from_layer(cls, layer: Any) -> Calibration:
        """From a napari layer: its ``scale``/``units``; else the calibration our reader
        recorded in its metadata ("axes"), when the layer still has the file's shape."""
        found = cls.from_scale(layer.scale, layer.units, "layer", layer.translate, True)
        if found.calibrated:
            return found
        axes = (getattr(layer, "metadata", None) or {}).get("axes")
        if isinstance(axes, list) and len(axes) == layer.ndim:
            try:
                recorded = cls.from_scale(
                    [a["scale"] for a in axes], [a["unit"] or "pixel" for a in axes], "layer"
                )
            except (KeyError, TypeError):
                return found
            if recorded.calibrated and all(float(s) == 1.0 for s in layer.scale):
                origin = tuple(
                    float(t) * s for t, s in zip(layer.translate, recorded.pixel_size, strict=True)
                )  # the layer's world is pixels here
                return replace(recorded, origin=origin)
        return found

    @classmethod
    def from_layer_meta(cls, meta: dict, ndim: int) -> Calibration:
        """From the ``meta`` dict npe2 hands a writer (``scale``, ``units`` keys)."""
        raw_scale, raw_units = meta.get("scale"), meta.get("units")
        scale = [float(s) for s in (raw_scale if raw_scale is not None else [1.0] * ndim)]
        units = [str(u) for u in (raw_units if raw_units is not None else ["pixel"] * ndim)]
        return cls.from_scale(scale[-ndim:], units[-ndim:], "layer", scale_only_is_nm=True)

    # ------------------------------------------------------------------ readings

    @property
    def calibrated(self) -> bool:
        return self.unit != "px"

    @property
    def yx(self) -> tuple[float, float]:
        """The in-plane (y, x) pixel size in ``unit``."""
        return (self.pixel_size[-2], self.pixel_size[-1])

    @property
    def origin_yx(self) -> tuple[float, float]:
        """The in-plane (y, x) offset in ``unit``."""
        origin = self.origin or (0.0,) * len(self.pixel_size)
        return (origin[-2], origin[-1])

    @property
    def pixel_size_nm(self) -> float | None:
        """The x pixel size in nm, or None for an uncalibrated image."""
        return self.pixel_size[-1] if self.calibrated else None

    def scale_nm(self) -> list[float] | None:
        """Per-axis scale for a writer: nm on length axes; None when uncalibrated."""
        return list(self.pixel_size) if self.calibrated else None

    @property
    def area_unit(self) -> str:
        """ "nm²" or "px²"."""
        return f"{self.unit}²"
