"""Keep the plugin's docks on a 1000-pixel-high screen: collapsible sections and tabbed docks.

Two things made napari's window outgrow a laptop screen: the Train dock needed about 1060 px
(its minimum height becomes the window's), and docks opened one by one from the Plugins menu
were stacked in one column, each squeezing the others, instead of sharing it as tabs.
:func:`section` folds rarely changed controls away (expanded with one click);
:func:`tabify_when_docked` puts a dock of this plugin behind the ones already open, and
keeps combo boxes from sizing the dock to their longest entry (a model's description made
the Pretrain dock 820 px wide, leaving the image a sliver).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from magicgui.widgets.bases import Widget
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow
from superqt import QCollapsible

DOCK_PROPERTY = "napari_temseg_dock"  # marks this plugin's dock contents among all docks


def section(title: str, widgets: list[Widget], expanded: bool = False) -> QCollapsible:
    """A collapsible group of magicgui widgets, labelled as the dock's other rows are.

    The group's magicgui Container is kept on the returned widget (``.container``) so it
    lives as long as the section does.
    """
    inner = Container(widgets=widgets, labels=True)
    inner.margins = (0, 0, 0, 0)
    box = QCollapsible(title)
    box.setDuration(0)  # no animation: it made test screenshots and sizes depend on timing
    box.addWidget(inner.native)
    if expanded:
        box.expand(animate=False)
    else:
        box.collapse(animate=False)
    box.container = inner  # type: ignore[attr-defined]
    return box


def _tabify(dock: Any) -> None:
    """Put ``dock`` behind another of this plugin's docks in the same area, if any is open."""
    main = dock.parent() if isinstance(dock, QDockWidget) else None
    if not isinstance(main, QMainWindow) or main.tabifiedDockWidgets(dock):
        return
    area = main.dockWidgetArea(dock)
    others = [
        d
        for d in main.findChildren(QDockWidget)
        if d is not dock
        and not d.isFloating()
        and not d.isHidden()  # closed docks are hidden; a window not shown yet is not
        and main.dockWidgetArea(d) == area
        and d.widget() is not None
        and d.widget().property(DOCK_PROPERTY)
    ]
    if others:
        main.tabifyDockWidget(others[-1], dock)
        dock.show()
        dock.raise_()


def narrow_combos(widget: Container) -> None:
    """Let every combo box of ``widget`` be narrower than its longest entry (it elides)."""
    for combo in widget.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(16)


def tabify_when_docked(widget: Container) -> None:
    """Tab ``widget``'s dock with this plugin's open docks as soon as napari docks it.

    napari's Plugins menu adds docks without tabbing them; napari sets the dock as the
    widget's parent before adding it to the window, so the tabbing waits one event-loop turn.
    Its combo boxes are narrowed then too, when all of them exist.
    """
    widget.native.setProperty(DOCK_PROPERTY, True)

    def docked(parent: Any = None) -> None:
        if not isinstance(parent, QDockWidget):  # undocked, or the viewer is closing
            return
        narrow_combos(widget)
        timer = QTimer(parent)  # owned by the dock: gone, and silent, if the dock is deleted
        timer.setSingleShot(True)
        timer.timeout.connect(lambda: _tabify(parent))
        timer.timeout.connect(timer.deleteLater)
        timer.start(0)

    widget.native_parent_changed.connect(docked)
