"""Export dock widget: save Labels layers as calibrated mask files other tools read.

Thin by design: it collects the chosen layers, their scale (nm) and class names and
hands them to ``napari_temseg.io.export.export_labels``, which writes the semantic
and/or instance masks (one file per frame if asked) and never overwrites an existing
file (it adds a numeric suffix, which the status line reports). No modal dialogs, so
it can be driven from tests and scripts.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    Select,
    TextEdit,
)
from napari.layers import Labels
from napari.utils.notifications import show_error

from napari_temseg.io.calibration import Calibration
from napari_temseg.io.export import ExportResult, export_labels, safe_stem
from napari_temseg.io.napari_hooks import class_info, layer_axis_names
from napari_temseg.io.sidecar import instance_classes
from napari_temseg.widgets._layout import tabify_when_docked

FORMAT_CHOICES = (("TIFF", "tiff"), ("PNG", "png"), ("NPY", "npy"))


def _default_folder(viewer) -> Path:
    """The folder of the first layer opened from a file, else the working directory."""
    for layer in viewer.layers:
        path = layer.metadata.get("path") or getattr(layer.source, "path", None)
        if path:
            return Path(path).parent
    return Path.cwd()


class ExportWidget(Container):
    """Pick Labels layers, a format and a folder; write semantic/instance masks."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        tabify_when_docked(self)  # a tab beside this plugin's other docks
        self._viewer = napari_viewer
        self._layers = Select(label="Labels layers", choices=self._label_names)
        self._format = ComboBox(label="Format", choices=FORMAT_CHOICES, value="tiff")
        self._folder = FileEdit(label="Folder", mode="d", value=_default_folder(napari_viewer))
        self._semantic = CheckBox(text="semantic mask (class per pixel)", value=True)
        self._instance = CheckBox(text="instance mask (connected components per class)")
        self._per_frame = CheckBox(text="one file per frame of a stack")
        self._export = PushButton(text="Export")
        self._status = Label(label="", value="")
        self._files = TextEdit(label="Written", value="")
        self._files.read_only = True
        self.extend(
            [
                self._layers,
                self._format,
                self._folder,
                self._semantic,
                self._instance,
                self._per_frame,
                self._export,
                self._status,
                self._files,
            ]
        )
        self._export.changed.connect(self.export)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh)
        self.native.destroyed.connect(self._disconnect)
        self.last_result: ExportResult | None = None

    # ------------------------------------------------------------------ choices

    def _label_names(self, _widget=None) -> list[str]:
        return [layer.name for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _refresh(self, _event=None) -> None:
        self._layers.reset_choices()

    def _disconnect(self, *_args) -> None:
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            try:
                event.disconnect(self._refresh)
            except (TypeError, ValueError, RuntimeError):
                pass

    # ------------------------------------------------------------------ action

    def export(self) -> ExportResult | None:
        """Write the chosen layers; report in the status line, never raise into napari."""
        names = list(self._layers.value or [])
        if not names:
            self._status.value = "choose at least one Labels layer"
            return None
        if not (self._semantic.value or self._instance.value):
            self._status.value = "tick semantic and/or instance mask"
            return None
        folder = Path(self._folder.value)
        total = ExportResult()
        try:
            for name in names:
                layer = self._viewer.layers[name]
                data = layer.data[0] if layer.multiscale else layer.data
                meta = {
                    "metadata": layer.metadata,
                    "features": layer.features,
                    "colormap": layer.colormap,
                    "axis_labels": layer.axis_labels,
                }
                class_names, class_colors = class_info(data, meta)
                result = export_labels(
                    data,
                    folder,
                    safe_stem(name),
                    self._format.value,
                    scale=Calibration.from_layer(layer).scale_nm(),
                    class_names=class_names,
                    class_colors=class_colors,
                    semantic=self._semantic.value,
                    instance=self._instance.value,
                    per_frame=self._per_frame.value,
                    axes=layer_axis_names(meta, data.ndim),
                    source=name,
                    instance_class=instance_classes(layer.metadata),
                )
                total.masks += result.masks
                total.written += result.written
                total.renamed += result.renamed
        except (ValueError, OSError) as exc:
            self._status.value = f"failed: {exc}"
            show_error(f"Export failed: {exc}")
            self._show(total)
            return None
        self._show(total)
        self.last_result = total
        return total

    def _show(self, result: ExportResult) -> None:
        self._files.value = "\n".join(result.written)
        if not result.masks:
            return
        folder = Path(result.masks[0]).parent
        text = f"wrote {len(result.masks)} mask file(s) (+ JSON sidecars) to {folder}"
        if result.renamed:
            old, new = result.renamed[0]
            text += (
                f"; {len(result.renamed)} renamed so no existing file was overwritten "
                f"(e.g. {old} -> {new})"
            )
        self._status.value = text
