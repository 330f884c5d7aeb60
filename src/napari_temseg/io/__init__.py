"""Readers and writers: microscope files <-> numpy/dask arrays + calibration. No Qt."""

from napari_temseg.io.model import (
    Axis,
    DataWarning,
    EMImage,
    NotAnImageError,
    ReaderError,
    ResultWarning,
)
from napari_temseg.io.readers import info_dict, read, read_images
from napari_temseg.io.writers import (
    FrameStream,
    TileStream,
    WriterError,
    instance_mask,
    write_image,
    write_labels,
)

__all__ = [
    "Axis",
    "DataWarning",
    "EMImage",
    "FrameStream",
    "NotAnImageError",
    "ReaderError",
    "ResultWarning",
    "TileStream",
    "WriterError",
    "info_dict",
    "instance_mask",
    "read",
    "read_images",
    "write_image",
    "write_labels",
]
