"""Network definitions, bundled weights, checkpoint save/load. No Qt."""

from napari_temseg.models.bundled import (
    DEFAULT_DENOISER,
    FINETUNE_START,
    ModelInfo,
    list_models,
    load_model,
    resolve_model,
)
from napari_temseg.models.checkpoint import (
    CheckpointError,
    CheckpointSaveError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    save_or_rescue,
)
from napari_temseg.models.factory import build_model, count_parameters
from napari_temseg.models.pix2pix import PatchGANDiscriminator
from napari_temseg.models.rdn import RDN
from napari_temseg.models.unet import UNet

__all__ = [
    "DEFAULT_DENOISER",
    "FINETUNE_START",
    "RDN",
    "CheckpointError",
    "CheckpointSaveError",
    "ModelInfo",
    "PatchGANDiscriminator",
    "UNet",
    "build_model",
    "count_parameters",
    "list_models",
    "load_checkpoint",
    "load_model",
    "read_checkpoint_meta",
    "resolve_model",
    "save_checkpoint",
    "save_or_rescue",
]
