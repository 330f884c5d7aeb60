"""One checkpoint format for every model the project writes: denoisers now, segmenters later.

A checkpoint is a safetensors file: the tensors, plus a text header holding JSON for the
architecture config and the metadata (task, input normalisation, training data, pixel
size range, class names, ...). Reading it never unpickles anything, so a model file from
a stranger cannot run code. Files written with ``torch.save`` in the same layout (a dict
of ``format``, ``config``, ``meta``, ``state_dict``) are read with ``weights_only=True``,
which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from napari_temseg.io.outputs import replace_atomically, rescue_folders
from napari_temseg.models.trust import (
    TASKS,
    build_trusted,
    check_architecture,
    check_header,
)

FORMAT = "napari-temseg-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable napari-temseg checkpoint (the message says why)."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written where asked; ``rescued`` is where it went instead."""

    def __init__(self, message: str, rescued: Path | None) -> None:
        super().__init__(message)
        self.rescued = rescued

    def __str__(self) -> str:
        return str(self.args[0])


def _plain(obj: Any) -> Any:
    """JSON-able copy of ``obj``: numpy/torch scalars and tuples become plain values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"checkpoint metadata must be JSON-able; got {type(obj).__name__}: {obj!r}")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model`` (its ``config`` and weights) and ``meta`` to ``path`` (safetensors).

    ``meta["task"]`` must be ``"denoise"`` or ``"segment"``; everything else in ``meta``
    is free (``normalization``, ``training_data``, ``pixel_size_nm_range``,
    ``class_names``, ``description``, ...) as long as it is JSON-able.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "arch" not in config:
        raise TypeError(f"{type(model).__name__} has no .config dict; it cannot be checkpointed")
    if meta.get("task") not in TASKS:
        raise ValueError(f"meta['task'] must be one of {TASKS}, got {meta.get('task')!r}")
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(_plain(config)),
        "meta": json.dumps(_plain(meta)),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the checkpoint a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # our own temporary name (safetensors' save_file would leave a hidden .tmpXXXXXX of
    # its own behind when killed); ordinary file permissions, not mkstemp's 0600
    blob = save(tensors, metadata=header)
    replace_atomically(path, lambda tmp: tmp.write_bytes(blob))
    legacy = path.with_name(path.name + ".tmp")  # what earlier versions left behind
    if legacy.is_file():
        legacy.unlink()
    return path


def save_or_rescue(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """:func:`save_checkpoint`, but a trained model is never lost to an unwritable path.

    If ``path`` cannot be written at the end of a run (the disk filled, the folder went
    away), the model is saved under :func:`~napari_temseg.io.outputs.rescue_folders`
    instead and :class:`CheckpointSaveError` says where.
    """
    path = Path(path)
    try:
        return save_checkpoint(path, model, meta)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        for folder in rescue_folders():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            spare = folder / f"{path.stem}-{stamp}{path.suffix or '.safetensors'}"
            try:
                save_checkpoint(spare, model, meta)
            except OSError:
                continue
            raise CheckpointSaveError(
                f"could not write {path} ({reason}); the model was saved to {spare} instead",
                spare,
            ) from exc
        raise CheckpointSaveError(
            f"could not write {path} ({reason}), nor a copy in {rescue_folders()[0]}", None
        ) from exc


def _read_safetensors(path: Path, with_tensors: bool) -> tuple[dict, dict, dict | None]:
    """Header first, checked; the stored shapes against the declared network next; the
    tensors last, so a hostile header costs nothing (``models.trust``)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise CheckpointError(
                f"{path.name} is a safetensors file but not a napari-temseg checkpoint "
                "(no architecture/metadata header)"
            )
        try:
            config, meta = json.loads(header["config"]), json.loads(header["meta"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path.name}: damaged checkpoint header ({exc})") from exc
        _trusted(path, check_header, config, meta)
        if not with_tensors:
            return config, meta, None
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        _trusted(path, check_architecture, config, shapes)
        return config, meta, {k: f.get_tensor(k) for k in f.keys()}


def _trusted(path: Path, check: Any, *args: Any) -> Any:
    """``check(*args)`` from ``models.trust``, its ValueError as a CheckpointError."""
    try:
        return check(*args)
    except ValueError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from exc


def _read_torch(path: Path) -> tuple[dict, dict, dict]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses code objects so
        raise CheckpointError(
            f"{path.name} holds pickled Python objects (a whole model, or code), which are "
            "never loaded: only plain-tensor checkpoints are"
        ) from exc
    except Exception as exc:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0]) if str(exc) else ""
        raise CheckpointError(
            f"{path.name} could not be read as a weights-only torch file ({type(exc).__name__}: "
            f"{first}); only plain tensors are accepted"
        ) from exc
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise CheckpointError(f"{path.name} is a torch file but not a napari-temseg checkpoint")
    try:
        config, meta, state = obj["config"], obj["meta"], dict(obj["state_dict"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: incomplete checkpoint ({exc})") from exc
    _trusted(path, check_header, config, meta)
    return config, meta, state


def _is_package(path: Path) -> bool:
    """A bioimage.io model package (a zip with its rdf.yaml), not a torch file."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(
                n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml") for n in z.namelist()
            )
    except (zipfile.BadZipFile, OSError):
        return False


def _package_refused(path: Path) -> CheckpointError:
    """A bioimage.io package given where a checkpoint is asked for: said so, with the way
    to use it (it named torch's archive internals: "file in archive is not in a
    subdirectory: cover.png")."""
    return CheckpointError(
        f"{path.name} is a bioimage.io model package, not a checkpoint: import it once with "
        f"`temseg import-bioimageio {path.name} OUT.safetensors` (or Load it in the Train "
        "dock) and use that file"
    )


def _read(path: str | Path, with_tensors: bool) -> tuple[dict, dict, dict | None]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return _read_safetensors(path, with_tensors)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if zipfile.is_zipfile(path):
            if _is_package(path):
                raise _package_refused(path) from exc
            config, meta, tensors = _read_torch(path)
            return config, meta, tensors if with_tensors else None
        raise CheckpointError(
            f"{path.name} is not a napari-temseg checkpoint (not a safetensors file: {exc})"
        ) from exc


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint, reading only its header (cheap; used to list models)."""
    return _read(path, with_tensors=False)[1]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network stored in ``path`` on ``device`` (in eval mode) -> (model, meta).

    ``meta`` also carries ``config`` (the architecture) for convenience. Raises
    :class:`CheckpointError` for anything that is not an intact checkpoint.
    """
    config, meta, tensors = _read(path, with_tensors=True)
    model = _trusted(Path(path), build_trusted, config, tensors)
    model.eval().to(device)
    return model, {**meta, "config": config}
