"""TEM/STEM image simulator and distortion models. No Qt."""
