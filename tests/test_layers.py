"""The package's layers: io, synth and models at the bottom, the engine above them, the
pipeline (files, batches, cluster, demo) above the engine, widgets and CLI on top.

An import from a lower layer up into a higher one, even one deferred inside a function,
is how circles and Qt or file handling creep back into the engine; this test names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_temseg

ROOT = Path(napari_temseg.__file__).parent
RANK = {"io": 0, "synth": 0, "models": 0, "engine": 1, "pipeline": 2, "widgets": 3, "cli": 3}


def _layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(m, n) for m, n in found if m.startswith("napari_temseg.")]


def test_no_layer_imports_a_layer_above_it():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        layer = _layer(path)
        if layer not in RANK:
            continue
        for module, line in _imports(path):
            target = module.split(".")[1]
            if target in RANK and RANK[target] > RANK[layer]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert upward == []


def test_the_engine_handles_no_terminal_bars_or_clusters():
    for path in sorted((ROOT / "engine").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for word in ("tqdm", "distributed"):
            assert f"import {word}" not in text and f"from {word}" not in text, (path, word)
