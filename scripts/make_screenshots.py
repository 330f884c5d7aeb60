"""Screenshots of the real napari window for the README and docs, taken under Xvfb.

Run: xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from qtpy.QtWidgets import QApplication
from skimage.io import imsave

from napari_temseg._launch import build_viewer

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def settle(n: int = 20) -> None:
    for _ in range(n):
        QApplication.processEvents()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = build_viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.reset_view()
    settle()
    docks = list(viewer.window._dock_widgets.values())
    if docks:
        docks[0].raise_()
    settle()
    path = OUT / "napari_main.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {path}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
