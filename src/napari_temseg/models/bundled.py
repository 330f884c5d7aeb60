"""The pretrained models shipped inside the package, found by name; nothing is downloaded.

Every ``weights/<name>.safetensors`` is a bundled model; its one-line description and
task come from the checkpoint header, so adding a model is adding a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from napari_temseg.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SUFFIX = ".safetensors"
DEFAULT_DENOISER = "stem-denoise"
#: A bundled denoiser's header may name another bundled file that segmenters fine-tuned
#: "from" it start from. Trained longer, a denoiser restores better but its features can
#: fit a new segmentation head worse; then both are shipped, and this key joins them. It
#: describes one file's weights, so a model derived from that file must not inherit it
#: (:func:`derived_meta`).
FINETUNE_START = "finetune_start"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    task: str
    path: Path


def list_models(task: str | None = None) -> list[ModelInfo]:
    """Bundled models (optionally only one ``task``), sorted by name."""
    found = []
    for path in sorted(WEIGHTS_DIR.glob(f"*{SUFFIX}")):
        try:
            meta = read_checkpoint_meta(path)
        except CheckpointError:
            continue  # a stray file in weights/ must not break listing
        info = ModelInfo(
            name=path.name[: -len(SUFFIX)],
            description=str(meta.get("description", "")).splitlines()[0]
            if meta.get("description")
            else "",
            task=str(meta.get("task", "")),
            path=path,
        )
        if task is None or info.task == task:
            found.append(info)
    return found


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model's name, or a path to a checkpoint file -> the file's path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = WEIGHTS_DIR / f"{name_or_path}{SUFFIX}"
    if isinstance(name_or_path, str) and "/" not in name_or_path and bundled.is_file():
        return bundled
    names = ", ".join(m.name for m in list_models()) or "none installed"
    raise CheckpointError(f"no model named or at {str(name_or_path)!r}; bundled models: {names}")


def derived_meta(meta: dict) -> dict:
    """``meta`` for a model trained from a bundled one: without the keys that describe only
    the bundled file's own weights."""
    return {k: v for k, v in meta.items() if k != FINETUNE_START}


def load_model(
    name_or_path: str | Path = DEFAULT_DENOISER, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a bundled model by name, or any checkpoint file, in eval mode on ``device``."""
    return load_checkpoint(resolve_model(name_or_path), device=device)
