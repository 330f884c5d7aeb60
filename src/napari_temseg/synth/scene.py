"""The noise-free specimen image with its masks: :func:`specimen`."""

from __future__ import annotations

import numpy as np

from .contrast import render_hrtem, render_stem
from .particles import draw_layout, jsonable, paint

KINDS = ("stem", "hrtem")

_LAYOUT_OPTIONS = (
    "layout",
    "coverage",
    "diameter_nm",
    "size_spread",
    "max_overlap",
    "max_particles",
    "lattice",
    "lattice_nm",
)
_STEM_OPTIONS = ("support_level", "column_fwhm_nm")
_HRTEM_OPTIONS = ("contrast_mode", "illumination")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int or a pair; at least 16 px a side."""
    if isinstance(size, (int, np.integer)):
        shape = (int(size), int(size))
    else:
        try:
            shape = tuple(int(s) for s in size)
        except TypeError:
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
        if len(shape) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if min(shape) < 16 or max(shape) > 16384:
        raise ValueError(f"image size must be 16..16384 px a side, got {shape}")
    return shape  # type: ignore[return-value]


def specimen(
    kind: str,
    size: int | tuple[int, int],
    pixel_size_nm: float,
    rng: np.random.Generator,
    **options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw a specimen: crystalline nanoparticles on an amorphous support, noise-free.

    Returns ``ideal`` (float32 in [0, 1]), ``semantic`` (uint8: 1 support, 2 particle),
    ``instances`` (int32: 0 support, 1..N particles) and an ``info`` dict of every drawn
    parameter (JSON-serialisable).

    Options (all drawn at random when omitted), see docs/simulator.md:
    layout ("many" | "single" | "none"), coverage (area fraction 0..0.9), diameter_nm (mean),
    size_spread (log-normal sigma), max_overlap (0..0.3), max_particles, lattice
    ("square" | "hex"), lattice_nm; STEM: support_level, column_fwhm_nm; HRTEM:
    contrast_mode ("brighter" | "darker" | "equal"), illumination (relative gradient).
    """
    check_kind(kind)
    shape = check_size(size)
    if not (np.isfinite(pixel_size_nm) and 1e-3 <= pixel_size_nm <= 100):
        raise ValueError(f"pixel_size_nm must be in 0.001..100 nm, got {pixel_size_nm!r}")
    allowed = _LAYOUT_OPTIONS + (_STEM_OPTIONS if kind == "stem" else _HRTEM_OPTIONS)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(
            f"unknown specimen option(s) for {kind}: {sorted(unknown)}; allowed: {list(allowed)}"
        )
    lay = {k: options[k] for k in _LAYOUT_OPTIONS if k in options}
    particles, info = draw_layout(shape, float(pixel_size_nm), rng, **lay)
    inst, rho, particles = paint(particles, shape)
    render = render_stem if kind == "stem" else render_hrtem
    extra = {k: options[k] for k in allowed if k in options and k not in _LAYOUT_OPTIONS}
    ideal, cinfo = render(inst, rho, particles, float(pixel_size_nm), rng, **extra)
    semantic = np.where(inst > 0, 2, 1).astype(np.uint8)
    info.update(cinfo)
    info["n_particles"] = len(particles)
    info["coverage"] = float((inst > 0).mean())
    info["particle_list"] = [p.to_dict() for p in particles]
    return ideal, semantic, inst, jsonable(info)
