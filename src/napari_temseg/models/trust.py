"""Checks on a model file from anyone, made before anything is built from it.

A checkpoint or bioimage.io package is a stranger's file: its header may ask for a network
of billions of parameters (built, that would take the machine's memory before the weights
were even compared), hold metadata of the wrong types (a list where a dict belongs), or
weights that are NaN (a denoiser that returns zeros, exit 0). Here the declared
architecture is built on torch's ``meta`` device, which allocates nothing, and compared
name by name and shape by shape with the stored tensors; only then does the caller build
the real network. Errors are ``ValueError`` with a message the caller prefixes with the
file's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from napari_temseg.models.factory import build_model

#: the bundled networks have under 1 M parameters; a user's own may be larger, but a file
#: asking for more than this is not a model this plugin trains (800 MB of float32)
MAX_PARAMETERS = 200_000_000
#: no width, depth or channel count of ours comes near this
MAX_CONFIG_INT = 4096
TASKS = ("denoise", "segment")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


#: metadata keys the plugin reads, and what each must be
META_TYPES: dict[str, tuple[Any, str]] = {
    "task": (lambda v: v in TASKS, f"one of {', '.join(TASKS)}"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "class_names": (_strings, "a list of strings"),
    "class_colors": (_strings, "a list of colour strings"),
    "pixel_size_nm": (lambda v: v is None or (_number(v) and v > 0), "a positive number"),
    "normalization": (lambda v: v is None or isinstance(v, dict), "a dict"),
    "training": (lambda v: isinstance(v, dict), "a dict"),
}
NORMALIZATION_TYPES: dict[str, tuple[Any, str]] = {
    "method": (lambda v: isinstance(v, str), "a string"),
    "low": (_number, "a number"),
    "high": (_number, "a number"),
    "clip": (lambda v: v is None or _number(v), "a number or null"),
    "max_samples": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "> 0"),
}


def _check_types(d: Mapping[str, Any], types: dict[str, tuple[Any, str]], where: str) -> None:
    for key, (ok, what) in types.items():
        if key in d and not ok(d[key]):
            raise ValueError(f"damaged metadata: {where}{key} must be {what}, got {d[key]!r:.60}")


def check_header(config: Any, meta: Any) -> None:
    """The architecture config and metadata are dicts of the types the plugin reads."""
    if not isinstance(config, dict) or not isinstance(meta, dict):
        kinds = f"{type(config).__name__} and {type(meta).__name__}"
        raise ValueError(f"damaged header: the config and metadata must be dicts, not {kinds}")
    _check_types(meta, META_TYPES, "")
    if isinstance(meta.get("normalization"), dict):
        _check_types(meta["normalization"], NORMALIZATION_TYPES, "normalization.")
    for key, v in config.items():
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_CONFIG_INT:
            raise ValueError(f"its architecture's {key} = {v} is out of range")


def check_architecture(config: dict[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """The declared network, built on the meta device, has exactly the stored tensors.

    Raises before any memory is spent on a network the file does not hold weights for.
    """
    try:
        with torch.device("meta"):
            skeleton = build_model(config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc
    n = sum(p.numel() for p in skeleton.parameters())
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"its architecture asks for {n:,} parameters (at most {MAX_PARAMETERS:,} are "
            "loaded); this is not a network napari-temseg trains"
        )
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    if expected != stored:
        missing = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        wrong = [k for k in expected if k in stored and expected[k] != stored[k]]
        detail = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected {extra[0]}"
            if extra
            else f"{wrong[0]} is {stored[wrong[0]]}, the architecture needs {expected[wrong[0]]}"
        )
        raise ValueError(f"weights do not match its architecture ({detail})")


def check_finite(tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: such a model runs and silently returns garbage."""
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"its weights hold NaN or infinite values ({key}); the file is damaged"
            )


def build_trusted(config: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """The network of ``config`` with ``tensors`` loaded, after every check above."""
    check_architecture(config, {k: tuple(v.shape) for k, v in tensors.items()})
    check_finite(tensors)
    model = build_model(config)
    try:
        model.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy into the parameters
        first = str(exc).splitlines()[0]
        raise ValueError(f"weights do not match its architecture ({first})") from exc
    return model
