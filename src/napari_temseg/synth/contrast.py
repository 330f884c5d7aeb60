"""Image formation: HAADF-STEM Z-contrast and HRTEM phase contrast of painted particles.

Both renderers take the painted instance and gauge maps, so what is drawn is exactly what
the masks say. Lattice detail finer than the pixel grid can carry is faded out smoothly
(never aliased): a STEM column lattice whose spacing falls below ~3 px blends into its mean
projected density, and an HRTEM fringe set whose spatial frequency approaches Nyquist is
attenuated to zero by an anti-aliasing taper (0.30 -> 0.45 cycles/px), as the finite pixel
and the camera MTF would do.
"""

from __future__ import annotations

import math

import numpy as np

from .fields import bandpass_field, fast_gaussian, smooth_field
from .particles import Particle, lattice_vectors, reciprocal_vectors, thickness


def nyquist_taper(f: np.ndarray | float, lo: float = 0.30, hi: float = 0.45) -> np.ndarray:
    """1 below ``lo`` cycles/px, 0 above ``hi``, raised-cosine in between."""
    x = np.clip((np.asarray(f, dtype=np.float64) - lo) / (hi - lo), 0, 1)
    return 0.5 * (1 + np.cos(np.pi * x))


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _splat(grid: np.ndarray, y: np.ndarray, x: np.ndarray, wgt: np.ndarray) -> None:
    """Add weights at sub-pixel positions bilinearly into ``grid`` (in place)."""
    h, w = grid.shape
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = (y - y0).astype(np.float32)
    fx = (x - x0).astype(np.float32)
    flat = grid.reshape(-1)
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        flat += np.bincount(yy[ok] * w + xx[ok], weights=(wgt * ww)[ok], minlength=h * w).astype(
            np.float32
        )


def _lattice_sum(avec: np.ndarray, sigma: float) -> float:
    """Sum of exp(-|R|^2 / 2 sigma^2) over lattice points: the peak of a lattice of unit
    Gaussians relative to one Gaussian, used to give full-thickness columns a peak of 1."""
    amin = float(np.min(np.linalg.norm(avec, axis=1)))
    k = math.ceil(4 * sigma / max(amin * 0.5, 1e-3)) + 1
    i, j = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    pts = i.reshape(-1, 1) * avec[0] + j.reshape(-1, 1) * avec[1]
    return float(np.exp(-(pts**2).sum(1) / (2 * sigma * sigma)).sum())


def _columns(
    p: Particle, pid: int, inst: np.ndarray, pixel_size_nm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel (y, x) of the particle's atomic columns that fall inside its own mask, and
    a relative weight per column (1, or the basis weight for the cell-centre column)."""
    h, w = inst.shape
    avec = lattice_vectors(p, pixel_size_nm)  # rows (x, y)
    ext = p.radius * 1.6 + 2
    # the particle's box, clipped to the image, relative to its centre
    x0, x1 = max(p.cx - ext, -1.0) - p.cx, min(p.cx + ext, w + 1.0) - p.cx
    y0, y1 = max(p.cy - ext, -1.0) - p.cy, min(p.cy + ext, h + 1.0) - p.cy
    corners = np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]])
    inv = np.linalg.inv(avec.T)  # (x, y) -> fractional lattice coordinates
    frac = corners @ inv.T
    lo = np.floor(frac.min(0)).astype(int) - 1
    hi = np.ceil(frac.max(0)).astype(int) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    uv = np.stack([i.ravel(), j.ravel()], 1).astype(np.float64) + np.asarray(p.lattice_origin)
    wgt = np.ones(len(uv), np.float32)
    if p.basis_weight > 0:
        uv = np.vstack([uv, uv + 0.5])
        wgt = np.concatenate([wgt, np.full(len(wgt), p.basis_weight, np.float32)])
    xy = uv @ avec
    x = xy[:, 0] + p.cx
    y = xy[:, 1] + p.cy
    yi = np.rint(y).astype(np.int64)
    xi = np.rint(x).astype(np.int64)
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    ok[ok] = inst[yi[ok], xi[ok]] == pid
    return y[ok], x[ok], wgt[ok]


def render_stem(
    inst: np.ndarray,
    rho: np.ndarray,
    particles: list[Particle],
    pixel_size_nm: float,
    rng: np.random.Generator,
    *,
    support_level: float | None = None,
    column_fwhm_nm: float | None = None,
) -> tuple[np.ndarray, dict]:
    """HAADF-STEM image in [0, 1]: bright atomic columns on a dim amorphous support.

    Each particle: brightness b (Z-contrast, larger = thicker = brighter) times projected
    thickness t(rho), split into a diffuse part (thermal diffuse scattering, probe tails) and
    Gaussian atomic columns normalised so a full-thickness column peaks at b. Columns are
    splatted bilinearly at sub-pixel positions and blurred once with the probe Gaussian.
    """
    shape = inst.shape
    p_nm = pixel_size_nm
    fwhm = float(rng.uniform(0.1, 0.25)) if column_fwhm_nm is None else float(column_fwhm_nm)
    sigma = max(fwhm / 2.3548 / p_nm, 0.7)
    b_img = float(rng.uniform(0.6, 0.95))
    diffuse = float(rng.uniform(0.05, 0.25))
    col_jitter = float(rng.uniform(0.0, 0.1))  # column intensity scatter (vacancies, Z)
    level = float(rng.uniform(0.02, 0.08)) if support_level is None else float(support_level)
    info = {
        "column_fwhm_nm": fwhm,
        "probe_sigma_px": sigma,
        "brightness": b_img,
        "diffuse_fraction": diffuse,
        "column_intensity_scatter": col_jitter,
        "support_level": level,
    }

    # amorphous carbon: smooth thickness variation + atom-scale grain, both weak
    grain_amp = float(rng.uniform(0.2, 0.5)) * min(1.0, 0.15 / p_nm)
    thick_amp = float(rng.uniform(0.1, 0.35))
    corr_nm = float(rng.uniform(5, 40))
    grain = bandpass_field(shape, p_nm / 0.6, p_nm / 0.2, rng)
    slow = smooth_field(shape, corr_nm / p_nm, rng)
    support = level * (1 + thick_amp * slow + grain_amp * grain)
    info.update(support_grain=grain_amp, support_thickness_var=thick_amp, support_corr_nm=corr_nm)

    grid = np.zeros(shape, np.float32)
    if particles:
        n = len(particles)
        diam = np.array([2 * p.radius for p in particles])
        b = b_img * np.clip(np.sqrt(diam / diam.max()), 0.4, 1.0) * rng.uniform(0.8, 1.0, n)
        off_zone = rng.random(n) < 0.15
        flat = np.array([p.flat_top for p in particles], np.float32)
        mask = inst > 0
        idx = inst[mask]
        t = thickness(rho[mask], flat[idx - 1])
        dens = np.zeros(n + 1, np.float32)  # diffuse + unresolved-lattice density per particle
        cols_y: list[np.ndarray] = []
        cols_x: list[np.ndarray] = []
        cols_w: list[np.ndarray] = []
        for k, p in enumerate(particles):
            pid = k + 1
            avec = lattice_vectors(p, p_nm)
            a_px = p.lattice_nm / p_nm
            cell = abs(float(np.linalg.det(avec)))
            s = _lattice_sum(avec, sigma)
            mean_lat = 2 * np.pi * sigma**2 / (s * cell) * (1 + p.basis_weight)
            # spacing below ~2.5 px cannot be drawn: fade to the mean density by 3.5 px
            w_lat = 0.0 if off_zone[k] else float(_smoothstep(a_px - 2.5))
            dens[pid] = b[k] * (diffuse + (1 - diffuse) * (1 - w_lat) * mean_lat)
            if w_lat > 0:
                y, x, wc = _columns(p, pid, inst, p_nm)
                if len(y):
                    tc = thickness(rho[np.rint(y).astype(int), np.rint(x).astype(int)], p.flat_top)
                    scatter = 1 + col_jitter * rng.standard_normal(len(y))
                    wts = b[k] * (1 - diffuse) * w_lat * 2 * np.pi * sigma**2 / s
                    cols_y.append(y)
                    cols_x.append(x)
                    cols_w.append(wts * wc * tc * scatter)
        if cols_y:  # one splat for all particles: bincount over the image is the cost
            _splat(grid, np.concatenate(cols_y), np.concatenate(cols_x), np.concatenate(cols_w))
        grid[mask] += dens[idx] * t
        info["particles"] = {
            "brightness": b.tolist(),
            "off_zone": off_zone.tolist(),
        }
    img = fast_gaussian(grid, sigma) + support
    return np.clip(img, 0, 1).astype(np.float32), info


def render_hrtem(
    inst: np.ndarray,
    rho: np.ndarray,
    particles: list[Particle],
    pixel_size_nm: float,
    rng: np.random.Generator,
    *,
    contrast_mode: str | None = None,
    illumination: float | None = None,
) -> tuple[np.ndarray, dict]:
    """HRTEM image in [0, 1]: lattice fringes in particles on phase-contrast speckle.

    ``contrast_mode``: particle mean "brighter", "darker" or "equal" to the support (in
    "equal" only the fringes tell a particle from the support); None draws one.
    ``illumination``: peak-to-peak relative illumination gradient across the field.
    """
    shape = inst.shape
    h, w = shape
    p_nm = pixel_size_nm
    if contrast_mode is None:
        contrast_mode = str(rng.choice(["brighter", "darker", "equal"]))
    if contrast_mode not in ("brighter", "darker", "equal"):
        raise ValueError(f"contrast_mode must be brighter, darker or equal, got {contrast_mode!r}")
    base = float(rng.uniform(0.4, 0.6))
    speckle_amp = float(rng.uniform(0.02, 0.07)) * min(1.0, 0.1 / p_nm) ** 0.5
    speckle_lo, speckle_hi = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.15, 0.3))  # nm
    fresnel_amp = float(rng.choice([0.0, rng.uniform(0.01, 0.06)]))
    fresnel_sign = float(rng.choice([-1.0, 1.0]))
    fresnel_nm = float(rng.uniform(0.3, 1.0))
    if illumination is None:
        illumination = float(rng.uniform(0, 0.15))
    illum_angle = float(rng.uniform(0, 2 * np.pi))
    info: dict = {
        "contrast_mode": contrast_mode,
        "base": base,
        "speckle_amp": speckle_amp,
        "speckle_period_nm": [speckle_hi, speckle_lo],
        "fresnel_amp": fresnel_amp * fresnel_sign,
        "fresnel_width_nm": fresnel_nm,
        "illumination": illumination,
        "illumination_angle": illum_angle,
    }
    speckle = speckle_amp * bandpass_field(shape, p_nm / speckle_lo, p_nm / speckle_hi, rng)
    img = base + speckle

    if particles:
        n = len(particles)
        mask = inst > 0
        ys, xs = np.nonzero(mask)
        idx = inst[ys, xs] - 1
        flat = np.array([p.flat_top for p in particles], np.float32)
        t = thickness(rho[ys, xs], flat[idx])
        r = np.clip(rho[ys, xs], 0, 1)
        # 1-px soft edge (rho step per px ~ 1/radius) and thicker = stronger fringes
        radius = np.array([p.radius for p in particles], np.float32)
        env = _smoothstep((1 - r) * radius[idx]) * (0.4 + 0.6 * t)
        gvec = np.zeros((n, 3, 2))  # up to 3 fringe sets per particle: g (cycles/px),
        gamp = np.zeros((n, 3))  # amplitude and phase
        gph = np.zeros((n, 3))
        amps_all = []
        for k, p in enumerate(particles):
            g = reciprocal_vectors(p, p_nm)
            sets = np.arange(len(g))
            if rng.random() < 0.35:  # off-zone: only one family of planes in Bragg condition
                sets = rng.choice(sets, 1)
            amp = np.zeros(len(g))
            amp[sets] = rng.uniform(0.03, 0.1, len(sets))
            taper = nyquist_taper(np.linalg.norm(g, axis=1))
            amp *= taper
            # resolvable fringes are kept at least as strong as the support speckle, so a
            # particle is always told apart by them (in "equal" mode by nothing else)
            if taper[sets].max() > 0.3 and amp.sum() < speckle_amp:
                amp *= speckle_amp / max(amp.sum(), 1e-6)
            gvec[k, : len(g)] = g
            gamp[k, : len(g)] = amp
            gph[k, : len(g)] = rng.uniform(0, 2 * np.pi, len(g))
            amps_all.append(amp.tolist())
        cx = np.array([p.cx for p in particles])[idx]
        cy = np.array([p.cy for p in particles])[idx]
        xr = (xs - cx).astype(np.float32)
        yr = (ys - cy).astype(np.float32)
        fringes = np.zeros(len(ys), np.float32)
        for j in range(3):
            if gamp[:, j].any():
                gx = (2 * np.pi * gvec[:, j, 0]).astype(np.float32)[idx]
                gy = (2 * np.pi * gvec[:, j, 1]).astype(np.float32)[idx]
                ph = gph[:, j].astype(np.float32)[idx]
                fringes += gamp[:, j].astype(np.float32)[idx] * np.cos(gx * xr + gy * yr + ph)
        img[ys, xs] += fringes * env
        if fresnel_amp > 0:
            m = mask.astype(np.float32)
            img += fresnel_sign * fresnel_amp * (fast_gaussian(m, fresnel_nm / p_nm) - m)
        # set each particle's mean exactly: support mean + offset (zero in "equal" mode)
        visible = np.array([max(a) if a else 0.0 for a in amps_all])
        if contrast_mode == "equal":
            offs = np.zeros(n)
        else:
            sign = 1.0 if contrast_mode == "brighter" else -1.0
            offs = sign * rng.uniform(0.03, 0.15) * rng.uniform(0.7, 1.0, n)
        # a particle with no resolvable fringes is still seen by its mass-thickness contrast
        profile = rng.uniform(0.0, 1.0, n)  # 0: flat disc, 1: thickness-shaped
        weak = visible < 0.01
        if weak.any():
            w_sign = rng.choice([-1.0, 1.0], int(weak.sum()))
            w_mag = rng.uniform(0.04, 0.1, int(weak.sum()))
            offs[weak] = np.where(offs[weak] == 0, w_sign * w_mag, offs[weak])
        support_mean = float(img[~mask].mean()) if (~mask).any() else base
        # mass-thickness contrast follows the thickness profile (stronger in the middle)
        vals = img[ys, xs] + (offs * profile)[idx] * t
        cnt = np.bincount(idx, minlength=n)
        mean_now = np.bincount(idx, weights=vals, minlength=n) / np.maximum(cnt, 1)
        img[ys, xs] = vals + (support_mean + offs - mean_now)[idx]
        info["particles"] = {
            "mean_offset": offs.tolist(),
            "thickness_profile": profile.tolist(),
            "fringe_amplitudes": amps_all,
        }
    if illumination > 0:
        yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None]
        xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :]
        ramp = math.cos(illum_angle) * xx + math.sin(illum_angle) * yy
        img = img * (1 + illumination * ramp)
    return np.clip(img, 0, 1).astype(np.float32), info
