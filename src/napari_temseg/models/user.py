"""Models the user trained in this session, listed beside the bundled ones.

The Pretrain and Train widgets register what they produce here; the Denoise and Train
widgets list it and refresh when ``user_models_changed`` fires. Nothing is persisted: a
user saves a model as a checkpoint file to keep it.
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal, SignalInstance

from napari_temseg.models.bundled import ModelInfo
from napari_temseg.models.checkpoint import read_checkpoint_meta


class _Registry:
    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, ModelInfo] = {}

    def register(self, name: str, path: str | Path, description: str = "") -> ModelInfo:
        """Add (or replace) a model; its task comes from the checkpoint header."""
        meta = read_checkpoint_meta(path)
        info = ModelInfo(
            name=name,
            description=description or str(meta.get("description", "your model")),
            task=str(meta.get("task", "")),
            path=Path(path),
        )
        self._models[name] = info
        self.changed.emit()
        return info

    def list(self, task: str | None = None) -> list[ModelInfo]:
        return [m for m in self._models.values() if task is None or m.task == task]

    def clear(self) -> None:
        self._models.clear()
        self.changed.emit()


_REGISTRY = _Registry()
register_user_model = _REGISTRY.register
user_models = _REGISTRY.list
clear_user_models = _REGISTRY.clear
user_models_changed: SignalInstance = _REGISTRY.changed
