"""Pretrain dock widget: teach a denoiser the user's own images, in a child process.

Thin by design: it collects the chosen layers (or a folder), hands them with a
``PretrainConfig`` to a child process (``widgets._tasks.Runner`` running
``pipeline.training.pretrain_job``; the GUI thread never computes), drawing loss curves and a before/after preview layer.
The finished model is registered for the session (the Denoise widget lists it at once)
and can be saved anywhere; an existing file is never overwritten.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning

from napari_temseg import defaults
from napari_temseg.display import display_limits
from napari_temseg.engine.events import TrainEvent
from napari_temseg.models.user import register_user_model, user_models_changed
from napari_temseg.widgets._curves import LossCurves
from napari_temseg.widgets._layout import tabify_when_docked
from napari_temseg.widgets._parts import CHECKPOINT_CHOICE, device_choices, save_model_copy
from napari_temseg.widgets._tasks import Runner

PREVIEW_LAYER = "pretrain preview (before | after)"
METHOD_CHOICES = [
    ("Poisson (encoder-decoder)", "poisson"),
    ("Pix2Pix (conditional GAN)", "pix2pix"),
]
#: how long Stop waits for the graceful end (best checkpoint written) before terminating
STOP_TIMEOUT_S = 20.0


def start_choices() -> list[tuple[str, str]]:
    from napari_temseg.models import list_models
    from napari_temseg.models.user import user_models

    found = [("automatic (bundled denoiser if installed)", "auto"), ("from scratch", "scratch")]
    found += [(f"{m.name}: {m.description}", m.name) for m in list_models("denoise")]
    found += [(f"{m.name} (yours)", str(m.path)) for m in user_models("denoise")]
    return [*found, (CHECKPOINT_CHOICE, CHECKPOINT_CHOICE)]


class PretrainWidget(Container):
    """Pretrain a denoiser on the selected image layers (or a folder of files)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        tabify_when_docked(self)  # a tab beside this plugin's other docks
        self._viewer = napari_viewer
        self._layers = Select(label="Images", choices=self._image_names, allow_multiple=True)
        self._folder = FileEdit(label="or folder", mode="d", value="")
        self._method = ComboBox(label="Method", choices=METHOD_CHOICES)
        self._steps = SpinBox(label="Steps", min=1, max=1_000_000, value=defaults.PRETRAIN_STEPS)
        self._patch = SpinBox(
            label="Patch size", min=16, max=1024, step=16, value=defaults.PRETRAIN_PATCH
        )
        self._batch = SpinBox(label="Batch", min=1, max=256, value=defaults.PRETRAIN_BATCH)
        self._device = ComboBox(label="Device", choices=device_choices())
        self._start_model = ComboBox(label="Start from", choices=lambda _w: start_choices())
        self._checkpoint = FileEdit(
            label="Checkpoint", mode="r", filter="*.safetensors *.pt", visible=False
        )
        self._start = PushButton(text="Start")
        self._stop = PushButton(text="Stop (keep best)", enabled=False)
        self._continue = PushButton(text="Continue", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self._status = Label(label="", value="")
        self._save_path = FileEdit(label="Save as", mode="w", filter="*.safetensors")
        self._save = PushButton(text="Save model…", enabled=False)
        self.extend(
            [
                self._layers,
                self._folder,
                self._method,
                self._steps,
                self._patch,
                self._batch,
                self._device,
                self._start_model,
                self._checkpoint,
                self._start,
                self._stop,
                self._continue,
                self._progress,
                self._status,
            ]
        )
        self.curves = LossCurves(ylabel="L1 loss (normalised)", min_redraw_s=2.0)
        self.native.layout().addWidget(self.curves)
        self.extend([self._save_path, self._save])

        # the session's models live here; made at the first Start, so a dock that only
        # opened leaves no folder behind
        self._workdir: Path | None = None
        self._runs = 0
        self.last_model: Path | None = None
        self.last_result = None
        #: further PretrainConfig fields (e.g. base/depth of a fresh U-Net, full_distortions)
        self.advanced: dict = {}
        self._task = Runner(self.native, "Pretraining", stop_timeout_s=STOP_TIMEOUT_S)
        self._task.progress.connect(self._on_progress)
        self._task.done.connect(self._on_done)
        self._task.failed.connect(self._on_failed)
        self._task.killed.connect(self._on_killed)
        self._task.finished.connect(lambda: self._set_running(False))

        self._start.changed.connect(self.start)
        self._stop.changed.connect(self.stop)
        self._continue.changed.connect(self.continue_)
        self._save.changed.connect(self.save)
        self._start_model.changed.connect(
            lambda v: setattr(self._checkpoint, "visible", v == CHECKPOINT_CHOICE)
        )
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        user_models_changed.connect(self._refresh_models)
        self.native.destroyed.connect(self._on_destroyed)

    # ------------------------------------------------------------------ choices

    def _image_names(self, _widget=None) -> list[str]:
        return [
            lay.name
            for lay in self._viewer.layers
            if isinstance(lay, Image) and lay.name != PREVIEW_LAYER
        ]

    def _refresh_layers(self, _event=None) -> None:
        self._layers.reset_choices()

    def _refresh_models(self) -> None:
        current = self._start_model.value
        self._start_model.choices = start_choices()
        if current in [v for _, v in start_choices()]:
            self._start_model.value = current

    @property
    def running(self) -> bool:
        return self._task.running

    # ------------------------------------------------------------------ actions

    def _collect(self) -> tuple[list[np.ndarray], list[str], list[str]] | None:
        """(arrays, names, folder paths) to train on, or None after telling the user why."""
        patch = int(self._patch.value)
        names = list(self._layers.value or [])
        folder = self._folder.value
        has_folder = bool(folder) and str(folder) not in ("", ".") and Path(folder).is_dir()
        if not names and not has_folder:
            show_warning("Select one or more image layers (or a folder) to pretrain on.")
            return None
        arrays = []
        for name in names:
            layer = self._viewer.layers[name]
            if layer.rgb:
                show_warning(
                    f"'{name}' is an RGB image; pretraining expects grayscale micrographs."
                )
                return None
            data = layer.data[0] if layer.multiscale else layer.data
            h, w = data.shape[-2:]
            if min(h, w) < patch:
                show_warning(
                    f"'{name}' ({h}x{w} px) is smaller than the patch size {patch}; "
                    "choose a smaller patch size."
                )
                return None
            arrays.append(np.asarray(data))
        return arrays, names, [str(folder)] if has_folder else []

    def _init_model(self) -> str | None:
        value = self._start_model.value
        if value != CHECKPOINT_CHOICE:
            return value
        path = self._checkpoint.value
        if not path or not Path(path).is_file():
            show_warning("Choose a checkpoint file to start from.")
            return None
        return str(path)

    def start(self, init: str | None = None) -> None:
        """Start a run (``init`` overrides the start-model choice; Continue passes its model)."""
        from napari_temseg.engine.pretrain import PretrainConfig
        from napari_temseg.pipeline.training import pretrain_job

        if self.running:
            show_info("Pretraining is already running; press Stop to end it.")
            return
        collected = self._collect()
        if collected is None:
            return
        arrays, names, paths = collected
        init = init if isinstance(init, str) else self._init_model()
        if init is None:
            return
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="temseg-pretrain-"))
        self._runs += 1
        output = self._workdir / f"pretrained-{self._runs}.safetensors"
        try:
            settings = {
                "method": self._method.value,
                "steps": int(self._steps.value),
                "patch": int(self._patch.value),
                "batch_size": int(self._batch.value),
                "init": init,
                "device": self._device.value,
                "val_every": max(1, min(100, int(self._steps.value) // 5)),
                **self.advanced,
                "output": str(output),
            }
            cfg = PretrainConfig(**settings)
        except (TypeError, ValueError) as exc:
            show_error(str(exc))
            return
        # a folder: the child reads the files (and the selected layers are not used)
        images = None if paths else arrays
        self._task.start_events(pretrain_job, images, paths, names, cfg, process=True)
        self.curves.clear()
        self._prepare_preview(arrays)
        self._progress.value = 0
        self._status.value = f"starting ({cfg.method}, {cfg.steps} steps)…"
        self._set_running(True)

    def continue_(self) -> None:
        """A new run from the last model: its best weights, its step count carried on."""
        if self.last_model is None or not self.last_model.is_file():
            show_warning("There is no model to continue yet; press Start first.")
            return
        self.start(init=str(self.last_model))

    def stop(self) -> None:
        """Graceful stop (the child saves its best model); terminated after a timeout."""
        if not self.running:
            return
        self._task.cancel()
        self._status.value = "stopping: saving the best model…"
        self._stop.enabled = False

    def _on_killed(self) -> None:
        """The child ignored Stop for STOP_TIMEOUT_S and was terminated."""
        show_warning("Training did not stop in time and was terminated.")
        if self._workdir is None:
            return
        partial = self._workdir / f"pretrained-{self._runs}.safetensors"
        if partial.is_file():  # written at its last validation
            self._register(partial)

    def save(self) -> None:
        saved = save_model_copy(self.last_model, self._save_path.value)
        if saved is not None:
            self._status.value = f"saved: {saved.name}"

    # ------------------------------------------------------------------ progress (GUI thread)

    def _on_progress(self, args: tuple) -> None:
        ev = args[0]
        if ev.kind == "preview":
            self._show_preview(ev.preview.before, ev.preview.after)
        else:
            self._on_event(ev)

    def _on_failed(self, exc: Exception) -> None:
        self._status.value = f"failed: {str(exc).splitlines()[0]}"

    def _on_event(self, ev: TrainEvent) -> None:
        self._progress.value = int(100 * ev.fraction)
        self.curves.add_event(ev, "training", "validation")
        if ev.kind == "step":
            text = f"step {ev.step}  loss {ev.loss:.4f}  {ev.examples_per_s:.1f} ex/s"
            if ev.d_loss is not None:
                text += f"  D {ev.d_loss:.3f}"
            self._status.value = text

    def _prepare_preview(self, arrays: list[np.ndarray]) -> None:
        """Add the preview layer now, at the click: adding a layer costs a GUI stall of
        100-150 ms on a small machine, updating its data later costs little."""
        if not arrays or PREVIEW_LAYER in self._viewer.layers:
            return
        size = min(int(self.advanced.get("preview_size", 128)), *arrays[0].shape[-2:])
        blank = np.zeros((size, 2 * size + 4), np.float32)
        self._viewer.add_image(blank, name=PREVIEW_LAYER, contrast_limits=(0.0, 1.0))

    def _show_preview(self, before: np.ndarray, after: np.ndarray) -> None:
        gap = np.full((before.shape[0], 4), np.nan, np.float32)
        both = np.concatenate([before, gap, after], axis=1)
        limits = display_limits(before)
        if PREVIEW_LAYER in self._viewer.layers:
            layer = self._viewer.layers[PREVIEW_LAYER]
            layer.data = both
            layer.contrast_limits = limits
        else:
            self._viewer.add_image(both, name=PREVIEW_LAYER, contrast_limits=limits)

    def _on_done(self, result) -> None:
        self.last_result = result
        if result.path is None:
            self._status.value = "stopped before the first validation: no model was saved"
            show_warning("Training stopped before its first validation; no model was saved.")
            return
        self._register(Path(result.path))
        self._progress.value = 100 if not result.stopped else self._progress.value
        self._status.value = result.message

    def _register(self, path: Path) -> None:
        name = path.stem
        register_user_model(name, path, f"pretrained in this session ({name})")
        self.last_model = path
        self._save.enabled = True
        show_info(f"'{name}' is ready: it is listed in the Denoise widget.")

    def _set_running(self, running: bool) -> None:
        self._start.enabled = not running
        self._stop.enabled = running
        self._continue.enabled = not running and self.last_model is not None

    def _on_destroyed(self, *_args) -> None:
        try:
            user_models_changed.disconnect(self._refresh_models)
        except (TypeError, ValueError, RuntimeError):
            pass
