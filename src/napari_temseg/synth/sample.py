"""One simulated micrograph with its targets: :class:`SynthSample` and :func:`simulate`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .distortions import DistortionConfig, distort, scan_coordinates
from .scene import check_kind, check_size, specimen

#: pixel sizes drawn when none is given (nm/px, log-uniform): from atomic-resolution
#: (columns ~20-40 px apart) to overview magnifications where the lattice blurs out
PIXEL_SIZE_RANGE_NM = {"stem": (0.01, 0.25), "hrtem": (0.01, 0.12)}
#: doses drawn when none is given (electrons per pixel, log-uniform)
DOSE_RANGE = (0.5, 5000.0)


@dataclass
class SynthSample:
    """A simulated image, the restoration target and the ground truth, all (H, W).

    noisy: float32, what the detector records (detector units: counts * gain + offsets).
    clean: float32, the same scene in the same units with no noise and no scan/geometric
        distortion (gain * dose * ideal + dark offset): the denoising/restoration target.
    ideal: float32 in [0, 1], the relative noise-free image before dose and detector.
    semantic: uint8, 1 = support/background, 2 = particle, aligned with ``ideal``/``clean``.
    instances: int32, 0 = background, 1..N one id per particle, aligned the same way.
    recorded_clean: float32, ``clean`` where the scan recorded it: the scene at the probe
        positions (drift, row jitter, fly-back), still free of noise, blur and artefacts.
        The denoising target that keeps the recorded geometry: undoing a random row
        jitter from one noisy frame is guesswork, and a network trained to guess learns to
        blur atomic columns along the scan. Identical to ``clean`` for HRTEM or an ideal scan.
    recorded_semantic, recorded_instances: the same masks where the particles appear in
        ``noisy``: a STEM scan's drift, row jitter and fly-back move them by up to a few
        pixels (the masks are resampled at the probe positions, nearest neighbour). The
        ground truth for segmenting ``noisy``; identical to the above for HRTEM or an ideal
        scan. A 20 px particle off by 1-3 px loses 0.1-0.3 Dice against the wrong one.
    params: every random parameter drawn (JSON-serialisable), for reproducibility.
    """

    noisy: np.ndarray
    clean: np.ndarray
    ideal: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    pixel_size_nm: float
    kind: str
    dose: float
    params: dict
    recorded_semantic: np.ndarray | None = None
    recorded_instances: np.ndarray | None = None
    recorded_clean: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.recorded_clean is None:
            self.recorded_clean = self.clean
        if self.recorded_semantic is None:
            self.recorded_semantic = self.semantic
        if self.recorded_instances is None:
            self.recorded_instances = self.instances


def simulate(
    kind: str = "stem",
    size: int | tuple[int, int] = 512,
    pixel_size_nm: float | None = None,
    dose: float | None = None,
    seed: int | None = None,
    distortions: DistortionConfig | None = None,
) -> SynthSample:
    """Simulate a HAADF-STEM ("stem") or HRTEM ("hrtem") image of nanoparticles on a support.

    ``pixel_size_nm`` None draws log-uniformly from :data:`PIXEL_SIZE_RANGE_NM` for the kind;
    ``dose`` None draws log-uniformly from 0.5 to 5000 e/px; ``distortions`` None means
    :meth:`DistortionConfig.full`. The same ``seed`` gives the same sample, bit for bit.
    """
    check_kind(kind)
    shape = check_size(size)
    rng = np.random.default_rng(seed)
    if pixel_size_nm is None:
        lo, hi = PIXEL_SIZE_RANGE_NM[kind]
        pixel_size_nm = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    if dose is None:
        dose = float(np.exp(rng.uniform(math.log(DOSE_RANGE[0]), math.log(DOSE_RANGE[1]))))
    if not (isinstance(dose, (int, float, np.number)) and np.isfinite(dose) and dose > 0):
        raise ValueError(f"dose must be a positive number of electrons per pixel, got {dose!r}")
    # specimen and distortions draw from independent streams of the one seed
    spec_rng, dist_rng = (np.random.default_rng(s) for s in rng.spawn(2))
    ideal, semantic, instances, sinfo = specimen(kind, shape, float(pixel_size_nm), spec_rng)
    noisy, clean, dinfo = distort(ideal, float(dose), kind, dist_rng, distortions)
    coords = scan_coordinates(shape, kind, dinfo["seed"], distortions)
    rec_sem, rec_inst, rec_clean = semantic, instances, clean
    if coords is not None:  # the masks and the scene where the scan recorded them
        rec_clean = ndimage.map_coordinates(clean, coords, order=1, mode="reflect")
        rec_clean = rec_clean.astype(np.float32)
        rec_inst = ndimage.map_coordinates(instances, coords, order=0, mode="reflect")
        rec_inst = rec_inst.astype(np.int32)
        rec_sem = np.where(rec_inst > 0, 2, 1).astype(np.uint8)
    params = {
        "seed": seed,
        "kind": kind,
        "size": list(shape),
        "pixel_size_nm": float(pixel_size_nm),
        "dose": float(dose),
        "specimen": sinfo,
        "distortions": dinfo,
    }
    return SynthSample(
        noisy=noisy,
        clean=clean,
        ideal=ideal,
        semantic=semantic,
        instances=instances,
        pixel_size_nm=float(pixel_size_nm),
        kind=kind,
        dose=float(dose),
        params=params,
        recorded_semantic=rec_sem,
        recorded_instances=rec_inst,
        recorded_clean=rec_clean,
    )
