"""All five docks fit a 1600x1000 screen: tabbed when opened one by one, none too tall or wide."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QApplication, QDockWidget

from napari_temseg._launch import PLUGIN, widget_names

SCREEN = (1600, 1000)
# napari's menu bar, status bar, dock title and tab bar take about 150 px of the height
MAX_DOCK_HEIGHT = SCREEN[1] - 150
MAX_DOCK_WIDTH = 450  # leaves the canvas most of the width beside the layer controls


def _settle(n: int = 10) -> None:
    for _ in range(n):
        QApplication.processEvents()


def test_docks_opened_one_by_one_share_one_column_as_tabs_and_fit(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.float32), name="raw")  # no Labels layer
    docks = []
    for name in widget_names():  # as Plugins > TEM Segmentation > ... does: no tabify
        dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        docks.append(dock)
        _settle()
    window = viewer.window._qt_window
    for dock in docks:
        tabbed = set(window.tabifiedDockWidgets(dock))
        assert tabbed == set(docks) - {dock}, dock.windowTitle()
        content = dock.widget()
        for hint in (content.minimumSizeHint(), content.sizeHint()):
            assert hint.height() <= MAX_DOCK_HEIGHT, (dock.windowTitle(), hint)
            assert hint.width() <= MAX_DOCK_WIDTH, (dock.windowTitle(), hint)
    window.resize(*SCREEN)
    _settle()
    assert window.minimumSizeHint().height() <= SCREEN[1]
    assert window.frameGeometry().height() <= SCREEN[1]
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= SCREEN[0] // 3, canvas.width()


def test_closed_docks_are_not_tab_partners(make_napari_viewer):
    """A dock the user closed is not where the next one goes."""
    viewer = make_napari_viewer(show=True)
    names = widget_names()
    first, _ = viewer.window.add_plugin_dock_widget(PLUGIN, names[0])
    _settle()
    first.hide()
    second, _ = viewer.window.add_plugin_dock_widget(PLUGIN, names[1])
    _settle()
    assert not viewer.window._qt_window.tabifiedDockWidgets(second)
    assert isinstance(second, QDockWidget)


def test_train_options_fold_away_and_open(make_napari_viewer):
    """Rarely changed training options are folded but one click away, still labelled."""
    from qtpy.QtWidgets import QLabel

    from napari_temseg.widgets.train import TrainWidget

    viewer = make_napari_viewer(show=True)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    _settle()
    assert not w._options.isExpanded() and w._lr.native.visibleRegion().isEmpty()
    folded = w.native.minimumSizeHint().height()
    w._options.toggleButton().click()
    _settle(30)
    assert w._options.isExpanded() and not w._lr.native.visibleRegion().isEmpty()
    labels = w._options.findChildren(QLabel)
    shown = {lab.text() for lab in labels if not lab.visibleRegion().isEmpty()}
    assert {"Start from", "Learning rate", "Patch size", "Device"} <= shown
    assert w.native.minimumSizeHint().height() > folded
