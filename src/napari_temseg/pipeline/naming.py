"""The one output-naming rule: ``OUTDIR/<stem>.tif``, then ``<stem>_1.tif``, ``<stem>_2.tif``.

Resume (``batch.run_batch``) decides a file is done by the very names the writers use, so
both ask here; :func:`output_stems` keeps two inputs from ever sharing a stem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def output_path(outdir: str | Path, stem: str, index: int = 0) -> Path:
    """The ``index``-th output of an input whose outputs are named ``stem`` (0: the main)."""
    return Path(outdir) / (stem + (f"_{index}.tif" if index else ".tif"))


def output_stems(files: Sequence[Path]) -> list[str]:
    """One output stem per input, all different (case-insensitively: Windows and macOS).

    ``<input stem>`` as the naming rule says; but where inputs share a stem (``x.dm3`` and
    ``x.dm4``) each keeps its full name (``x.dm3``), then its folder's too, so that no
    input's output is skipped as "complete" or replaced because of another's.
    """
    shared = Counter(f.stem.lower() for f in files)
    taken: set[str] = set()
    stems = []
    for f in files:
        options = [f.stem] if shared[f.stem.lower()] == 1 else []
        options += [f.name, f"{f.parent.name}-{f.name}"]
        options += [f"{f.parent.name}-{f.name}-{n}" for n in range(2, len(files) + 2)]
        stem = next(o for o in options if o.lower() not in taken)
        taken.add(stem.lower())
        stems.append(stem)
    return stems


__all__ = ["output_path", "output_stems"]
