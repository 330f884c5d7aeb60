"""Denoise dock widget: pick an image, a model and a device; run in the background.

Thin by design: it reads the layer, hands the array to ``engine.denoise`` in a worker
thread (``widgets._tasks.Runner``) and writes the result back as "<name> denoised" with the same
scale and translate. No numerics here beyond choosing display contrast.
"""

from __future__ import annotations

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
    create_widget,
)
from napari.layers import Image
from napari.utils.notifications import show_info, show_warning

from napari_temseg import defaults
from napari_temseg.display import display_limits
from napari_temseg.models import DEFAULT_DENOISER
from napari_temseg.models.user import user_models_changed
from napari_temseg.widgets._layout import tabify_when_docked
from napari_temseg.widgets._parts import (
    CHECKPOINT_CHOICE,
    NO_FRAME_SHOWN,
    device_choices,
    frame_index,
    model_choices,
    save_model_copy,
)
from napari_temseg.widgets._tasks import Runner

SCOPES = ("whole stack", "current frame")
BIN_NAMES = {1: "none"}
ORIENTATION_NAMES = {1: "1 (one pass)", 2: "2 (2x the time)", 8: "8 (8x the time)"}


class DenoiseWidget(Container):
    """Denoise or restore the selected image layer with a bundled or own model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        tabify_when_docked(self)  # a tab beside this plugin's other docks
        self._viewer = napari_viewer
        self._image = create_widget(annotation=Image, label="Image")
        # a callable: napari resets every choice list when layers change, and a fixed list
        # would drop the models registered since the dock opened
        self._model = ComboBox(label="Model", choices=lambda _w: model_choices())
        if DEFAULT_DENOISER in [v for _, v in model_choices()]:
            self._model.value = DEFAULT_DENOISER  # not the alphabetically first (hrtem)
        self._checkpoint = FileEdit(
            label="Checkpoint", mode="r", filter="*.safetensors *.pt", visible=False
        )
        self._device = ComboBox(label="Device", choices=device_choices())
        self._tile = SpinBox(label="Tile size", min=64, max=4096, step=32, value=defaults.TILE)
        self._bin = ComboBox(
            label="Binning",
            choices=[(BIN_NAMES.get(k, f"{k}x{k}"), k) for k in defaults.BINS],
            value=1,
            tooltip="Denoise binned KxK, then interpolate back: for low-dose frames sampled "
            "finer than their detail (smooth, low-magnification fields). Keep 'none' for "
            "lattice-resolved images.",
        )
        self._adapt = SpinBox(
            label="Adapt (s)",
            min=0,
            max=3600,
            step=10,
            value=0,
            tooltip="0: off. Otherwise first fine-tune the model for this many seconds on "
            "simulated images with this image's own noise level and pixel size (and, for one "
            "pass, on this image taught by the model's own eight-orientation average), and "
            "fit a final smoothing; the adapted model is listed as yours for the other "
            "frames. For atom-column positions the oracle Gaussian still placed simulated "
            "columns closer (median).",
        )
        self._orientations = ComboBox(
            label="Orientations",
            choices=[(ORIENTATION_NAMES[n], n) for n in defaults.ORIENTATION_CHOICES],
            value=defaults.DENOISE_ORIENTATIONS,
            tooltip="Average the model over this many orientations of each tile (2: the tile "
            "and the tile turned by 90 degrees; 8: every rotation and mirroring) and smooth "
            "the detail they disagree on: less of the grain a network invents at low dose. "
            "On a real low-dose pair two orientations added 53 % and 71 % of the error one "
            "pass added (the two directions).",
        )
        # shown once a model was adapted: keep it beyond this session
        self._save_path = FileEdit(label="Save as", mode="w", filter="*.safetensors", visible=False)
        self._save = PushButton(text="Save adapted model…", visible=False)
        self._scope = RadioButtons(label="Apply to", choices=SCOPES, value=SCOPES[0])
        self._run = PushButton(text="Run")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self._status = Label(label="", value="")
        self.extend(
            [
                self._image,
                self._model,
                self._checkpoint,
                self._device,
                self._tile,
                self._bin,
                self._adapt,
                self._orientations,
                self._scope,
                self._run,
                self._cancel,
                self._progress,
                self._status,
                self._save_path,
                self._save,
            ]
        )
        self._task = Runner(self.native, "Denoising")
        self._task.progress.connect(self._on_progress)
        self._task.done.connect(self._on_done)
        self._task.failed.connect(self._on_failed)
        self._task.cancelled.connect(self._on_cancelled)
        self._task.finished.connect(self._on_finished)
        self._model.changed.connect(self._on_model_changed)
        self._on_model_changed(self._model.value)
        user_models_changed.connect(self._refresh_models)
        self.native.destroyed.connect(lambda: user_models_changed.disconnect(self._refresh_models))
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self._task.cancel)
        self._save.changed.connect(self.save)
        self._source = None  # (layer, frame index or None) of the running job
        # the running job's binning and orientations (the controls may change meanwhile)
        self._settings: dict = {"bin": 1, "orientations": 1}
        self._workdir = None  # where adapted models are saved, made when first needed
        self.last_adapted = None  # the checkpoint of the last adapted model

    # ------------------------------------------------------------------ actions

    def _refresh_models(self) -> None:
        current = self._model.value
        self._model.choices = model_choices()
        values = [v for _, v in model_choices()]
        if current in values:
            self._model.value = current

    def _on_model_changed(self, value: str) -> None:
        self._checkpoint.visible = value == CHECKPOINT_CHOICE

    def _selected_model(self) -> str | None:
        if self._model.value != CHECKPOINT_CHOICE:
            return self._model.value
        path = self._checkpoint.value
        if not path or not path.is_file():
            show_warning("Choose a checkpoint file for the model.")
            return None
        return str(path)

    def run(self) -> None:
        from napari_temseg.engine import denoise

        if self._task.running:
            show_info("Denoising is already running; press Cancel to stop it.")
            return
        self._status.value = ""  # a refusal below is its own message; no stale "done"
        layer = self._image.value
        if layer is None:
            show_warning("Open or select an image layer to denoise.")
            return
        if layer.rgb:
            show_warning(
                f"'{layer.name}' is an RGB image; denoising expects a grayscale micrograph."
            )
            return
        if layer.metadata.get("kind") == "diffraction":  # as `temseg denoise` refuses it
            show_warning(
                f"'{layer.name}' is a diffraction pattern; the denoisers are made for "
                "real-space micrographs."
            )
            return
        model = self._selected_model()
        if model is None:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        frame = None
        if data.ndim > 2 and self._scope.value == "current frame":
            frame = frame_index(self._viewer, layer)
            if frame is None:
                show_warning(NO_FRAME_SHOWN.format(layer.name))
                return
            data = data[frame]
        self._source = (layer, frame)
        # what the job runs with, read again when it ends (the controls may change meanwhile)
        self._settings = {
            "model": model,  # a name, or the checkpoint file's path
            "bin": int(self._bin.value),
            "orientations": int(self._orientations.value),
        }
        self._progress.value = 0
        self._status.value = f"denoising '{layer.name}' on {self._device.value}…"
        self._run.enabled = False
        self._cancel.enabled = True
        tile = int(self._tile.value)
        if self._adapt.value > 0:
            self._start_adapted(layer, data, model, tile)
            return
        self._task.start(
            denoise,
            data,
            model,
            device=self._device.value,
            tile=tile,
            overlap=tile // 8,
            bin=self._settings["bin"],
            tta=self._settings["orientations"],
        )

    def _start_adapted(self, layer: Image, data, model: str, tile: int) -> None:
        from napari_temseg.engine.adapt import AdaptConfig, adapt_then_denoise
        from napari_temseg.io.calibration import Calibration

        cfg = AdaptConfig.for_output(
            self._settings["orientations"],
            seconds=float(self._adapt.value),
            bin=self._settings["bin"],
            device=self._device.value,
        )
        self._status.value = f"adapting '{model}' to '{layer.name}'…"
        self._task.start(
            adapt_then_denoise,
            data,
            model,
            cfg,
            Calibration.from_layer(layer).pixel_size_nm,
            tile=tile,
            overlap=tile // 8,
            tta=self._settings["orientations"],
        )

    # ------------------------------------------------------------------ callbacks (GUI thread)

    def _on_progress(self, args: tuple) -> None:
        done, total = args[0], args[1]
        self._progress.value = int(100 * done / max(total, 1))
        if len(args) > 2:  # adapting: (seconds spent, budget, "adapting")
            self._status.value = f"adapting: {done:.0f} of {total:.0f} s"
        elif self._status.value.startswith("adapting"):
            self._status.value = "denoising with the adapted model…"

    def _on_done(self, result) -> None:
        adapted = None
        if isinstance(result, tuple):  # (denoised, AdaptResult)
            result, adapted = result
        layer, frame = self._source
        ndim = result.ndim
        name = f"{layer.name} denoised"
        if frame is not None:
            name += f" [frame {', '.join(map(str, frame))}]"
        from napari_temseg.engine.denoise import denoised_metadata

        meta = denoised_metadata(
            layer.metadata,
            self._settings["model"] if adapted is None else self._register_adapted(adapted),
            bin=self._settings["bin"],
            orientations=self._settings["orientations"],
            adapted=adapted.meta["adapted"] if adapted is not None else None,
        )
        if frame is not None:  # one frame of a stack: a 2D image
            meta = {**meta, "kind": "image"}
            if isinstance(meta.get("axes"), list):
                meta["axes"] = meta["axes"][-ndim:]
        added = self._viewer.add_image(
            result,
            name=name,
            scale=tuple(layer.scale[-ndim:]),
            translate=tuple(layer.translate[-ndim:]),
            units=tuple(layer.units[-ndim:]),
            axis_labels=tuple(layer.axis_labels[-ndim:]),
            colormap=layer.colormap.name,
            contrast_limits=display_limits(result),
            metadata=meta,
        )
        self._progress.value = 100
        self._status.value = f"done: '{added.name}'"  # napari may have renamed it
        if adapted is not None:
            self._status.value += f"; {adapted.message}"
            show_info(f"{adapted.message}. Saved as '{meta['denoised_with']}' (yours).")

    def _register_adapted(self, adapted) -> str:
        """Save the adapted model in this dock's temporary folder and list it as yours."""
        import tempfile
        from pathlib import Path

        from napari_temseg.models import save_or_rescue
        from napari_temseg.models.user import register_user_model, user_models

        if self._workdir is None:  # made at the first adaptation, not when the dock opens
            self._workdir = Path(tempfile.mkdtemp(prefix="temseg-adapt-"))
        taken = {m.name for m in user_models()}
        base = adapted.meta["name"]
        name = next(f"{base}-{k}" for k in range(1, 10**6) if f"{base}-{k}" not in taken)
        path = save_or_rescue(self._workdir / f"{name}.safetensors", adapted.model, adapted.meta)
        register_user_model(name, path, f"adapted in this session ({adapted.message})")
        self.last_adapted = path
        self._save_path.visible = self._save.visible = True
        return name

    def save(self) -> None:
        """Copy the last adapted model to the chosen file (never overwrites)."""
        saved = save_model_copy(self.last_adapted, self._save_path.value)
        self._status.value = f"saved: {saved.name}" if saved is not None else "not saved"

    def _on_failed(self, exc: Exception) -> None:
        self._status.value = f"failed: {exc}"

    def _on_cancelled(self) -> None:
        self._status.value = "cancelled; nothing was added"

    def _on_finished(self) -> None:
        self._run.enabled = True
        self._cancel.enabled = False
        self._source = None
