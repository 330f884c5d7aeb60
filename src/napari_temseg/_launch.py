"""Open napari with every napari-temseg widget docked and the STEM sample loaded.

This is what ``scripts/run.sh`` starts on a machine with a display; the screenshot
script builds the same window under Xvfb.
"""

from __future__ import annotations

import napari

PLUGIN = "napari-temseg"


def widget_names() -> list[str]:
    """Display names of the plugin's dock widgets, in manifest order."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return [w.display_name for w in manifest.contributions.widgets or []]


def build_viewer(sample: str = "stem_nanoparticles", show: bool = True) -> napari.Viewer:
    viewer = napari.Viewer(title="napari-temseg", show=show)
    viewer.open_sample(PLUGIN, sample)
    first = None
    for name in widget_names():
        dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=first is not None)
        first = first or dock
    if first is not None:
        first.show()
        first.raise_()
    noisy = [layer for layer in viewer.layers if layer.name.endswith("noisy")]
    if noisy:
        viewer.layers.selection.active = noisy[0]
    return viewer


def main() -> None:
    build_viewer()
    napari.run()


if __name__ == "__main__":
    main()
