"""Is the noise smeared along the fast scan? Real STEM/TEM frames against simulated ones.

    python benchmarks/bench_noise_anisotropy.py

A detector whose signal decays over about one pixel dwell time smears each electron's
pulse, and so the shot noise itself, along the scan line (Mullarkey et al., Microsc.
Microanal. 2023). That shows in the power spectrum: less power at high frequency along x
(fast scan) than along y. The figure reported is the mean power in the band
|kx| > 0.35, 0.05 < |ky| < 0.15 (cycles/px) over the mean power in the mirrored band, of
the Hann-windowed frame: 1 for white noise, lower for noise smeared along the scan. The
bands keep away from both axes, where lattice peaks and line flicker sit. Real frames
come from ``../shared`` (skipped when it is absent); simulated ones are drawn with the
full distortion set, with and without ``synth.DetectorDecay``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_temseg.synth import DistortionConfig, simulate

SHARED = Path(__file__).resolve().parents[2] / "shared"


def windowed_power(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrum of the Hann-windowed, mean-free frame, and |ky|, |kx| (cycles/px)
    broadcastable against it."""
    a = np.asarray(img, np.float64)
    a = a - a.mean()
    h, w = a.shape
    power = np.abs(np.fft.fft2(a * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    return power, np.abs(np.fft.fftfreq(h))[:, None], np.abs(np.fft.fftfreq(w))[None, :]


def anisotropy(img: np.ndarray) -> float:
    """Mean power at high kx over mean power at high ky (1 for white noise)."""
    power, ky, kx = windowed_power(img)
    high_x = (kx > 0.35) & (ky > 0.05) & (ky < 0.15)
    high_y = (ky > 0.35) & (kx > 0.05) & (kx < 0.15)
    return float(power[high_x].mean() / power[high_y].mean())


def real_frames(n_acstem: int) -> list[tuple[str, np.ndarray]]:
    """The real frames to measure, as (name, image); none when ../shared is absent."""
    import tifffile

    out: list[tuple[str, np.ndarray]] = []
    tia = SHARED / "testdata"
    for name in ("tkrem_hrstem_example.ser", "16_STOimage_1.ser"):
        if (tia / name).exists():
            from rsciio.tia import file_reader

            out.append((f"real TIA {name}", np.asarray(file_reader(str(tia / name))[0]["data"])))
    images = SHARED / "realdata" / "acstem" / "images"
    if images.is_dir():
        for p in sorted(images.glob("*.tif"))[:n_acstem]:
            out.append((f"real acstem {p.name}", tifffile.imread(p)))
    pair = SHARED / "realdata" / "lowdose_pair"
    for name in ("frame_a.tif", "frame_b.tif"):
        if (pair / name).exists():
            out.append((f"real low-dose TEM {name}", tifffile.imread(pair / name)))
    return out


def simulated(doses: list[float], taus: list[float], seed: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for dose in doses:
        s = simulate("stem", 512, pixel_size_nm=0.05, dose=dose, seed=seed)
        out.append((f"simulated STEM, {dose:g} e/px", s.noisy))
        for tau in taus:
            cfg = DistortionConfig.full()
            cfg.detector_decay.enabled = True
            cfg.detector_decay.tau_px = (tau, tau)
            s = simulate("stem", 512, pixel_size_nm=0.05, dose=dose, seed=seed, distortions=cfg)
            out.append((f"simulated STEM, {dose:g} e/px, decay tau {tau:g} px", s.noisy))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--acstem", type=int, default=4, help="how many acstem frames to measure")
    p.add_argument("--doses", type=float, nargs="+", default=[5.0, 50.0])
    p.add_argument("--taus", type=float, nargs="+", default=[0.5, 0.8, 1.2])
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    print("| frame | P(high kx) / P(high ky) |\n|---|---|")
    for name, img in real_frames(args.acstem) + simulated(args.doses, args.taus, args.seed):
        print(f"| {name} | {anisotropy(img):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
