"""TEM/STEM image simulator and distortion models. No Qt."""

from .distortions import DistortionConfig, distort
from .sample import DOSE_RANGE, PIXEL_SIZE_RANGE_NM, SynthSample, simulate
from .scene import KINDS, specimen

__all__ = [
    "DOSE_RANGE",
    "KINDS",
    "PIXEL_SIZE_RANGE_NM",
    "DistortionConfig",
    "SynthSample",
    "distort",
    "simulate",
    "specimen",
]
