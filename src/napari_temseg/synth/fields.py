"""Random fields made by filtering white noise in Fourier space.

Amorphous supports, slow thickness changes and illumination all look like noise with a
characteristic length scale. Drawing a complex Gaussian spectrum and shaping it with a
radial filter gives any such texture with one inverse FFT, in a few ms for 1024².
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
from scipy import ndimage


def _radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """|k| in cycles per pixel on the rfft2 grid of ``shape``."""
    fy = sfft.fftfreq(shape[0]).astype(np.float32)
    fx = sfft.rfftfreq(shape[1]).astype(np.float32)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _from_spectrum(spec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    field = sfft.irfft2(spec, s=shape, workers=1).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _white_spectrum(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    half = (shape[0], shape[1] // 2 + 1)
    re = rng.standard_normal(half, dtype=np.float32)
    im = rng.standard_normal(half, dtype=np.float32)
    return re + 1j * im


def smooth_field(shape: tuple[int, int], corr_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``corr_px`` pixels."""
    k = _radial_frequency(shape)
    spec = _white_spectrum(shape, rng) * np.exp(-0.5 * (k * 2 * np.pi * corr_px) ** 2)
    return _from_spectrum(spec, shape)


def bandpass_field(
    shape: tuple[int, int], f_lo: float, f_hi: float, rng: np.random.Generator
) -> np.ndarray:
    """Zero-mean, unit-std noise whose power lies between ``f_lo`` and ``f_hi`` cycles/px.

    The pass band has soft Gaussian edges so the texture has no ringing. Frequencies are
    clipped to Nyquist (0.5 cycles/px): structure finer than a pixel cannot be drawn, it
    averages out, which is what a pixel does to it.
    """
    f_hi = min(f_hi, 0.5)
    f_lo = min(f_lo, 0.8 * f_hi)
    k = _radial_frequency(shape)
    filt = np.exp(-0.5 * (k / max(f_hi, 1e-6)) ** 2) * (
        1 - np.exp(-0.5 * (k / max(f_lo, 1e-6)) ** 2)
    )
    spec = _white_spectrum(shape, rng) * filt
    return _from_spectrum(spec, shape)


def fast_gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur whose cost does not grow with ``sigma``.

    Wide blurs (sigma >= 8 px) run on a block-averaged copy and are interpolated back: the
    block mean (box of f px) and the linear interpolation add about f²/4 of variance, which
    is taken off the Gaussian so the total blur stays ``sigma``; f = sigma / 4 keeps the
    result within a fraction of a percent of a full-resolution filter.
    """
    img = np.asarray(img, dtype=np.float32)
    if sigma < 8:
        return ndimage.gaussian_filter(img, sigma, truncate=3.0)
    f = int(sigma // 4)
    h, w = img.shape
    # mirror a margin of 3 sigma at full resolution (scipy's "reflect"), so the small grid
    # never sees a boundary that the full-resolution filter would not
    m = math.ceil(3 * sigma / f) * f
    ph, pw = m + (-(h + 2 * m)) % f, m + (-(w + 2 * m)) % f
    padded = np.pad(img, ((m, ph), (m, pw)), mode="symmetric")
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean((1, 3))
    s_small = math.sqrt(max(sigma**2 - f * f / 4, 0.25)) / f
    small = ndimage.gaussian_filter(small, s_small, truncate=3.0, mode="nearest")
    # block centres sit at (i + 0.5) f - 0.5 in padded full-resolution coordinates
    small = _lerp_axis(small, m, h, f, axis=0)
    return _lerp_axis(small, m, w, f, axis=1).astype(np.float32)


def _lerp_axis(a: np.ndarray, offset: int, n: int, f: int, axis: int) -> np.ndarray:
    """Linear interpolation of block centres back to full-resolution samples
    ``offset .. offset + n - 1`` of the padded image, along ``axis``."""
    pos = (np.arange(offset, offset + n, dtype=np.float32) + 0.5) / f - 0.5
    i0 = np.clip(np.floor(pos), 0, a.shape[axis] - 2).astype(np.int64)
    t = pos - i0
    if axis == 0:
        return a[i0] * (1 - t)[:, None] + a[i0 + 1] * t[:, None]
    return a[:, i0] * (1 - t)[None, :] + a[:, i0 + 1] * t[None, :]
