"""npe2 sample data: simulated noisy micrographs with their clean version and ground truth.

Each sample opens three layers, all at the simulated pixel size (nm) as layer scale:
the noisy image (what a microscope records), the clean image (the restoration target)
and the ground-truth semantic mask (1 = support, 2 = particle) as a Labels layer.
"""

from __future__ import annotations

from typing import Any

SAMPLE_SIZE = 512
SAMPLE_SEED = {"stem": 7, "hrtem": 11}
SAMPLE_DOSE = {"stem": 20.0, "hrtem": 50.0}
SAMPLE_LABEL = {"stem": "STEM", "hrtem": "HRTEM"}


def _sample(kind: str) -> list[tuple[Any, dict, str]]:
    from napari_temseg.display import display_limits
    from napari_temseg.synth import simulate

    s = simulate(kind=kind, size=SAMPLE_SIZE, dose=SAMPLE_DOSE[kind], seed=SAMPLE_SEED[kind])
    scale = (s.pixel_size_nm, s.pixel_size_nm)
    label = SAMPLE_LABEL[kind]
    meta = {
        "source": "napari-temseg simulator",
        "kind": kind,
        "dose_e_per_px": s.dose,
        "pixel_size_nm": s.pixel_size_nm,
        "seed": SAMPLE_SEED[kind],
    }
    common = {"scale": scale, "units": ("nm", "nm"), "metadata": meta}
    return [
        (
            s.noisy,
            {"name": f"{label} noisy", "contrast_limits": display_limits(s.noisy), **common},
            "image",
        ),
        (
            s.clean,
            {
                "name": f"{label} clean",
                "visible": False,
                "contrast_limits": display_limits(s.clean),
                **common,
            },
            "image",
        ),
        (
            s.recorded_semantic,  # registers with the noisy image shown
            {"name": f"{label} ground truth", "opacity": 0.4, "visible": False, **common},
            "labels",
        ),
    ]


def stem_nanoparticles() -> list[tuple[Any, dict, str]]:
    """HAADF-STEM nanoparticles on amorphous carbon at 20 e/px."""
    return _sample("stem")


def hrtem_nanoparticles() -> list[tuple[Any, dict, str]]:
    """HRTEM nanoparticles (lattice fringes) on amorphous carbon at 50 e/px."""
    return _sample("hrtem")
