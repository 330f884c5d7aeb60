"""Colour images made grey for the commands that process micrographs.

Micrographs are single-channel, but they reach us as RGB(A) too: screenshots, exports of
acquisition software, masks from other labs. Processing the colour axis as image rows
(a 128x128x3 picture denoised as 128 frames of 128x3) is silently wrong, so colour is
turned into grey once, here, with a note: when all colour channels are equal (a grey
image or a black-and-white mask stored as RGB) the first channel is taken as it is,
losslessly; otherwise the luminance (ITU-R BT.709 weights, as scikit-image's rgb2gray).
Alpha is dropped. The napari reader keeps colour: napari shows it as an RGB layer.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from napari_temseg.io.model import DataWarning, EMImage

LUMINANCE = (0.2125, 0.7154, 0.0721)


def is_colour(image: EMImage) -> bool:
    """True when the last axis holds RGB(A) samples."""
    return bool(image.axes) and image.axes[-1].name == "rgb" and image.axes[-1].size in (3, 4)


def to_grey(image: EMImage, label: str = "") -> EMImage:
    """``image`` without its colour axis (see the module docstring); says what it did in
    ``metadata["notes"]`` and as a :class:`DataWarning`."""
    if not is_colour(image):
        return image
    rgb = np.asarray(image.data)[..., :3]
    if (rgb == rgb[..., :1]).all():
        grey = np.ascontiguousarray(rgb[..., 0])
        note = "stored as RGB with equal channels: read as grey, unchanged"
    else:
        grey = (rgb.astype(np.float32) @ np.asarray(LUMINANCE, np.float32)).astype(np.float32)
        note = "a colour (RGB) image: converted to grey luminance (0.2125 R + 0.7154 G + 0.0721 B)"
    if image.axes[-1].size == 4:
        note += "; alpha dropped"
    warnings.warn(f"{label or image.path}: {note}", DataWarning, stacklevel=2)
    axes = image.axes[:-1]
    meta = {**image.metadata, "notes": [*image.metadata.get("notes", []), note]}
    kind = "image" if len(axes) == 2 else "stack"
    return replace(image, data=grey, axes=axes, kind=kind, metadata=meta)
