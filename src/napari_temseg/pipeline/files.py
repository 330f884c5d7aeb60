"""One file in, its result on disk: the unit of work of ``temseg denoise|segment`` batches.

A :class:`FileJob` says what to do with every file of a batch (which task, model, device,
tile); calling it on a path reads the file, runs the engine and writes the output under
``outdir``. It is a plain picklable value and loads its model at most once per process,
so the very same job runs in the ``temseg`` process or on the workers of a
dask.distributed cluster (``napari_temseg.pipeline.cluster``), each worker with its own copy of
the model on its own device.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_temseg import defaults
from napari_temseg.engine.binning import check_bin
from napari_temseg.engine.device import select_device
from napari_temseg.engine.segment import check_segmenter
from napari_temseg.engine.tta import orientation_count, with_tta
from napari_temseg.io.model import DataWarning
from napari_temseg.models.resolve import cached_model
from napari_temseg.pipeline.cluster import worker_device
from napari_temseg.pipeline.naming import output_path
from napari_temseg.pipeline.predict_files import denoise_file, segment_file

TASKS = ("denoise", "segment")
_LOCK = threading.Lock()


@dataclass(frozen=True)
class FileJob:
    """What to do with each file of a batch; ``job(path)`` does it and returns the outputs.

    ``model`` is a bundled model's name or a checkpoint path (None: the default denoiser);
    ``device`` is resolved where the job runs (``auto`` on a GPU worker picks its GPU).
    ``threads`` sets torch's CPU threads in the process that runs it (a cluster worker
    sharing a machine with others); ``large_frame_px`` overrides the size above which a
    2D frame is processed band by band (``engine.large``).
    """

    task: str
    model: str | None
    outdir: str
    device: str = defaults.DEVICE
    tile: int = defaults.TILE
    overlap: int = defaults.OVERLAP
    threads: int | None = None
    large_frame_px: int | None = None
    bin: int = 1  # denoise: binning before the network (engine.binning)
    tta: bool | int = False  # average 8 (True) or 2 orientations (engine.tta.DihedralMean)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        check_bin(self.bin)
        orientation_count(self.tta)  # a ValueError for a count there is none of
        if self.bin != 1 and self.task != "denoise":
            raise ValueError("binning is a denoising setting; segmentation resamples itself")

    @property
    def model_name(self) -> str:
        from napari_temseg.models import DEFAULT_DENOISER

        return str(self.model or DEFAULT_DENOISER)

    def outputs_for(self, path: str | Path, stem: str | None = None) -> list[Path]:
        """Every output of ``path``, the main one first: how resume knows a file is done.

        Denoising writes one file per image dataset (``<stem>_1.tif``, ...), so the file's
        datasets are counted (headers only; a file that cannot be read has just the main
        output, and fails when it is processed).
        """
        stem = stem or Path(path).stem
        main = output_path(self.outdir, stem)
        if self.task == "segment":
            return [main]
        from napari_temseg.io import ReaderError, read_images

        try:
            with warnings.catch_warnings():  # counting only: the run itself reports notes
                warnings.simplefilter("ignore", DataWarning)
                n = len(read_images(path))
        except (ReaderError, OSError, ValueError):
            return [main]
        return [output_path(self.outdir, stem, i) for i in range(max(n, 1))]

    def stale(self, output: str | Path) -> str | None:
        """Why a complete ``output`` already in the folder is not what this job makes
        (another task, model, orientations, binning or adaptation), or None when it is,
        or when it does not record how it was made (it is then trusted, as before).

        Resuming skips finished outputs; without this a folder of denoised images passed
        for finished masks, and a model changed between runs went unnoticed. Reads the
        header only."""
        from napari_temseg.io import ReaderError, read
        from napari_temseg.models.resolve import model_reference

        try:
            with warnings.catch_warnings():  # a header check: its notes are not the run's
                warnings.simplefilter("ignore", DataWarning)
                image = read(output, lazy=True, touch_pixels=False)[0]
        except (ReaderError, OSError, ValueError):
            return "cannot be read back"
        side = image.metadata.get("sidecar") or {}
        made = image.metadata.get("original_metadata") or {}
        segment = self.task == "segment"
        if side.get("kind") != ("labels" if segment else "image"):
            held = {"labels": "a mask", "image": "a denoised image"}.get(
                side.get("kind"), "another image"
            )
            return f"holds {held}, not this run's {'mask' if segment else 'denoised image'}"
        key = "segmented_with" if segment else "denoised_with"
        recorded = (side if segment else made).get(key)
        if recorded is None:  # not recorded (written elsewhere, or its record was too long)
            return None
        if model_reference(str(recorded)) != model_reference(self.model_name):
            return f"was {key.split('_')[0]} with {recorded}, not {self.model_name}"
        if segment:
            return None
        settings = {
            "orientation(s)": (made.get("denoised_orientations", 1), orientation_count(self.tta)),
            "px binning": (made.get("denoised_binning", 1), self.bin),
        }
        for what, (then, now) in settings.items():
            if then != now:
                return f"was denoised with {then} {what}, not {now}"
        if _canonical(made.get("adapted")) != _canonical(self.load()[1].get("adapted")):
            return f"was denoised by another adaptation of {self.model_name}"
        return None

    def resolved_device(self) -> torch.device:
        """Where this process runs the job (a cluster worker picks its own GPU)."""

        return select_device(worker_device(self.device))

    def load(self) -> tuple[nn.Module, dict]:
        """The job's model on this process's device, loaded once per process
        (``models.resolve.cached_model``); a segment job refuses a denoiser; either is
        wrapped for test-time augmentation when asked (``engine.tta``)."""
        dev = self.resolved_device()
        with _LOCK:
            model = cached_model(self.model_name, dev)
        if self.task == "segment":
            check_segmenter(model[1], self.model_name)
        n = orientation_count(self.tta)
        if n > 1:
            model = with_tta(model, probabilities=self.task == "segment", orientations=n)
        return model

    def __call__(
        self,
        path: str | Path,
        stem: str | None = None,
        progress: Callable[[int, int], Any] | None = None,
        frame_progress: Callable[[str], Callable[[int, int], Any]] | None = None,
    ) -> list[Path]:
        """Process one file into ``OUTDIR/<stem>*.tif`` (default: the input's stem);
        ``progress(done, total)`` counts its tiles (segment), or ``frame_progress(label)``
        gives one callback per frame (denoise, for a bar each). The data notes and a
        segmented frame's warnings (``io.ResultWarning``) are warned again after the run,
        each naming the file."""
        notes: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", DataWarning)
                return self._run(Path(path), stem, progress, frame_progress)
        finally:  # each note once more, outside the catch, naming the file it is about
            name = Path(path).name
            for note in notes:
                text = str(note.message)
                if issubclass(note.category, DataWarning):
                    prefixed = text if text.startswith(name) else f"{name}: {text}"
                    warnings.warn(prefixed, note.category, stacklevel=2)
                else:
                    warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)

    def _run(
        self,
        path: Path,
        stem: str | None,
        progress: Callable[[int, int], Any] | None,
        frame_progress: Callable[[str], Callable[[int, int], Any]] | None,
    ) -> list[Path]:
        if self.threads:
            torch.set_num_threads(int(self.threads))
        Path(self.outdir).mkdir(parents=True, exist_ok=True)
        model = self.load()
        dev = self.resolved_device()
        if self.task == "segment":
            out = segment_file(
                path,
                model,
                self.outdir,
                dev,
                self.tile,
                self.overlap,
                progress,
                source=self.model_name,
                large_frame_px=self.large_frame_px,
                stem=stem,
            )
            return [out]
        return denoise_file(
            path,
            model,
            self.outdir,
            dev,
            self.tile,
            self.overlap,
            bin=self.bin,
            name=self.model_name,
            frame_progress=frame_progress,
            large_frame_px=self.large_frame_px,
            stem=stem,
        )


def _canonical(value: Any) -> str:
    """``value`` as JSON writes it, so that a record read back from a file compares equal
    to the same record in a model's header."""
    return json.dumps(value, sort_keys=True, default=str)


__all__ = ["FileJob"]
