"""Parts every dock is built from: model and device choices, the displayed frame, the camera.

They lived in the Denoise dock (which Train and Pretrain imported) and, for the frame and
the camera, in three copies. One home here, so no dock imports another dock's module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_info, show_warning

CHECKPOINT_CHOICE = "checkpoint file…"


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs naming what was actually found, e.g. "auto: CPU (2 threads)"."""
    import torch

    from napari_temseg.engine import describe_device, select_device

    choices = [(f"auto: {describe_device(select_device('auto'))}", "auto")]
    if torch.cuda.is_available():
        choices.append((describe_device(torch.device("cuda")), "cuda"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        choices.append(("Apple MPS", "mps"))
    choices.append((describe_device(torch.device("cpu")), "cpu"))
    return choices


def _short(text: str, limit: int = 40) -> str:
    """A model's description cut to fit a dock's combo box (the full one is in its card)."""
    text = text.split(" (")[0] if len(text) > limit else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_choices(task: str = "denoise") -> list[tuple[str, str]]:
    """Bundled models by name, then this session's own models by path, then "file…"."""
    from napari_temseg.models import list_models
    from napari_temseg.models.user import user_models

    found = [(f"{m.name}: {_short(m.description)}", m.name) for m in list_models(task)]
    found += [
        (f"{m.name} (yours): {_short(m.description)}", str(m.path)) for m in user_models(task)
    ]
    return [*found, (CHECKPOINT_CHOICE, CHECKPOINT_CHOICE)]


#: what a dock says when "current frame" is asked of a view that shows no single frame
NO_FRAME_SHOWN = (
    "The view does not show one frame of '{}' (a frame axis is displayed: rolled or "
    "transposed axes, or 3D). Show a frame's (y, x) plane, or choose the whole stack."
)


def frame_index(viewer: Any, layer: Any) -> tuple[int, ...] | None:
    """Index of the displayed frame in the layer's leading (non-image) axes; () for 2D.
    None when the view shows no single frame: one of those axes is displayed (rolled or
    transposed dims, a 3D view), so the canvas shows a plane across frames."""
    lead = layer.ndim - 2
    first = viewer.dims.ndim - layer.ndim  # napari aligns a layer's axes to the last ones
    if any(first + a in set(viewer.dims.displayed) for a in range(lead)):
        return None
    point = layer.world_to_data(viewer.dims.point)
    return tuple(
        int(np.clip(round(p), 0, s - 1))
        for p, s in zip(point[:lead], layer.data.shape[:lead], strict=True)
    )


def camera(viewer: Any) -> Any:
    """The viewer's camera (napari >= 0.9 moved it to ``viewer.scene.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def save_model_copy(source: Any, target: Any) -> Any:
    """Copy a model made in this session (its checkpoint ``source``) to the file the user
    chose, for the docks' *Save* buttons. Never overwrites; a missing model or name is a
    one-line warning. Returns the written path, or None."""
    import shutil
    from pathlib import Path

    if source is None:
        show_warning("There is no trained model to save yet.")
        return None
    if not target or str(target) in ("", "."):
        show_warning("Choose a file name to save the model as.")
        return None
    target = Path(target)
    if target.suffix.lower() != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    if target.exists():
        show_warning(f"{target} already exists; choose another name (nothing was overwritten).")
        return None
    from napari_temseg.io.outputs import replace_atomically

    try:  # a read-only share, a full disk, a file where a folder should be
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
    except OSError as exc:
        show_warning(f"Could not save the model to {target}: {exc.strerror or exc}")
        return None
    show_info(f"Saved the model to {target}")
    return target
