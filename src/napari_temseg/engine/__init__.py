"""Tiling, inference, pretraining and fine-tuning: pure torch/numpy, no Qt."""

from napari_temseg.engine.data import PairSource, PatchSource, simulated_source
from napari_temseg.engine.denoise import denoise
from napari_temseg.engine.device import DeviceError, describe_device, select_device
from napari_temseg.engine.events import TrainEvent
from napari_temseg.engine.tiling import Cancelled, predict_tiled, tile_starts, tiles_per_frame
from napari_temseg.engine.train import (
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    iter_train,
    train,
)
from napari_temseg.models.normalize import Normalization

__all__ = [
    "Cancelled",
    "DeviceError",
    "Normalization",
    "PairSource",
    "PatchSource",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "TrainingDiverged",
    "denoise",
    "describe_device",
    "iter_train",
    "predict_tiled",
    "select_device",
    "simulated_source",
    "tile_starts",
    "tiles_per_frame",
    "train",
]
