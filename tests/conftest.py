"""Shared fixtures. Real microscope files live in ../shared/testdata beside the checkout.

``TEMSEG_TESTDATA`` points elsewhere (a path that does not exist shows how the suite
behaves on a machine without the files: every test that needs them is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TESTDATA = Path(
    os.environ.get("TEMSEG_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
)


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Folder of real microscope files; the test is skipped where it is absent.

    Session scope makes pytest set this up before any function-scoped fixture, whatever
    the argument order: a test that also asks for napari's ``make_napari_viewer`` is
    skipped before a viewer exists, instead of erroring in the viewer's teardown.
    """
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data not found at {TESTDATA}")
    return TESTDATA


def neighbour_correlation(noise: Any, axis: int) -> float:
    """Correlation of each pixel with its next neighbour along ``axis`` (1: the fast scan)."""
    import numpy as np

    a = np.moveaxis(np.asarray(noise), axis, -1)
    return float(np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1])


def train_segmenter_file(folder, size: int, **config) -> str:
    """A small segmenter from scratch on strokes of one simulated STEM frame of ``size``
    px, written to ``folder/seg.safetensors``; ``config``: FinetuneConfig's fields."""
    from napari_temseg.engine.finetune import FinetuneConfig, finetune, save_segmenter
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate

    s = simulate("stem", size, pixel_size_nm=0.1, dose=100, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=16, seed=0)
    result = finetune([s.noisy], [strokes], init="none", config=FinetuneConfig(**config))
    return str(save_segmenter(folder / "seg.safetensors", result.model, result.meta))


@pytest.fixture(scope="session")
def tiny_segmenter(tmp_path_factory) -> str:
    """A tiny segmenter file trained for 3 steps, for tests of files and plumbing (not of
    segmentation quality)."""
    return train_segmenter_file(
        tmp_path_factory.mktemp("model"),
        64,
        steps=3,
        batch_size=2,
        patch=32,
        base=4,
        depth=2,
        device="cpu",
    )


# --------------------------------------------------------------------------- docks


class Controls:
    """A dock's magicgui controls found as a user finds them: by their label, or a button's
    or check box's text, also inside collapsed sections. Tests drive the docks through
    these instead of the docks' private attributes, so renaming an attribute breaks none."""

    def __init__(self, widget: Any) -> None:
        from magicgui.widgets import Container
        from qtpy.QtWidgets import QWidget

        self._widget = widget
        self._found: dict[str, Any] = {}
        # the Qt tree in order: the dock's own rows, then its sections (widgets/_layout.py)
        for native in widget.native.findChildren(QWidget):
            control = getattr(native, "_magic_widget", None)  # set by magicgui on every widget
            if control is None or isinstance(control, Container):
                continue
            for name in (control.label, getattr(control, "text", None)):
                if name:
                    self._found.setdefault(str(name), control)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._found[name]
        except KeyError:
            raise KeyError(f"no control {name!r}; the dock has {sorted(self._found)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._found

    @property
    def table(self) -> Any:
        """The dock's table (a QTableWidget), as the user sees and clicks it."""
        from qtpy.QtWidgets import QTableWidget

        return self._widget.native.findChild(QTableWidget)

    def click(self, text: str) -> None:
        """Press the button saying ``text``."""
        self[text].clicked()


@pytest.fixture
def controls() -> Callable[[Any], Controls]:
    """``controls(dock)["Steps"].value = 40``; ``controls(dock).click("Train")``."""
    return Controls


@pytest.fixture
def open_dock(make_napari_viewer) -> Callable[[type], tuple[Any, Any]]:
    """``viewer, dock = open_dock(MeasureWidget)``: a dock docked in a fresh viewer, as
    napari's Plugins menu opens it (docking matters: it tabifies and sizes the dock)."""

    def opened(dock_class: type) -> tuple[Any, Any]:
        viewer = make_napari_viewer()
        dock = dock_class(viewer)
        viewer.window.add_dock_widget(dock)
        return viewer, dock

    return opened
