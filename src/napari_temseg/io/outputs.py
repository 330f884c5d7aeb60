"""Where results go: check an output path before any work, and write files atomically.

Hours of training or a night's batch must not be lost because the output turned out to be
a file, a read-only folder or ``/proc``: every command checks its output here *before* it
starts, and says in one line what is wrong and what to do. Files are written under a
hidden temporary name of our own (``.NAME.partial``) and renamed into place, so an
interrupted write never leaves a half-written file under the real name, and the next
write to the same name replaces any leftover of a killed one. No Qt.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be written; the message says why and what to do."""


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.partial")


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to :func:`partial_path`, then rename it to ``path``; never a torn file.

    A leftover of an earlier, killed write to the same name is overwritten and, whatever
    happens, removed.
    """
    tmp = partial_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _probe(folder: Path) -> str | None:
    """Create and remove a file in ``folder``: None if that works, else the reason.

    Permission bits say too little (root ignores them; ``/proc``, immutable folders and
    read-only mounts refuse anyway), so this tries what the write will do.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".temseg-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(name)
    return None


def _existing_parent(path: Path) -> Path:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_folder(path: str | os.PathLike) -> Path:
    """The folder outputs will be written to, checked (not created): -> its path.

    Raises :class:`OutputError` when ``path`` is a file, or neither it nor the folder it
    would be created in can be written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a folder; give a folder for the outputs")
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise OutputError(f"cannot create the folder {path}: {parent} is a file")
    reason = _probe(parent)
    if reason:
        where = "" if parent == path else f" (in {parent})"
        raise OutputError(
            f"cannot write to {path}{where}: {reason}; choose a folder you can write to"
        )
    return path


def check_output_file(
    path: str | os.PathLike, overwrite: bool = False, example: str = "model.safetensors"
) -> Path:
    """A file that will be written, checked before the work that makes it: -> its path.

    Refuses a folder (``example`` is the file name the message suggests in it), an
    existing file unless ``overwrite`` (``FileExistsError``), and a place that cannot be
    written (see :func:`check_output_folder`).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name (e.g. {path / example})")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or allow overwrite")
    check_output_folder(path.parent)
    return path


def rescue_folders() -> list[Path]:
    """Where a result goes when its own output fails at the end: home, then temp."""
    return [Path.home() / "napari-temseg-rescued", Path(tempfile.gettempdir()) / "napari-temseg"]


__all__ = [
    "OutputError",
    "check_output_file",
    "check_output_folder",
    "partial_path",
    "replace_atomically",
    "rescue_folders",
]
