"""napari-temseg: denoise, restore and segment TEM/STEM images in napari.

The package is split by concern (see DEVELOPERS.md): ``io`` (files <-> arrays),
``synth`` (TEM/STEM simulator), ``models`` (networks and checkpoints), ``engine``
(tiling, inference, training), ``widgets`` (thin napari docks) and ``cli``.
Importing the package itself stays cheap: no torch, no Qt.
"""

from __future__ import annotations

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree without an installed build
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
