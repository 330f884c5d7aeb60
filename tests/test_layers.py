"""The package's layers: io, synth and models at the bottom, the engine above them, the
pipeline (files, batches, cluster, demo) above the engine, widgets and CLI on top
(``docs/architecture.md``). Two plain modules sit under everything: ``defaults`` (every
default, typed once) and ``display`` (the one contrast-limit rule).

An import from a lower layer up into a higher one, even one deferred inside a function,
is how circles and Qt or file handling creep back into the engine; this test names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_temseg

ROOT = Path(napari_temseg.__file__).parent
RANK = {
    "defaults": -1,
    "display": -1,
    "io": 0,
    "synth": 0,
    "models": 0,
    "engine": 1,
    "pipeline": 2,
    "widgets": 3,
    "cli": 3,
    "_sample_data": 3,
    "_launch": 4,
}


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


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(["napari_temseg", *parts]).removesuffix(".__init__")


def _graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import sub`` counts ``sub``)."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets |= {m for m in subs if m in modules} or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_the_package_has_no_import_circle():
    """Strongly connected components of the module graph (Tarjan): each must be one module."""
    graph = _graph()
    assert len(graph) > 60 and any(graph.values())  # the graph was really read
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_everything_below_the_widgets_runs_without_qt():
    """The engine, the pipeline and below run headless (the CLI, dask workers)."""
    gui = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui"}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if RANK.get(_layer(path), 3) >= 3:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for n in names:
                top = n.split(".")
                if top[0] in gui or (
                    top[0] == "napari" and top[1:2] in (["qt"], ["_qt"], ["window"])
                ):
                    found.append(f"{path.relative_to(ROOT)} imports {n}")
    assert found == []
