"""Build a network from a plain, JSON-able config dict (what checkpoints store)."""

from __future__ import annotations

from typing import Any

from torch import nn

from napari_temseg.models.pix2pix import PatchGANDiscriminator
from napari_temseg.models.rdn import RDN
from napari_temseg.models.unet import UNet

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "rdn": RDN,
    "patchgan": PatchGANDiscriminator,
}


def build_model(config: dict[str, Any]) -> nn.Module:
    """``{"arch": "unet"|"rdn"|"patchgan", **kwargs}`` -> a freshly initialised network.

    Every network keeps its full config (defaults filled in) as ``model.config``, so
    ``build_model(model.config)`` rebuilds the same architecture.
    """
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(f"a model config is a dict with an 'arch' key, got {config!r}")
    kwargs = dict(config)
    arch = kwargs.pop("arch")
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown or misspelt keyword
        raise ValueError(f"bad config for {arch!r}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
