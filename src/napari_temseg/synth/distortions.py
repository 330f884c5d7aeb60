"""Detector and scan distortions of TEM/STEM images: :class:`DistortionConfig`, :func:`distort`.

The set follows Lobato, Friedrich & Van Aert (npj Comput. Mater. 2024): counting (Poisson)
noise, detector gain, dark current, read-out noise, X-ray hits, dead pixels and columns,
STEM scan jitter, fly-back and drift, blur from non-uniform scan speed, and quantisation.
They are applied in the order the signal meets them (scan geometry -> scan-speed blur ->
scan-line flicker -> electron counting -> dark current -> camera MTF -> gain and bias ->
read-out -> detector decay (STEM, off in :meth:`DistortionConfig.full`) -> X-ray hits -> dead pixels -> ADC), see docs/simulator.md. Each distortion draws from its own random
stream, so switching one on or off never changes what the others draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy import ndimage, signal

from .particles import jsonable
from .scene import check_kind

Range = tuple[float, float]


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _loguniform(rng: np.random.Generator, r: Range) -> float:
    if r[1] <= r[0]:
        return float(r[0])
    return float(np.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


# --------------------------------------------------------------------------- config


@dataclass
class PoissonNoise:
    """Electron counting: counts ~ Poisson(dose * ideal)."""

    enabled: bool = True
    probability: float = 1.0


@dataclass
class Gain:
    """Detector conversion (ADU per electron) and dynamic range. Disabled: 1 ADU/e.

    STEM: the operator sets the detector gain (brightness/contrast) so the brightest expected
    signal uses ``headroom`` of the ADC's full scale, g = headroom * full_scale / (dose * max
    + dark). HRTEM camera: a conversion factor drawn from ``adu_per_e``, lowered to that
    value only where the signal would otherwise not fit.
    """

    enabled: bool = True
    probability: float = 1.0
    adu_per_e: Range = (1.0, 30.0)  # log-uniform (camera; STEM fills the range instead)
    bits: tuple[int, ...] = (12, 14, 16)
    headroom: Range = (0.3, 0.9)


@dataclass
class DarkCurrent:
    """Thermal/PMT dark counts (Poisson, e/px) plus a fixed ADC bias (fraction of full scale)."""

    enabled: bool = True
    probability: float = 1.0
    rate_e_per_px: Range = (0.0, 0.5)
    bias_fraction: Range = (0.0, 0.05)


@dataclass
class ReadoutNoise:
    """Amplifier/read-out Gaussian noise, sigma in electron equivalents."""

    enabled: bool = True
    probability: float = 1.0
    sigma_e: Range = (0.05, 1.5)


@dataclass
class XRayHits:
    """X-rays hitting the detector: isolated bright pixels, small blobs and short streaks
    at ``amplitude`` of full scale (near saturation)."""

    enabled: bool = True
    probability: float = 1.0
    rate_per_mpx: Range = (2.0, 60.0)
    amplitude: Range = (0.4, 1.0)
    max_streak_px: int = 8


@dataclass
class DeadPixels:
    """Dead (0) or stuck (constant high) single pixels, as a fraction of all pixels."""

    enabled: bool = True
    probability: float = 1.0
    fraction: Range = (1e-5, 5e-4)
    stuck_fraction: float = 0.3


@dataclass
class DeadColumns:
    """Whole or partial dead (0) or stuck columns (a bad readout channel)."""

    enabled: bool = True
    probability: float = 1.0
    count: tuple[int, int] = (1, 3)
    stuck_fraction: float = 0.3


@dataclass
class RowJitter:
    """STEM: each scan line displaced by a random shift (x; y at a third of it), in px."""

    enabled: bool = True
    probability: float = 1.0
    sigma_px: Range = (0.1, 1.0)


@dataclass
class FlyBack:
    """STEM: the beam has not settled after fly-back; the first columns of each line are
    sampled at x - A exp(-x / tau) (a nonlinear stretch), A varying 10 % from line to line."""

    enabled: bool = True
    probability: float = 1.0
    amplitude_px: Range = (1.0, 12.0)
    decay_px: Range = (3.0, 40.0)


@dataclass
class Drift:
    """STEM: specimen drift during the frame, a smooth displacement as a function of scan
    time: a linear drift (total px over the frame) plus a slow wobble."""

    enabled: bool = True
    probability: float = 1.0
    total_px: Range = (0.5, 10.0)
    wobble_px: Range = (0.0, 2.0)
    wobble_cycles: Range = (0.5, 4.0)


@dataclass
class ScanBlur:
    """STEM: non-uniform scan speed; a 1D Gaussian blur along the fast-scan axis whose sigma
    varies from line to line and is larger at the line start (the beam is still fast)."""

    enabled: bool = True
    probability: float = 1.0
    sigma_px: Range = (0.2, 1.2)
    line_variation: Range = (0.0, 0.5)
    start_boost: Range = (0.0, 1.5)


@dataclass
class LineNoise:
    """STEM: scan-line intensity flicker (probe current and detector gain drifting between
    lines): each line's signal scaled by 1 + N(0, sigma), seen as horizontal streaks."""

    enabled: bool = True
    probability: float = 1.0
    sigma: Range = (0.005, 0.05)


@dataclass
class DetectorDecay:
    """STEM: the detector's signal decays over ``tau_px`` pixel dwell times (scintillator
    afterglow, amplifier bandwidth), so each recorded pixel keeps an exponentially fading
    share of the pixels scanned before it on its line. Unlike the scan-speed blur it acts
    on the detector's analog output, after the amplifier's own noise is added, so the shot
    noise and the read-out noise are both smeared along the fast scan: the high-frequency
    power of the real TIA frames in ``../shared/testdata`` is 0.35-0.54 times lower along x
    than along y, against 0.97 for our frames without it at 5 e/px
    (``benchmarks/bench_noise_anisotropy.py``), and the HRSTEM frame's noise spectrum along
    x is that of a decay over about one dwell time with no white floor left.
    Mullarkey et al., Microsc. Microanal. 29 (2023), "How fast is your detector?".
    Off in :meth:`DistortionConfig.full` so that the benchmark sets keep their images;
    training switches it on (``train_bundled_denoisers.py --detector-decay P``)."""

    enabled: bool = True
    probability: float = 1.0
    tau_px: Range = (0.2, 1.5)


@dataclass
class CameraMTF:
    """HRTEM camera: scintillator/fibre-optic point spread, Gaussian sigma in px, applied to
    the counts (so the noise is correlated, as on a real CCD/CMOS camera)."""

    enabled: bool = True
    probability: float = 1.0
    sigma_px: Range = (0.3, 1.0)


@dataclass
class Quantisation:
    """ADC: round to integer ADU and clip to [0, 2**bits - 1] (saturation)."""

    enabled: bool = True
    probability: float = 1.0


STEM_ONLY = ("row_jitter", "fly_back", "drift", "scan_blur", "line_noise", "detector_decay")
HRTEM_ONLY = ("camera_mtf",)


@dataclass
class DistortionConfig:
    """Which distortions to apply and the ranges their physical parameters are drawn from.

    Every field has ``enabled`` (the switch) and ``probability`` (chance it is applied to a
    given image when enabled). Scan distortions apply to STEM only, the camera MTF to HRTEM
    only. Use :meth:`full`, :meth:`poisson_only` or :meth:`none` and adjust fields.
    """

    poisson: PoissonNoise = field(default_factory=PoissonNoise)
    gain: Gain = field(default_factory=Gain)
    dark: DarkCurrent = field(default_factory=DarkCurrent)
    readout: ReadoutNoise = field(default_factory=ReadoutNoise)
    xray: XRayHits = field(default_factory=XRayHits)
    dead_pixels: DeadPixels = field(default_factory=DeadPixels)
    dead_columns: DeadColumns = field(default_factory=DeadColumns)
    row_jitter: RowJitter = field(default_factory=RowJitter)
    fly_back: FlyBack = field(default_factory=FlyBack)
    drift: Drift = field(default_factory=Drift)
    scan_blur: ScanBlur = field(default_factory=ScanBlur)
    camera_mtf: CameraMTF = field(default_factory=CameraMTF)
    quantisation: Quantisation = field(default_factory=Quantisation)
    line_noise: LineNoise = field(default_factory=LineNoise)  # last ones: keep earlier streams
    detector_decay: DetectorDecay = field(default_factory=DetectorDecay)

    @classmethod
    def full(cls) -> DistortionConfig:
        """All distortions on; the occasional ones (X-rays, dead pixels/columns, scan
        artefacts) appear in a realistic share of images rather than in every one."""
        c = cls()
        for name, p in (
            ("xray", 0.5),
            ("dead_pixels", 0.5),
            ("dead_columns", 0.2),
            ("row_jitter", 0.8),
            ("fly_back", 0.5),
            ("drift", 0.7),
            ("scan_blur", 0.6),
            ("line_noise", 0.6),
            ("camera_mtf", 0.8),
        ):
            getattr(c, name).probability = p
        c.detector_decay.enabled = False  # see DetectorDecay: keeps the benchmark sets
        return c

    @classmethod
    def poisson_only(cls) -> DistortionConfig:
        """Counting noise and detector gain only (no offsets, no artefacts, no rounding)."""
        c = cls.none()
        c.poisson.enabled = True
        c.gain.enabled = True
        return c

    @classmethod
    def none(cls) -> DistortionConfig:
        """Nothing: noisy == clean == dose * ideal (gain 1)."""
        c = cls()
        for f in fields(c):
            getattr(c, f.name).enabled = False
        return c

    def names(self) -> list[str]:
        return [f.name for f in fields(self)]

    def copy(self) -> DistortionConfig:
        return DistortionConfig(**{n: replace(getattr(self, n)) for n in self.names()})


# --------------------------------------------------------------------------- geometry


def _scan_coordinates(
    shape: tuple[int, int], cfg: DistortionConfig, rngs: dict, params: dict
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the probe really was for each recorded pixel, or None when nowhere else."""
    h, w = shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    dx = np.zeros((h, 1), np.float32)
    dy = np.zeros((h, 1), np.float32)
    moved = False

    if _applies(cfg, "drift", rngs, params):
        r = rngs["drift"]
        total = _uniform(r, cfg.drift.total_px)
        ang = float(r.uniform(0, 2 * np.pi))
        wob = _uniform(r, cfg.drift.wobble_px)
        cyc = _uniform(r, cfg.drift.wobble_cycles)
        ph = r.uniform(0, 2 * np.pi, 2)
        tau = (rows + cols / w) / h  # scan time, 0..1 over the frame
        dx = dx + total * math.cos(ang) * tau + wob * np.sin(2 * np.pi * cyc * tau + ph[0])
        dy = dy + total * math.sin(ang) * tau + wob * np.sin(2 * np.pi * cyc * tau + ph[1])
        params["drift"].update(total_px=total, angle=ang, wobble_px=wob, wobble_cycles=cyc)
        moved = True
    if _applies(cfg, "row_jitter", rngs, params):
        r = rngs["row_jitter"]
        s = _uniform(r, cfg.row_jitter.sigma_px)
        dx = dx + s * r.standard_normal((h, 1)).astype(np.float32)
        dy = dy + s / 3 * r.standard_normal((h, 1)).astype(np.float32)
        params["row_jitter"].update(sigma_px=s)
        moved = True
    if _applies(cfg, "fly_back", rngs, params):
        r = rngs["fly_back"]
        a = _uniform(r, cfg.fly_back.amplitude_px)
        tau_px = _uniform(r, cfg.fly_back.decay_px)
        per_line = a * (1 + 0.1 * r.standard_normal((h, 1))).astype(np.float32)
        dx = dx - per_line * np.exp(-cols / tau_px)
        params["fly_back"].update(amplitude_px=a, decay_px=tau_px)
        moved = True
    if not moved:
        return None
    return np.broadcast_to(rows + dy, shape), np.broadcast_to(cols + dx, shape)


def scan_coordinates(
    shape: tuple[int, int], kind: str, seed: int, config: DistortionConfig | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the probe was for each recorded pixel of the frame :func:`distort` drew.

    ``seed`` is ``params["seed"]`` of that frame and ``config`` its distortion settings:
    every distortion draws from its own stream of that seed, so the same drift, jitter and
    fly-back come out. Returns (rows, cols) to sample the undistorted scene at, or None when
    the scan was ideal (HRTEM, or no geometric distortion drawn). ``synth.simulate`` uses it
    to put the ground-truth masks where the particles appear in the recorded image.
    """
    if kind != "stem":
        return None
    cfg = DistortionConfig.full() if config is None else config
    return _scan_coordinates(tuple(shape), cfg, _streams(cfg, int(seed)), {})


def _streams(cfg: DistortionConfig, seed: int) -> dict[str, np.random.Generator]:
    """One independent random stream per distortion of ``cfg``, all from ``seed``."""
    names = cfg.names()
    streams = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, streams, strict=True)}


def _scan_blur(img: np.ndarray, cfg: DistortionConfig, rngs: dict, params: dict) -> np.ndarray:
    if not _applies(cfg, "scan_blur", rngs, params):
        return img
    r = rngs["scan_blur"]
    h, w = img.shape
    s0 = _uniform(r, cfg.scan_blur.sigma_px)
    var = _uniform(r, cfg.scan_blur.line_variation)
    boost = _uniform(r, cfg.scan_blur.start_boost)
    start = _uniform(r, (5.0, 40.0))
    line = np.clip(1 + var * r.standard_normal((h, 1)), 0.2, None)
    sig = (s0 * line * (1 + boost * np.exp(-np.arange(w) / start)[None, :])).astype(np.float32)
    params["scan_blur"].update(sigma_px=s0, line_variation=var, start_boost=boost, start_px=start)
    # blend between a few blurred copies: a spatially varying kernel at a few filter costs
    levels = np.linspace(0.0, float(sig.max()), 5)
    pos = sig / levels[-1] * (len(levels) - 1)
    out = img * np.clip(1 - pos, 0, None)  # hat-function weights: linear between levels
    for i, s in enumerate(levels[1:], start=1):
        blurred = ndimage.gaussian_filter1d(img, s, axis=1, truncate=3.0)
        out += blurred * np.clip(1 - np.abs(pos - i), 0, None)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- detector


def _detector_decay(
    analog: np.ndarray, cfg: DistortionConfig, rngs: dict, params: dict
) -> np.ndarray:
    """y[i] = (1 - a) x[i] + a y[i-1] along each line, a = exp(-1 / tau): unit gain, so the
    mean (and the bias) is kept; each line starts settled at its first pixel (the fly-back
    is long)."""
    tau = _uniform(rngs["detector_decay"], cfg.detector_decay.tau_px)
    a = math.exp(-1.0 / tau)
    x = analog.astype(np.float64)
    y = signal.lfilter([1.0 - a], [1.0, -a], x, axis=1, zi=a * x[:, :1])[0]
    params["detector_decay"].update(tau_px=tau)
    return y.astype(np.float32)


def _xray(out: np.ndarray, fs: float, cfg: DistortionConfig, rngs: dict, params: dict) -> None:
    if not _applies(cfg, "xray", rngs, params):
        return
    r = rngs["xray"]
    h, w = out.shape
    rate = _uniform(r, cfg.xray.rate_per_mpx)
    n = int(r.poisson(rate * h * w / 1e6))
    ys, xs, vals = [], [], []
    for _ in range(n):
        y, x = int(r.integers(h)), int(r.integers(w))
        amp = _uniform(r, cfg.xray.amplitude) * fs
        kind = r.random()
        if kind < 0.5:  # single pixel
            py, px, pv = [y], [x], [amp]
        elif kind < 0.8:  # small blob: centre + some neighbours
            nb = np.array([(0, 0), (0, 1), (1, 0), (1, 1), (-1, 0), (0, -1)])
            keep = nb[: int(r.integers(2, 7))]
            py, px = (y + keep[:, 0]).tolist(), (x + keep[:, 1]).tolist()
            pv = (amp * r.uniform(0.3, 1.0, len(keep))).tolist()
            pv[0] = amp
        else:  # short streak: an X-ray at grazing incidence
            length = int(r.integers(2, max(cfg.xray.max_streak_px, 2) + 1))
            ang = r.uniform(0, np.pi)
            t = np.arange(length)
            py = np.rint(y + t * math.sin(ang)).astype(int).tolist()
            px = np.rint(x + t * math.cos(ang)).astype(int).tolist()
            pv = (amp * r.uniform(0.5, 1.0, length)).tolist()
        ys += py
        xs += px
        vals += pv
    params["xray"].update(rate_per_mpx=rate, n_events=n)
    if ys:
        ya, xa, va = np.array(ys), np.array(xs), np.array(vals, np.float32)
        ok = (ya >= 0) & (ya < h) & (xa >= 0) & (xa < w)
        np.add.at(out, (ya[ok], xa[ok]), va[ok])


def _dead(out: np.ndarray, fs: float, cfg: DistortionConfig, rngs: dict, params: dict) -> None:
    h, w = out.shape
    if _applies(cfg, "dead_pixels", rngs, params):
        r = rngs["dead_pixels"]
        frac = _loguniform(r, cfg.dead_pixels.fraction)
        n = max(1, int(r.poisson(frac * h * w)))
        flat = r.choice(h * w, size=min(n, h * w), replace=False)
        stuck = r.random(len(flat)) < cfg.dead_pixels.stuck_fraction
        vals = np.where(stuck, r.uniform(0.3, 1.0, len(flat)) * fs, 0.0)
        out.reshape(-1)[flat] = vals
        params["dead_pixels"].update(fraction=frac, n=len(flat), n_stuck=int(stuck.sum()))
    if _applies(cfg, "dead_columns", rngs, params):
        r = rngs["dead_columns"]
        lo, hi = cfg.dead_columns.count
        n = int(r.integers(lo, hi + 1))
        cols = []
        for _ in range(n):
            c = int(r.integers(w))
            start = int(r.integers(0, h // 2)) if r.random() < 0.3 else 0  # partial column
            stuck = bool(r.random() < cfg.dead_columns.stuck_fraction)
            v = float(r.uniform(0.3, 1.0) * fs) if stuck else 0.0
            out[start:, c] = v
            cols.append({"column": c, "from_row": start, "value": v})
        params["dead_columns"].update(columns=cols)


def _applies(cfg: DistortionConfig, name: str, rngs: dict, params: dict) -> bool:
    """Whether distortion ``name`` acts on this image (switch on and probability drawn)."""
    sub = getattr(cfg, name)
    on = bool(sub.enabled) and bool(rngs[name].random() < sub.probability)
    params[name] = {"applied": on}
    return on


# --------------------------------------------------------------------------- entry point


def _check_ideal(ideal: np.ndarray) -> np.ndarray:
    a = np.asarray(ideal)
    if a.ndim != 2:
        raise ValueError(f"ideal must be a 2D image, got shape {a.shape}")
    if min(a.shape) < 2:
        raise ValueError(f"ideal must be at least 2x2 pixels, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"ideal must be a real-valued image, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("ideal contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"ideal must be scaled to [0, 1] (got values {lo:.4g}..{hi:.4g}); "
            "rescale it first, e.g. (x - x.min()) / (x.max() - x.min())"
        )
    return np.clip(a, 0, 1)


def distort(
    ideal: np.ndarray,
    dose: float,
    kind: str,
    rng: np.random.Generator,
    config: DistortionConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw a (noisy, clean, params) pair at ``dose`` electrons per pixel from ``ideal``.

    ``ideal`` is any float image in [0, 1] (a simulated specimen or a real micrograph
    rescaled to [0, 1]); ``dose`` is the mean number of electrons a pixel with ideal = 1
    receives. ``clean`` = gain * dose * ideal + dark offset (the expected detector value of
    the undistorted scene, float32); ``noisy`` is what the detector records (float32, integer
    ADU when quantised). ``config`` None means :meth:`DistortionConfig.full`.
    """
    check_kind(kind)
    a = _check_ideal(ideal)
    if not (np.isfinite(dose) and dose > 0):
        raise ValueError(f"dose must be a positive number of electrons per pixel, got {dose!r}")
    dose = float(dose)
    cfg = DistortionConfig.full() if config is None else config
    if not isinstance(cfg, DistortionConfig):
        raise TypeError(f"config must be a DistortionConfig, got {type(cfg).__name__}")
    seed = int(rng.integers(2**63))
    names = cfg.names()
    rngs = _streams(cfg, seed)
    params: dict = {"seed": seed, "dose": dose, "kind": kind}
    scan_ok = kind == "stem"
    cam_ok = kind == "hrtem"

    # detector operating point: gain (ADU/e), full scale, dark rate, bias
    g = 1.0
    r = rngs["gain"]
    bits = int(r.choice(cfg.gain.bits))
    fs = float(2**bits - 1)
    headroom = _uniform(r, cfg.gain.headroom)
    dark_on = _applies(cfg, "dark", rngs, params)
    rate = _uniform(rngs["dark"], cfg.dark.rate_e_per_px) if dark_on else 0.0
    bias_frac = _uniform(rngs["dark"], cfg.dark.bias_fraction) if dark_on else 0.0
    if _applies(cfg, "gain", rngs, params):
        g_fill = headroom * fs * (1 - bias_frac) / (dose * max(float(a.max()), 1e-3) + rate + 1e-9)
        # STEM: the operator sets the detector gain to fill the ADC range; camera: a fixed
        # conversion factor, lowered only if the signal would not fit
        g = g_fill if scan_ok else min(_loguniform(r, cfg.gain.adu_per_e), g_fill)
    bias = bias_frac * fs
    params["gain"].update(adu_per_e=g, bits=bits, full_scale=fs, headroom=headroom)
    if dark_on:
        params["dark"].update(rate_e_per_px=rate, bias_adu=bias)
    offset = g * rate + bias
    clean = (g * dose) * a + offset

    # 1. scan geometry and 2. scan-speed blur (STEM only): where and how the probe sampled
    img = a
    if scan_ok:
        coords = _scan_coordinates(a.shape, cfg, rngs, params)
        if coords is not None:
            img = ndimage.map_coordinates(a, coords, order=1, mode="reflect").astype(np.float32)
        img = _scan_blur(img, cfg, rngs, params)
        if _applies(cfg, "line_noise", rngs, params):
            r = rngs["line_noise"]
            s = _uniform(r, cfg.line_noise.sigma)
            img = img * np.clip(1 + s * r.standard_normal((a.shape[0], 1)), 0, None).astype(
                np.float32
            )
            params["line_noise"]["sigma"] = s

    # 3. electron counting, 4. dark counts
    lam = img * dose
    counts = (
        rngs["poisson"].poisson(lam).astype(np.float32)
        if _applies(cfg, "poisson", rngs, params)
        else lam.astype(np.float32)
    )
    if dark_on:
        counts = counts + rngs["dark"].poisson(rate, size=a.shape).astype(np.float32)
    # 5. camera point spread (HRTEM)
    if cam_ok and _applies(cfg, "camera_mtf", rngs, params):
        s = _uniform(rngs["camera_mtf"], cfg.camera_mtf.sigma_px)
        counts = ndimage.gaussian_filter(counts, s, truncate=3.0)
        params["camera_mtf"]["sigma_px"] = s
    # 6. gain and bias, 7. read-out noise
    out = counts * np.float32(g) + np.float32(bias)
    if _applies(cfg, "readout", rngs, params):
        se = _uniform(rngs["readout"], cfg.readout.sigma_e)
        out += (g * se) * rngs["readout"].standard_normal(a.shape, dtype=np.float32)
        params["readout"].update(sigma_e=se, sigma_adu=g * se)
    # 7b. detector decay along the fast scan (STEM): the analog chain's bandwidth smears the
    # counted signal, its shot noise and the amplifier's own noise alike
    if scan_ok and _applies(cfg, "detector_decay", rngs, params):
        out = _detector_decay(out, cfg, rngs, params)
    # 8. X-ray hits, 9. dead pixels and columns
    _xray(out, fs, cfg, rngs, params)
    _dead(out, fs, cfg, rngs, params)
    # 10. ADC: integer ADU, saturation
    if _applies(cfg, "quantisation", rngs, params):
        out = np.clip(np.rint(out), 0, fs)
    for n in names:
        params.setdefault(n, {"applied": False})
        if (not scan_ok and n in STEM_ONLY) or (not cam_ok and n in HRTEM_ONLY):
            params[n] = {"applied": False, "reason": f"not used for {kind}"}
    return out.astype(np.float32), clean.astype(np.float32), jsonable(params)
