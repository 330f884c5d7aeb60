"""Train dock widget: paint strokes, press Train, watch a denoiser become a segmenter.

The ilastik loop with deep features. Thin by design: it reads layers, builds a
``engine.finetune.Finetuner`` (input errors surface at once, as notifications) and runs it
in a worker thread (``widgets._tasks.Runner``); the worker relays every training event and, each time
the kept model changes (a better one by the held-out strokes; in the second half, each
validation's weight average), at most every few seconds, a prediction of the displayed
frame, which the GUI thread writes to "<image> prediction". Stop keeps the model so far;
pressing Train again continues from it. Apply writes "<image> segmentation"
layers carrying ``class_names``/``class_colors`` in their metadata, as the exporter expects,
and "<image> uncertainty"; frames that look unlike the painted ones or come out degenerate
are named under Apply and in a notification (``engine/checks.py`` decides, the dock reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QTabWidget

from napari_temseg import defaults
from napari_temseg.engine.events import PreviewWindow, SegmentPreview, drain, format_duration
from napari_temseg.engine.prior import describe_balance
from napari_temseg.io.calibration import Calibration
from napari_temseg.models import DEFAULT_DENOISER
from napari_temseg.models.user import user_models_changed
from napari_temseg.widgets._curves import LossCurves
from napari_temseg.widgets._layout import section, tabify_when_docked
from napari_temseg.widgets._parts import (
    CHECKPOINT_CHOICE,
    NO_FRAME_SHOWN,
    camera,
    device_choices,
    frame_index,
    model_choices,
)
from napari_temseg.widgets._tasks import Runner

SCRATCH = "none"
APPLY_SCOPES = ("current frame", "whole stack", "all open images")
PREVIEW_EVERY_S = 3.0
PREVIEW_MAX_SIDE = 1024  # the live preview covers at most this much of the view


def init_choices() -> list[tuple[str, str]]:
    """Denoisers to start from (bundled, then this session's), scratch, or a file."""
    found = model_choices("denoise")
    return [*found[:-1], ("from scratch (no pretraining)", SCRATCH), found[-1]]


def parse_class_names(text: str) -> list[str]:
    return [n.strip() for n in str(text).split(",") if n.strip()]


def _preview_corner(viewer: Any, layer: Any) -> tuple[int, int]:
    """Top-left (y, x) of the preview window: centred on the view, inside the frame."""
    h, w = layer.data.shape[-2:]
    side = PREVIEW_MAX_SIDE
    if h <= side and w <= side:
        return 0, 0
    cy, cx = (np.asarray(camera(viewer).center[-2:]) - layer.translate[-2:]) / layer.scale[-2:]
    y0 = int(np.clip(round(cy) - side // 2, 0, max(0, h - side)))
    x0 = int(np.clip(round(cx) - side // 2, 0, max(0, w - side)))
    return y0, x0


def train_job(tuner: Any, steps: int, preview: np.ndarray | None, *, progress, cancel) -> Any:
    """Worker-thread body: run the fine-tuner, relaying its events (previews included:
    the engine segments ``preview`` with each new best, at most every PREVIEW_EVERY_S)."""
    gen = tuner.run(steps, cancel=cancel, preview=preview, preview_every_s=PREVIEW_EVERY_S)
    return drain(gen, lambda ev: progress({"event": ev}))


def apply_job(jobs: list[dict], model: tuple, device: str, tile: int, *, progress, cancel) -> list:
    """Worker-thread body: segment and check every job's data; progress counts jobs' tiles."""
    from napari_temseg.engine.segment import segment_checked

    out = []
    for n, job in enumerate(jobs):

        def report(done: int, total: int, n: int = n) -> None:
            progress(n, len(jobs), done, total)

        rest = {k: v for k, v in job.items() if k != "data"}
        try:
            labels, unsure, warnings = segment_checked(
                job["data"],
                model,
                device=device,
                tile=tile,
                overlap=tile // 8,
                progress=report,
                cancel=cancel,
                pixel_size_nm=job["pixel_size"],
            )
        except ValueError as exc:  # this image's input (all NaN, ...): the others go on
            if len(jobs) == 1:
                raise
            out.append({**rest, "error": str(exc)})
            continue
        out.append({**rest, "labels": labels, "uncertainty": unsure, "warnings": warnings})
    return out


def _same_place(image: Image, labels: Labels) -> bool:
    """Whether strokes lie on the image's pixels as drawn: the same scale and translation
    of the axes they share (strokes pair with pixels by index, not by where they show)."""
    n = min(image.ndim, labels.ndim)
    scale = np.asarray(image.scale[-n:], float)
    shift = (np.asarray(labels.translate[-n:]) - np.asarray(image.translate[-n:])) / scale
    return bool(np.allclose(labels.scale[-n:], scale, rtol=1e-6)) and bool(
        np.abs(shift).max() < 1e-3  # a thousandth of a pixel
    )


class TrainWidget(Container):
    """Fine-tune a segmenter from strokes painted in a Labels layer, live, in the background."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._image = create_widget(annotation=Image, label="Image")
        # not ``self._labels``: that is magicgui's show-labels flag, which an empty
        # (falsy) ComboBox would switch off, hiding every field label of the dock
        self._strokes = create_widget(annotation=Labels, label="Strokes")
        self._add_strokes = PushButton(text="Add strokes layer")
        self._all_pairs = CheckBox(text="also use other strokes layers", value=True)
        self._classes = LineEdit(label="Classes", value="support, particle")
        self._init = ComboBox(label="Start from", choices=lambda _w: init_choices())
        if DEFAULT_DENOISER in [v for _, v in init_choices()]:
            self._init.value = DEFAULT_DENOISER  # not the alphabetically first (hrtem)
        self._init_file = FileEdit(label="Checkpoint", mode="r", filter="*.safetensors *.pt")
        self._init_file.visible = False
        self._continue = CheckBox(text="continue from the current segmenter", value=True)
        self._invert = CheckBox(text="contrast may invert between frames", value=False)
        self._invert.tooltip = (
            "HRTEM: defocus or thickness can turn particles from darker to brighter than the "
            "support. Also trains on inverted copies of the strokes' patches: better on frames "
            "of the other polarity, worse on frames like the painted ones"
        )
        self._steps = SpinBox(label="Steps", min=1, max=100_000, value=defaults.FINETUNE_STEPS)
        self._seconds = FloatSpinBox(
            label="or stop after", min=0, max=86_400, step=10, value=defaults.FINETUNE_SECONDS
        )
        self._seconds.native.setDecimals(0)
        self._seconds.native.setSuffix(" s")
        self._seconds.native.setSpecialValueText("no time limit")  # shown at 0
        self._seconds.tooltip = "time budget: training ends after this long or after Steps"
        self._lr = FloatSpinBox(
            label="Learning rate", min=1e-5, max=0.1, step=1e-4, value=defaults.FINETUNE_LR
        )
        self._patch = SpinBox(
            label="Patch size", min=32, max=512, step=16, value=defaults.FINETUNE_PATCH
        )
        self._device = ComboBox(label="Device", choices=device_choices())
        self._train = PushButton(text="Train")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self._status = Label(label="", value="paint a few strokes of every class")
        self._scope = RadioButtons(label="Apply to", choices=APPLY_SCOPES, value=APPLY_SCOPES[1])
        self._tta = CheckBox(text="average 8 orientations (8x slower)", value=False)
        self._tta.tooltip = (
            "test-time augmentation: each tile is segmented turned and mirrored eight ways and "
            "the probabilities averaged; fewer specks on frames that were not painted"
        )
        self._apply = PushButton(text="Apply", enabled=False)
        self._checks = Label(label="", value="")  # what Apply found unsure (engine/checks.py)
        self._save_path = FileEdit(label="Save as", mode="w", filter="*.safetensors *.zip")
        self._overwrite = CheckBox(text="overwrite", value=False)
        self._save = PushButton(text="Save segmenter", enabled=False)
        self._load_path = FileEdit(label="Load", mode="r", filter="*.safetensors *.pt *.zip")
        self._load = PushButton(text="Load segmenter")
        self.extend(
            [
                self._image,
                self._strokes,
                self._add_strokes,
                self._all_pairs,
                self._classes,
                self._steps,
                self._seconds,
                self._train,
                self._stop,
                self._progress,
                self._status,
                self._scope,
                self._tta,
                self._apply,
                self._checks,
            ]
        )
        # the defaults suit a first run: what is rarely changed folds away, so the dock
        # fits a 1000 px screen (widgets/_layout.py)
        self._options = section(
            "Training options",
            [
                self._init,
                self._init_file,
                self._continue,
                self._invert,
                self._lr,
                self._patch,
                self._device,
            ],
        )
        self._files = section(
            "Save / load segmenter",
            [self._save_path, self._overwrite, self._save, self._load_path, self._load],
        )
        self._loss_plot = LossCurves(ylabel="loss")
        self._dice_plot = LossCurves(ylabel="val Dice", logy=False)
        layout = self.native.layout()
        layout.insertWidget(self.index(self._train), self._options)
        layout.addWidget(self._files)
        self._curves = QTabWidget()  # one plot at a time: two stacked outgrew a 1000 px screen
        for plot, title in ((self._loss_plot, "loss"), (self._dice_plot, "validation Dice")):
            plot.setMinimumHeight(130)
            self._curves.addTab(plot, title)
        self._curves.setCurrentWidget(self._dice_plot)  # what tells whether it learns
        layout.addWidget(self._curves)
        for label in (self._status, self._checks):
            label.native.setWordWrap(True)  # long lines must not widen the dock
        tabify_when_docked(self)

        self.segmenter: tuple[Any, dict] | None = None  # (model, meta), the current best
        self._job: dict[str, Any] = {}
        self._task = Runner(self.native, "Segmentation training")
        self._task.progress.connect(self._on_train_progress)
        self._task.done.connect(self._on_train_done)
        self._task.failed.connect(self._on_failed)
        self._task.finished.connect(self._on_train_finished)
        self._apply_task = Runner(self.native, "Segmenting")
        self._apply_layers: set[int] = set()  # ids of the layers the running Apply segments
        self._apply_task.progress.connect(self._on_apply_progress)
        self._apply_task.done.connect(self._on_apply_done)
        self._apply_task.failed.connect(self._on_failed)
        self._apply_task.finished.connect(self._on_apply_finished)

        self._add_strokes.changed.connect(self.add_strokes_layer)
        self._train.changed.connect(self.train)
        self._stop.changed.connect(self.stop)
        self._apply.changed.connect(self.apply)
        self._save.changed.connect(self.save)
        self._load.changed.connect(self.load)
        self._init.changed.connect(
            lambda v: setattr(self._init_file, "visible", v == CHECKPOINT_CHOICE)
        )
        user_models_changed.connect(self._refresh_models)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._on_destroyed)

    # ------------------------------------------------------------------ helpers

    def _on_destroyed(self, *_: Any) -> None:
        try:
            user_models_changed.disconnect(self._refresh_models)
        except Exception:
            pass

    def _refresh_models(self) -> None:
        current = self._init.value
        self._init.choices = init_choices()
        if current in [v for _, v in init_choices()]:
            self._init.value = current

    def _class_names(self) -> list[str] | None:
        names = parse_class_names(self._classes.value)
        if len(names) < 2 or len(set(names)) != len(names):
            show_warning("Name at least two distinct classes, separated by commas.")
            return None
        return names

    def _colors(self, names: list[str]) -> list[str]:
        from napari_temseg.engine.finetune import DEFAULT_COLORS

        old = list((self.segmenter or (None, {}))[1].get("class_colors") or [])
        return (old + list(DEFAULT_COLORS))[: len(names)] if len(names) <= 8 else old

    def _style_labels(self, layer: Labels, names: list[str], colors: list[str]) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        layer.metadata = {**layer.metadata, "class_names": names, "class_colors": colors}
        mapping: dict[Any, Any] = {None: "transparent", 0: "transparent"}
        mapping.update({i + 1: c for i, c in enumerate(colors)})
        layer.colormap = DirectLabelColormap(color_dict=mapping)

    def _put_labels(
        self,
        name: str,
        like: Image,
        data: np.ndarray,
        frame: tuple | None,
        names: list[str],
        colors: list[str],
        corner: tuple[int, int] = (0, 0),
    ) -> Labels:
        """Write ``data`` into Labels layer ``name`` (image-shaped for a frame or corner)."""
        layer = self._put(name, like, data, frame, corner, Labels)
        self._style_labels(layer, names, colors)
        layer.refresh()
        return layer

    def _put_uncertainty(
        self, like: Image, data: np.ndarray, frame: tuple | None, corner: tuple[int, int] = (0, 0)
    ) -> Image:
        """Write percent uncertainty into "<image> uncertainty" (0 sure, 100 a tie)."""
        layer = self._put(f"{like.name} uncertainty", like, data, frame, corner, Image)
        layer.refresh()
        return layer

    def _put(
        self,
        name: str,
        like: Image,
        data: np.ndarray,
        frame: tuple | None,
        corner: tuple[int, int],
        kind: type,
    ) -> Any:
        """Layer ``name`` of ``kind`` holding ``data`` (made or replaced when it must be)."""
        whole = frame is None and corner == (0, 0)
        shape = data.shape if whole else like.data.shape
        ndim = len(shape)
        layer = self._viewer.layers[name] if name in self._viewer.layers else None
        if not isinstance(layer, kind) or layer.data.shape != tuple(shape):
            active = self._viewer.layers.selection.active  # painting goes on where it was
            if layer is not None:
                self._viewer.layers.remove(layer)
            common = {
                "name": name,
                "scale": tuple(like.scale[-ndim:]),
                "translate": tuple(like.translate[-ndim:]),
                "units": tuple(like.units[-ndim:]),
            }
            if kind is Labels:
                layer = self._viewer.add_labels(np.zeros(shape, np.uint8), **common)
            else:  # 0 sure .. 100 a tie; bright where the segmenter hesitates
                layer = self._viewer.add_image(
                    np.zeros(shape, np.uint8),
                    colormap="inferno",
                    contrast_limits=(0, 100),
                    blending="additive",
                    opacity=0.6,
                    metadata={
                        "what": "segmentation uncertainty, % (1 - probability margin)",
                        "uncertainty_of": like.name,  # not an image to segment
                    },
                    **common,
                )
            if active is not None and active in self._viewer.layers:
                self._viewer.layers.selection.active = active
        if whole:
            layer.data[...] = data
        else:
            y0, x0 = corner
            region = (
                *(frame or ()),
                slice(y0, y0 + data.shape[-2]),
                slice(x0, x0 + data.shape[-1]),
            )
            layer.data[region] = data
        return layer

    def _pairs(self, image: Image, labels: Labels) -> list[tuple[Image, Labels]]:
        pairs = [(image, labels)]
        if self._all_pairs.value:
            for layer in self._viewer.layers:
                target = layer.metadata.get("strokes_for") if isinstance(layer, Labels) else None
                if layer is labels or target not in self._viewer.layers:
                    continue
                img = self._viewer.layers[target]
                if isinstance(img, Image) and img.data.shape == layer.data.shape:
                    if np.asarray(layer.data).any() and _same_place(img, layer):
                        pairs.append((img, layer))
        return pairs

    # ------------------------------------------------------------------ actions

    def add_strokes_layer(self) -> Labels | None:
        image = self._image.value
        if image is None:
            show_warning("Open or select an image layer first.")
            return None
        names = self._class_names() or ["support", "particle"]
        shape = image.data[0].shape if image.multiscale else image.data.shape
        ndim = len(shape)
        layer = self._viewer.add_labels(
            np.zeros(shape, np.uint8),
            name=f"{image.name} strokes",
            scale=tuple(image.scale[-ndim:]),
            translate=tuple(image.translate[-ndim:]),
            units=tuple(image.units[-ndim:]),
            metadata={"strokes_for": image.name},
        )
        self._style_labels(layer, names, self._colors(names))
        layer.brush_size = 5
        layer.selected_label = 1
        layer.mode = "paint"
        self._strokes.value = layer
        return layer

    def train(self) -> None:
        from napari_temseg.engine.finetune import FinetuneConfig, Finetuner

        if self._task.running:
            show_info("Training is already running; press Stop to end it.")
            return
        image, labels = self._image.value, self._strokes.value
        if image is None or labels is None:
            show_warning(
                "Choose an image layer and a Labels layer with strokes (Add strokes layer)."
            )
            return
        if image.rgb or image.multiscale:
            show_warning(f"'{image.name}' must be a single-resolution grayscale image.")
            return
        if not _same_place(image, labels):
            show_warning(
                f"'{labels.name}' lies over '{image.name}' at another scale or position: "
                "strokes are matched to the image's pixels by index, so they would teach "
                "other pixels than those painted. Make them with 'Add strokes layer'."
            )
            return
        names = self._class_names()
        if names is None:
            return
        init: Any = self._init.value
        if self.segmenter is not None and self._continue.value:
            init = self.segmenter
        elif init == CHECKPOINT_CHOICE:
            path = self._init_file.value
            if not path or not Path(path).is_file():
                show_warning("Choose a denoiser checkpoint file to start from.")
                return
            init = str(path)
        pairs = self._pairs(image, labels)
        cfg = FinetuneConfig(
            steps=int(self._steps.value),
            max_seconds=float(self._seconds.value),
            lr=float(self._lr.value),
            patch=int(self._patch.value),
            device=self._device.value,
            invert_contrast=defaults.FINETUNE_INVERT if self._invert.value else 0.0,
        )
        try:
            tuner = Finetuner(
                [i.data for i, _ in pairs],  # lazy stacks: only labelled frames are read
                [np.array(lab.data, copy=True) for _, lab in pairs],  # painting goes on
                names,
                init=init,
                config=cfg,
                pixel_sizes=[Calibration.from_layer(i).pixel_size_nm for i, _ in pairs],
                class_colors=self._colors(names),
            )
        except (ValueError, OSError) as exc:  # SegmentError, CheckpointError, DeviceError
            show_error(f"Cannot train: {exc}")
            self._status.value = f"cannot train: {exc}"
            return
        labels.metadata = {**labels.metadata, "class_names": names}
        window = PreviewWindow(*self._window_on_view(image))
        self._job = {
            "image": image,
            "layers": {id(i) for i, _ in pairs} | {id(lab) for _, lab in pairs},
            "start": tuner.steps_done,
            "steps": cfg.steps,
            "names": names,
            "colors": tuner.class_colors,
            "window": window,
        }
        if tuner.steps_done == 0:
            self._loss_plot.clear()
            self._dice_plot.clear()
        self._progress.value = 0
        self._status.value = (
            f"training on {len(tuner.source.frames)} frame(s) from {tuner.meta.get('source_model')}"
            f"{'' if tuner.head_is_new else ' (continuing)'}…"
        )
        if tuner.notes:
            show_warning("; ".join(tuner.notes))
            self._status.value += " " + "; ".join(tuner.notes)
        self._train.enabled = False
        self._stop.enabled = True
        self._viewer.dims.events.current_step.connect(self._follow_view)
        self._task.start(train_job, tuner, cfg.steps, window)

    def _window_on_view(self, image: Image) -> tuple[np.ndarray, tuple]:
        """The displayed window of ``image`` to preview on, and where it lies: (frame,
        top-left corner)."""
        frame = frame_index(self._viewer, image) if image.data.ndim > 2 else ()
        if frame is None:  # a plane across frames on view: preview the first frame
            frame = (0,) * (image.data.ndim - 2)
        corner = _preview_corner(self._viewer, image)
        view = image.data[frame] if frame else image.data
        side = PREVIEW_MAX_SIDE
        crop = np.asarray(view[corner[0] : corner[0] + side, corner[1] : corner[1] + side])
        return crop, (frame, corner)

    def _follow_view(self, _event: Any = None) -> None:
        """Another frame shown while training: the next previews are of it (they stayed on
        the frame shown when Train was pressed)."""
        job = self._job or {}
        image, window = job.get("image"), job.get("window")
        if not self._task.running or window is None or image not in self._viewer.layers:
            return
        if image.data.ndim > 2 and frame_index(self._viewer, image) != window.current[1][0]:
            window.current = self._window_on_view(image)

    def stop(self) -> None:
        if not self._task.running:  # nothing to stop: no false "stopping" left standing
            return
        self._task.cancel()
        self._status.value = "stopping; the model so far is kept…"

    def apply(self) -> None:
        from napari_temseg.engine.tta import with_tta

        if self.segmenter is None:
            show_warning("Train or load a segmenter first.")
            return
        if self._apply_task.running:
            show_info("Already applying the segmenter.")
            return
        image = self._image.value
        scope = self._scope.value
        layers = (
            [
                lay
                for lay in self._viewer.layers
                if isinstance(lay, Image) and not lay.rgb and "uncertainty_of" not in lay.metadata
            ]
            if scope == APPLY_SCOPES[2]
            else [image]
        )
        if not layers or layers[0] is None:
            show_warning("Choose an image layer to apply the segmenter to.")
            return
        jobs = []
        for layer in layers:
            data = layer.data[0] if layer.multiscale else layer.data
            frame = None
            if scope == APPLY_SCOPES[0] and data.ndim > 2:
                frame = frame_index(self._viewer, layer)
                if frame is None:
                    show_warning(NO_FRAME_SHOWN.format(layer.name))
                    return
                data = data[frame]
            jobs.append(
                {
                    "layer": layer,
                    "data": data,
                    "frame": frame,
                    "pixel_size": Calibration.from_layer(layer).pixel_size_nm,
                }
            )
        self._apply.enabled = False
        self._apply_layers = {id(job["layer"]) for job in jobs}
        self._status.value = f"segmenting {len(jobs)} image(s)…"
        model = with_tta(self.segmenter) if self._tta.value else self.segmenter
        self._apply_task.start(apply_job, jobs, model, self._device.value, 256)

    def save(self) -> Path | None:
        from napari_temseg.engine.finetune import save_segmenter
        from napari_temseg.models.user import register_user_model

        if self.segmenter is None:
            show_warning("Train or load a segmenter first.")
            return None
        path = self._save_path.value
        if not path or str(path) in ("", "."):
            show_warning("Choose a file name to save the segmenter to.")
            return None
        if Path(path).suffix.lower() == ".zip":  # a bioimage.io package (docs/exchange.md)
            return self._export_package(Path(path))
        try:
            saved = save_segmenter(path, *self.segmenter, overwrite=bool(self._overwrite.value))
        except FileExistsError as exc:
            show_warning(f"{exc}.")
            return None
        except (OSError, ValueError) as exc:
            show_error(f"Could not save the segmenter: {exc}")
            return None
        register_user_model(saved.stem, saved, "segmenter from your strokes")
        self._status.value = f"saved to {saved}"
        return saved

    def _export_package(self, path: Path) -> Path | None:
        """Save as a bioimage.io model package, its test image taken from the chosen image."""
        from napari_temseg.models.bioimageio import export_bioimageio

        if path.exists() and not self._overwrite.value:
            show_warning(f"{path} already exists; choose another name or allow overwrite.")
            return None
        layer = self._image.value
        sample = None
        if layer is not None and layer.ndim >= 2 and not getattr(layer, "rgb", False):
            sample = np.asarray(layer.data[tuple(self._viewer.dims.current_step[: layer.ndim - 2])])
        try:
            saved = export_bioimageio(self.segmenter, path, sample=sample)
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            show_error(f"Could not export the bioimage.io package: {exc}")
            return None
        self._status.value = f"exported bioimage.io package {saved}"
        return saved

    def load(self) -> None:
        from napari_temseg.engine.segment import load_segmenter

        path = self._load_path.value
        if not path or not Path(path).is_file():
            show_warning("Choose a segmenter file to load.")
            return
        try:
            if Path(path).suffix.lower() == ".zip":
                from napari_temseg.models.bioimageio import import_bioimageio

                model, meta = import_bioimageio(path)
                if meta.get("task") != "segment":
                    raise ValueError(f"{Path(path).name} holds a denoiser, not a segmenter")
            else:
                model, meta = load_segmenter(path)
        except (ValueError, OSError) as exc:
            show_error(f"Could not load the segmenter: {exc}")
            return
        self.segmenter = (model, meta)
        self._classes.value = ", ".join(meta.get("class_names") or [])
        self._apply.enabled = self._save.enabled = True
        self._status.value = f"loaded {Path(path).name}: {self._classes.value}"

    # ------------------------------------------------------------------ callbacks (GUI thread)

    def _on_layer_removed(self, event: Any) -> None:
        if self._task.running and id(event.value) in self._job.get("layers", ()):
            self._task.cancel()
            self._status.value = f"'{event.value.name}' was removed; training stopped"
        if self._apply_task.running and id(event.value) in self._apply_layers:
            self._apply_layers.discard(id(event.value))
            if not self._apply_layers:  # every image being segmented is gone: stop
                self._apply_task.cancel()
                self._status.value = f"'{event.value.name}' was removed; segmenting stopped"
            # otherwise the others go on: a removed one's result is not put anywhere

    def _on_train_progress(self, args: tuple) -> None:
        ev = args[0]["event"]
        job = self._job
        self._progress.value = int(100 * ev.fraction)
        if ev.kind == "preview":
            self._show_train_preview(ev.preview)
            return
        self._loss_plot.add_event(ev, "train loss", "val loss", every=5)
        if ev.kind == "step":
            left = format_duration(ev.eta_s)
            self._status.value = (
                f"step {ev.step}/{ev.steps} ({ev.phase}), loss {ev.loss:.3f}, "
                f"{ev.examples_per_s:.1f} patches/s" + (f", about {left} left" if left else "")
            )
        elif ev.kind == "val":
            if ev.phase == "head fitted":
                known = [d for d in ev.val_dice or [] if d is not None]
                self._status.value = (
                    "class head fitted to the strokes"
                    + (f" (held-out Dice {np.mean(known):.2f})" if known else "")
                    + "; training..."
                )
            for name, d in zip(job["names"], ev.val_dice or [], strict=False):
                if d is not None:
                    self._dice_plot.add(name, ev.step, d)

    def _show_train_preview(self, shown: SegmentPreview) -> None:
        """Put the engine's preview (a SegmentPreview) where its window was taken."""
        job = self._job
        image = job.get("image")
        if image is None or image not in self._viewer.layers:
            return
        frame, corner = shown.where
        self._put_labels(
            f"{image.name} prediction",
            image,
            shown.labels,
            frame or None,
            job["names"],
            job["colors"],
            corner,
        )
        self._put_uncertainty(image, shown.uncertainty, frame or None, corner)
        job["degenerate"] = shown.degenerate

    def _on_train_done(self, result: Any) -> None:
        self.segmenter = (result.model, result.meta)
        self._apply.enabled = self._save.enabled = True
        dice = ", ".join(
            f"{n} {d:.2f}"
            for n, d in zip(self._job["names"], result.best_val_dice, strict=False)
            if d is not None
        )
        why = (
            "stopped"
            if result.stopped
            else "time budget reached"
            if result.timed_out
            else "early stop"
            if result.early_stopped
            else "done"
        )
        self._status.value = (
            f"{why} at step {result.steps_done}; kept {result.kept} (val Dice {dice})"
        )
        balance = describe_balance(result.meta.get("class_balance"), self._job["names"])
        if balance:
            self._status.value += f"; {balance}"
        if self._job.get("degenerate"):  # the strokes' Dice must not hide it
            said = f"but on the displayed frame {self._job['degenerate']}"
            self._status.value += f"; {said}: paint strokes where it is wrong"
            show_warning(f"Trained, {said}. Paint a few strokes where it is wrong.")
        self._loss_plot.redraw()
        self._dice_plot.redraw()

    def _on_failed(self, exc: Exception) -> None:
        self._status.value = f"failed: {exc}"

    def _on_train_finished(self) -> None:
        self._viewer.dims.events.current_step.disconnect(self._follow_view)
        self._train.enabled = True
        self._stop.enabled = False
        self._progress.value = 100

    def _on_apply_progress(self, args: tuple) -> None:
        n, jobs, done, total = args
        self._progress.value = int(100 * (n + done / max(total, 1)) / max(jobs, 1))

    def _on_apply_done(self, results: list) -> None:
        names = self.segmenter[1].get("class_names") or []
        colors = self.segmenter[1].get("class_colors") or self._colors(names)
        failed = [f"'{r['layer'].name}': {r['error']}" for r in results if "error" in r]
        if failed:
            show_warning(f"Not segmented: {'; '.join(failed)}")
        results = [r for r in results if "error" not in r]
        for r in results:
            layer = r["layer"]
            if layer not in self._viewer.layers:
                continue
            self._put_labels(
                f"{layer.name} segmentation", layer, r["labels"], r["frame"], names, colors
            )
            self._put_uncertainty(layer, r["uncertainty"], r["frame"])
        self._status.value = f"segmented {len(results)} image(s)" + (
            f"; {len(failed)} not (see the message)" if failed else ""
        )
        self._report_checks(results)

    def _report_checks(self, results: list) -> None:
        """Say which frames look unlike the painted ones or came out degenerate; never silent."""
        from napari_temseg.engine.checks import describe_frame

        lines = []
        for r in results:
            for idx, warning in r["warnings"]:
                if r["frame"] is not None:  # one frame of a stack was segmented
                    idx = tuple(r["frame"])
                where = ", ".join(x for x in (r["layer"].name, describe_frame(idx)) if x)
                lines.append(f"{where}: {warning}")
        if not lines:
            self._checks.value = "checks: every frame looks like the painted ones"
            self._checks.tooltip = None
            return
        # a few lines at most in the dock (it must fit the screen); all of them in the tooltip
        where, why = lines[0].split(": ", 2)[:2]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        self._checks.value = f"unsure on {where}{more}: {why[:60]}; paint strokes there"
        self._checks.tooltip = "\n".join(lines)
        show_warning(
            f"Unsure on {len(lines)} frame(s), e.g. {lines[0]}"
            + ("" if len(lines) == 1 else " (all of them in the Train dock's tooltip)")
        )

    def _on_apply_finished(self) -> None:
        self._apply.enabled = self.segmenter is not None
        self._progress.value = 100
