"""Particle layouts, shapes and crystal lattices, and the masks they paint.

Every particle shape is described by a gauge function rho(x, y): 0 at its centre, 1 on its
outline, growing outwards. The mask is rho < 1, and the projected thickness (which sets
HAADF brightness and fringe strength) is a function of rho, so mask, thickness and contrast
can never disagree. Particles are painted in order; a later one occludes an earlier one
where they overlap (overlap is kept small), and any piece of a particle cut off by an
occluder is handed back to the support so that every instance is one connected region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SHAPES = ("ellipse", "polygon", "rounded", "blob")
LATTICES = ("square", "hex")
LAYOUTS = ("many", "single", "none")


@dataclass
class Particle:
    """One crystalline particle. Lengths in pixels unless the name says nm."""

    cy: float
    cx: float
    radius: float  # nominal radius (half the diameter) in px
    shape: str
    angle: float  # in-plane rotation of the shape, radians
    shape_params: dict = field(default_factory=dict)
    lattice: str = "square"  # "square", "hex" or "none" (not in a zone axis)
    lattice_nm: float = 0.3
    lattice_angle: float = 0.0  # in-plane orientation of the crystal, radians
    lattice_origin: tuple[float, float] = (0.0, 0.0)  # sub-cell offset, fractions of a cell
    basis_weight: float = 0.0  # second column at the cell centre (square only), relative
    flat_top: float = 1.0  # thickness saturates at this fraction of the sphere profile

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["lattice_origin"] = list(self.lattice_origin)
        return jsonable(d)


def jsonable(obj):
    """``obj`` with numpy scalars and arrays turned into plain floats, ints and lists."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer, int)) and not isinstance(obj, bool):
        return int(obj)
    return obj


# --------------------------------------------------------------------------- drawing


def _draw_shape(rng: np.random.Generator, radius: float) -> tuple[str, float, dict]:
    shape = str(rng.choice(SHAPES, p=[0.3, 0.25, 0.25, 0.2]))
    angle = float(rng.uniform(0, 2 * np.pi))
    if shape == "ellipse":
        params = {"aspect": float(rng.uniform(0.6, 1.0))}
    elif shape in ("polygon", "rounded"):
        n = int(rng.integers(4, 9))
        normals = angle + 2 * np.pi * np.arange(n) / n + rng.normal(0, 0.12, n)
        # apothems spread by +-12 % make irregular facets; scaled so the area ~ pi r^2
        apothem = np.cos(np.pi / n) * (1 + rng.uniform(-0.12, 0.12, n))
        params = {"normals": normals.tolist(), "apothems": apothem.tolist()}
        if shape == "rounded":
            params["q"] = float(rng.uniform(4, 12))
    else:  # blob: radius perturbed by a few low harmonics
        ks = np.arange(2, 5)
        params = {
            "amps": (rng.uniform(0, 0.12, ks.size) / ks * 2).tolist(),
            "phases": rng.uniform(0, 2 * np.pi, ks.size).tolist(),
        }
    return shape, angle, params


def gauge(p: Particle, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """rho of particle ``p`` at offsets (dy, dx) px from its centre (< 1 inside)."""
    r = p.radius
    sp = p.shape_params
    if p.shape == "ellipse":
        c, s = math.cos(p.angle), math.sin(p.angle)
        u = (c * dx + s * dy) / r
        v = (-s * dx + c * dy) / (r * sp["aspect"])
        return np.sqrt(u * u + v * v)
    if p.shape in ("polygon", "rounded"):
        normals = np.asarray(sp["normals"])
        h = np.asarray(sp["apothems"]) * r
        rho = None
        q = sp.get("q")
        for nrm, hj in zip(normals, h, strict=True):
            term = (math.cos(nrm) * dx + math.sin(nrm) * dy) / hj
            if q is None:
                rho = term if rho is None else np.maximum(rho, term)
            else:
                term = np.maximum(term, 0) ** q
                rho = term if rho is None else rho + term
        return rho if q is None else rho ** (1 / q)
    # blob
    phi = np.arctan2(dy, dx)
    rad = np.ones_like(phi)
    for k, (a, ph) in enumerate(zip(sp["amps"], sp["phases"], strict=True), start=2):
        rad += a * np.cos(k * (phi - ph))
    return np.sqrt(dx * dx + dy * dy) / (r * rad)


def _extent(p: Particle) -> float:
    """A radius (px) that surely contains the particle."""
    if p.shape == "ellipse":
        return p.radius + 1
    if p.shape == "blob":
        return p.radius * (1 + sum(p.shape_params["amps"])) + 1
    h = np.asarray(p.shape_params["apothems"])
    return p.radius * float(h.max()) / math.cos(math.pi / len(h)) * 1.3 + 1


def draw_layout(
    shape: tuple[int, int],
    pixel_size_nm: float,
    rng: np.random.Generator,
    *,
    layout: str | None = None,
    coverage: float | None = None,
    diameter_nm: float | None = None,
    size_spread: float | None = None,
    max_overlap: float | None = None,
    max_particles: int = 300,
    lattice: str | None = None,
    lattice_nm: float | None = None,
) -> tuple[list[Particle], dict]:
    """Draw particle positions, sizes, shapes and lattices for one image.

    ``layout``: "many" (a random number at a random coverage), "single" (one large particle)
    or "none" (support only); None draws one (85 / 10 / 5 %).
    """
    h, w = shape
    if layout is None:
        layout = str(rng.choice(LAYOUTS, p=[0.85, 0.10, 0.05]))
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    field_nm = min(h, w) * pixel_size_nm
    # material of the image: most particles share it, some differ (other phase or zone axis)
    lat0 = lattice if lattice is not None else str(rng.choice(LATTICES))
    if lat0 not in LATTICES:
        raise ValueError(f"lattice must be one of {LATTICES}, got {lat0!r}")
    a0 = float(lattice_nm) if lattice_nm is not None else float(rng.uniform(0.2, 0.45))
    info: dict = {"layout": layout, "lattice": lat0, "lattice_nm": a0}

    # size: mean diameter log-uniform, clamped so particles are >= 8 px and fit the field
    d_lo = max(1.5, 8 * pixel_size_nm)
    d_hi = max(d_lo, min(20.0, 0.4 * field_nm))
    if diameter_nm is None:
        diameter_nm = float(np.exp(rng.uniform(np.log(d_lo), np.log(d_hi))))
    spread = float(rng.uniform(0.1, 0.35)) if size_spread is None else float(size_spread)
    if coverage is None:
        coverage = float(rng.uniform(0.03, 0.45))
    if not 0 <= coverage <= 0.9:
        raise ValueError(f"coverage must be in [0, 0.9], got {coverage}")
    if max_overlap is None:
        max_overlap = float(rng.uniform(0.0, 0.15))
    info.update(
        diameter_nm=diameter_nm,
        size_spread=spread,
        coverage_target=coverage,
        max_overlap=max_overlap,
    )

    radii: list[float] = []
    centres: list[tuple[float, float]] = []
    if layout == "single":
        d_px = float(rng.uniform(0.35, 1.6)) * min(h, w)  # above ~1.2: a crystal filling the view
        radii.append(d_px / 2)
        centres.append((h / 2 + rng.uniform(-0.2, 0.2) * h, w / 2 + rng.uniform(-0.2, 0.2) * w))
    elif layout == "many" and coverage > 0:
        target = coverage * h * w
        area = 0.0
        tries = 0
        cy = np.empty(max_particles)
        cx = np.empty(max_particles)
        rr = np.empty(max_particles)
        n = 0
        fails = 0  # consecutive rejections: the field is as full as this overlap allows
        while area < target and n < max_particles and fails < 300:
            tries += 1
            r = 0.5 * diameter_nm * float(np.exp(rng.normal(0, spread))) / pixel_size_nm
            r = min(max(r, 4.0), 0.45 * min(h, w))
            y = rng.uniform(-0.3 * r, h + 0.3 * r)
            x = rng.uniform(-0.3 * r, w + 0.3 * r)
            if n and np.any(np.hypot(cy[:n] - y, cx[:n] - x) < (1 - max_overlap) * (rr[:n] + r)):
                fails += 1
                continue
            fails = 0
            cy[n], cx[n], rr[n] = y, x, r
            n += 1
            # only the part inside the field counts towards coverage
            fy = (min(y + r, h) - max(y - r, 0)) / (2 * r)
            fx = (min(x + r, w) - max(x - r, 0)) / (2 * r)
            area += np.pi * r * r * max(fy, 0) * max(fx, 0) * 0.9
        radii = rr[:n].tolist()
        centres = list(zip(cy[:n].tolist(), cx[:n].tolist(), strict=True))

    particles = []
    for (y, x), r in zip(centres, radii, strict=True):
        shp, ang, sp = _draw_shape(rng, r)
        if rng.random() < 0.7:
            lat, a = lat0, a0
        else:
            lat, a = str(rng.choice(LATTICES)), float(rng.uniform(0.2, 0.45))
        particles.append(
            Particle(
                cy=float(y),
                cx=float(x),
                radius=float(r),
                shape=shp,
                angle=ang,
                shape_params=sp,
                lattice=lat,
                lattice_nm=a,
                lattice_angle=float(rng.uniform(0, 2 * np.pi)),
                lattice_origin=(float(rng.random()), float(rng.random())),
                basis_weight=float(rng.uniform(0.15, 0.7))
                if lat == "square" and rng.random() < 0.3
                else 0.0,
                flat_top=float(rng.uniform(0.4, 1.0)),
            )
        )
    return particles, info


# --------------------------------------------------------------------------- painting


def paint(
    particles: list[Particle], shape: tuple[int, int], min_area: int = 6
) -> tuple[np.ndarray, np.ndarray, list[Particle]]:
    """Instance map (int32, 1..N) and gauge map rho (float32, inf outside particles).

    Particles that end up smaller than ``min_area`` pixels (cut by the border or hidden)
    are dropped and the ids renumbered, so ids are exactly 1..N for the N kept particles.
    """
    h, w = shape
    inst = np.zeros(shape, np.int32)
    rho = np.full(shape, np.inf, np.float32)
    boxes = []
    for i, p in enumerate(particles, start=1):
        e = _extent(p)
        y0, y1 = max(int(p.cy - e), 0), min(math.ceil(p.cy + e) + 1, h)
        x0, x1 = max(int(p.cx - e), 0), min(math.ceil(p.cx + e) + 1, w)
        boxes.append((y0, y1, x0, x1))
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) - p.cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - p.cx)[None, :]
        g = gauge(p, dy, dx).astype(np.float32)
        inside = g < 1
        inst[y0:y1, x0:x1][inside] = i
        rho[y0:y1, x0:x1][inside] = g[inside]

    keep = []
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        if y0 >= y1 or x0 >= x1:
            continue
        sub = inst[y0:y1, x0:x1]
        own = sub == i
        if not own.any():
            continue
        lab, n = ndimage.label(own)
        if n > 1:  # occluded into pieces: keep the largest, the rest becomes support
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            stray = own & (lab != int(np.argmax(sizes)))
            sub[stray] = 0
            rho[y0:y1, x0:x1][stray] = np.inf
            own &= ~stray
        if own.sum() < min_area:
            sub[own] = 0
            rho[y0:y1, x0:x1][own] = np.inf
            continue
        keep.append(i)
    lut = np.zeros(len(particles) + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    inst = lut[inst]
    return inst, rho, [particles[i - 1] for i in keep]


def thickness(rho: np.ndarray, flat_top: np.ndarray | float) -> np.ndarray:
    """Relative projected thickness from rho: a sphere-like dome, flat-topped for faceted
    particles (``flat_top`` < 1 saturates it), 0 outside."""
    t = np.sqrt(np.clip(1 - rho.astype(np.float32) ** 2, 0, None))
    return np.minimum(t / flat_top, 1.0).astype(np.float32)


def lattice_vectors(p: Particle, pixel_size_nm: float) -> np.ndarray:
    """Real-space lattice vectors (rows a1, a2) in px, as (x, y) pairs."""
    a = p.lattice_nm / pixel_size_nm
    t = p.lattice_angle
    second = t + (np.pi / 2 if p.lattice == "square" else np.pi / 3)
    return a * np.array([[math.cos(t), math.sin(t)], [math.cos(second), math.sin(second)]])


def reciprocal_vectors(p: Particle, pixel_size_nm: float) -> np.ndarray:
    """First-order reciprocal lattice vectors (one per fringe set, +g only), cycles/px, (x, y).

    Square: 2 sets (b1, b2); hexagonal: 3 sets (b1, b2, b1 + b2), all of equal length.
    """
    a = lattice_vectors(p, pixel_size_nm)
    b = np.linalg.inv(a).T  # rows b1, b2 with a_i . b_j = delta_ij
    if p.lattice == "hex":
        b = np.vstack([b, b[0] + b[1]])
    return b
