"""The training commands on files: ``temseg finetune`` and ``temseg pretrain``.

They read images and stroke masks, run the engine's training (``engine.finetune``,
``engine.pretrain``), show a terminal bar and write the checkpoint; the engine itself
never sees a file name or a bar.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg import defaults
from napari_temseg.engine.events import TrainEvent, drain
from napari_temseg.engine.finetune import (
    DEFAULT_CLASSES,
    FinetuneConfig,
    Finetuner,
    FinetuneResult,
    save_segmenter,
)
from napari_temseg.engine.pretrain import (
    PretrainConfig,
    iter_pretrain,
    run_pretrain,
)
from napari_temseg.engine.process import JobProcess
from napari_temseg.engine.strokes import SegmentError, label_values
from napari_temseg.io.grey import is_colour
from napari_temseg.io.model import DataWarning
from napari_temseg.io.outputs import check_output_file
from napari_temseg.io.sidecar import instance_classes, read_class_table
from napari_temseg.models.resolve import AUTO
from napari_temseg.pipeline.batch import expand_inputs
from napari_temseg.pipeline.predict_files import first_image


def read_images(paths: Sequence[str | Path]) -> tuple[list[Any], list[str]]:
    """Image datasets of files, folders or glob patterns (``batch.expand_inputs``, the one
    input rule), with their names. A miss or an unreadable file raises ``ValueError``
    naming it (the reader's own message)."""
    from napari_temseg.io import NotAnImageError, ReaderError
    from napari_temseg.io import read_images as read_file_images

    files, misses = expand_inputs(paths)
    if misses:
        raise ValueError("; ".join(f"{m.input}: {m.error}" for m in misses))
    arrays, names = [], []
    for f in files:
        try:
            images = read_file_images(f)  # image/stack datasets, colour made grey
        except NotAnImageError as exc:
            raise ValueError(f"{f.name}: {exc}") from exc
        except ReaderError as exc:
            raise ValueError(str(exc)) from exc
        for i, im in enumerate(images):
            arrays.append(np.asarray(im.data))
            names.append(f.name if len(images) == 1 else f"{f.name}[{i}]")
    return arrays, names


def finetune_files(
    images: Sequence[str | Path],
    labels: Sequence[str | Path],
    output: str | Path,
    init: str | Path | None = "auto",
    steps: int = defaults.FINETUNE_STEPS,
    class_names: Sequence[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    config: FinetuneConfig | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, FinetuneResult]:
    """``temseg finetune``: images and their stroke masks (same shapes) -> a segmenter file.

    Class names come from ``class_names``, else from the first label file's sidecar,
    else "support, particle" (as many as the highest label needs).
    """
    from napari_temseg.io import read

    if len(images) != len(labels):
        raise SegmentError(f"got {len(images)} image file(s) but {len(labels)} label file(s)")
    out = Path(output)
    if out.suffix == "" and not out.is_dir():
        out = out.with_suffix(".safetensors")
    check_output_file(out, overwrite)  # before training, which must not be lost to it
    imgs, labs, sizes = [], [], []
    names = list(class_names or [])
    for ip, lp in zip(images, labels, strict=True):
        im = first_image(ip)
        lab = read(lp)[0]
        if is_colour(lab):  # its samples read as labels gave a 0/255 diagnosis
            raise SegmentError(
                f"{Path(lp).name} is a colour (RGB) picture, not labels: strokes are whole "
                "numbers 1, 2, ... one per class; paint them in napari's Train dock or save "
                "them as a label image"
            )
        if instance_classes(lab.metadata) is not None:  # trained one class per particle
            raise SegmentError(
                f"{Path(lp).name} is an instance mask (one id per particle), not strokes "
                "of classes: give the semantic mask or a strokes file"
            )
        imgs.append(np.asarray(im.data))
        labs.append(np.asarray(lab.data))
        sizes.append(im.pixel_size_nm)
        if not names:
            names = _names_from(lab.metadata)
    kmax = max(
        int(label_values(lab, f"the labels in {Path(lp).name}").max(initial=0))
        for lab, lp in zip(labs, labels, strict=True)
    )
    if not names:
        names = list(DEFAULT_CLASSES) + [f"class {i}" for i in range(3, kmax + 1)]
    cfg = replace(config or FinetuneConfig(), steps=int(steps), device=device)
    tuner = Finetuner(imgs, labs, names, init=init, config=cfg, pixel_sizes=sizes)
    for note in tuner.notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    result = drain(tuner.run(cancel=cancel), progress)
    save_segmenter(out, result.model, result.meta, overwrite=overwrite, rescue=True)
    return out, result


def _names_from(meta: dict) -> list[str]:
    """Class names stored by ``io.write_labels`` (sidecar "classes") or napari metadata."""
    if meta.get("class_names"):
        return [str(n) for n in meta["class_names"]]
    if isinstance(meta.get("sidecar"), dict):
        return _names_from(meta["sidecar"])
    table = read_class_table(meta.get("classes"))
    return [c.get("name", f"class {v}") for v, c in sorted(table.items()) if v > 0]


def pretrain_files(
    paths: Sequence[str | Path],
    output: str | Path,
    method: str = "poisson",
    steps: int = defaults.PRETRAIN_STEPS,
    init: str | None = AUTO,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """``temseg pretrain IMAGE... -o MODEL``: read files, pretrain, write the checkpoint.

    ``options`` are further :class:`PretrainConfig` fields (patch, batch_size, kind,
    dose_fraction, full_distortions, sim_fraction, ...). A tqdm bar goes to stderr. An
    existing ``output`` is refused unless ``overwrite`` (FileExistsError), and so is one
    that cannot be written (``io.outputs.OutputError``), before anything is read.
    Raises ``ValueError`` with a clear message for unusable input.
    """
    import sys

    from tqdm import tqdm

    check_output_file(output, overwrite)
    arrays, names = read_images(paths)
    cfg = PretrainConfig(
        method=method,
        steps=steps,
        init=init,
        device=device,
        seed=seed,
        output=str(output),
        preview_every_s=0,
        **options,
    )
    bar = tqdm(
        total=steps, desc=f"pretrain ({method})", unit="step", file=sys.stderr, disable=not progress
    )

    def report(ev: TrainEvent) -> None:
        if ev.kind == "step":
            bar.n = ev.run_step
            bar.set_postfix(loss=f"{ev.loss:.4f}", refresh=False)
            bar.refresh()
        elif ev.kind == "val":
            bar.set_postfix(loss=f"{ev.loss:.4f}", val_psnr=f"{ev.val_psnr:.2f}")

    try:
        result = run_pretrain(arrays, cfg, names, progress=report)
    finally:
        bar.close()
    if result.path is None:
        raise ValueError(result.message)
    return result.path


def pretrain_job(
    images: Sequence[Any] | None,
    paths: Sequence[str],
    names: Sequence[str],
    config: Any,
    *,
    cancel: threading.Event,
) -> Generator[Any, None, Any]:
    """The pretraining job: read ``paths`` (in the child) or take ``images``, then train."""
    if paths:
        images, names = read_images(paths)
    return iter_pretrain(images, config, names, cancel)


class TrainingProcess(JobProcess):
    """One pretraining job (:func:`pretrain_job`) in a child process."""

    def __init__(
        self,
        config: Any,
        images: Sequence[Any] | None = None,
        names: Sequence[str] = (),
        paths: Sequence[str] | None = None,
        threads: int = 2,
        nice: int = 10,
    ) -> None:
        if images is None and not paths:
            raise ValueError("give images or paths to pretrain on")
        super().__init__(
            pretrain_job,
            images,
            list(paths or ()),
            list(names),
            config,
            threads=threads,
            nice=nice,
            name="temseg-pretrain",
        )


def adapt_files(
    paths: Sequence[str | Path],
    model: str | None,
    output: str | Path,
    seconds: float,
    device: str = "auto",
    bin: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    tta: bool | int = False,
) -> tuple[Path, Any]:
    """``temseg denoise --adapt S``: adapt ``model`` to the files' frames, write it to ``output``.

    The noise level is measured on the first files' frames (``engine.adapt.MAX_FRAMES``),
    which a batch of one session shares; their calibrated pixel size, when every one has it, is
    used too. Files that cannot be read are left to the batch, which reports them; none
    readable is a ``ValueError``. Returns the written checkpoint and the ``AdaptResult``.
    """
    import sys

    from tqdm import tqdm

    from napari_temseg.engine.adapt import MAX_FRAMES, AdaptConfig, run_adapt
    from napari_temseg.io import NotAnImageError, ReaderError
    from napari_temseg.io import read_images as read_file_images
    from napari_temseg.models import save_or_rescue

    check_output_file(output, overwrite)
    files, _ = expand_inputs(paths)
    arrays, pixels = [], []
    for f in files:
        if len(arrays) >= MAX_FRAMES:
            break
        try:
            images = read_file_images(f)
        except (NotAnImageError, ReaderError):
            continue
        for im in images[: MAX_FRAMES - len(arrays)]:
            lead = im.data.ndim - 2  # a stack: its first frame measures the dose
            arrays.append(np.asarray(im.data[(0,) * lead] if lead > 0 else im.data, np.float32))
            pixels.append(im.pixel_size_nm)
    if not arrays:
        raise ValueError("no readable image among the inputs to adapt the model to")
    known = [p for p in pixels if p]
    pixel = float(np.median(known)) if len(known) == len(pixels) else None
    cfg = AdaptConfig.for_output(tta, seconds=seconds, bin=bin, device=device)
    bar = tqdm(
        total=round(seconds), desc="adapting", unit="s", file=sys.stderr, disable=not progress
    )

    def report(ev: TrainEvent) -> None:
        bar.n = min(round(ev.elapsed_s), bar.total)
        if ev.kind == "val" and ev.val_psnr is not None:
            bar.set_postfix(val_psnr=f"{ev.val_psnr:.2f} dB", refresh=False)
        bar.refresh()

    try:
        result = run_adapt(arrays, model, cfg, pixel, progress=report)
    finally:
        bar.close()
    from napari_temseg.models.resolve import model_reference

    result.meta["adapted"]["from_model"] = model_reference(model)
    path = save_or_rescue(output, result.model, result.meta)
    return Path(path), result


def adapted_differs(meta: dict, model: str | None, orientations: int, bin: int) -> str | None:
    """Why an adapted model (its header ``meta``) is not the one ``temseg denoise --adapt``
    would make now from ``model`` for ``orientations`` and ``bin``, or None when it is.

    A resumed batch reuses the adapted model in OUTDIR; reused by its file name alone, it
    denoised one user's HRTEM frames with a STEM model adapted to other frames."""
    adapted = meta.get("adapted") or {}
    config = adapted.get("config") or {}
    if not config:
        return "is no adapted model"
    from napari_temseg.models.resolve import model_reference

    then = adapted.get("from_model", adapted.get("from"))  # older ones: the header's name
    now = model_reference(model) if "from_model" in adapted else _header_name(model)
    if then != now:
        return f"was adapted from {then}, not {now}"
    made_for = int(config.get("orientations", 1))  # older adapted models: one pass
    if made_for != orientations:
        return f"was fitted for {made_for} orientation(s), not {orientations}"
    if int(config.get("bin", 1)) != bin:
        return f"was adapted to frames binned by {config.get('bin', 1)}, not {bin}"
    return None


def _header_name(model: str | None) -> str | None:
    from napari_temseg.models import DEFAULT_DENOISER, CheckpointError
    from napari_temseg.models.bundled import resolve_model
    from napari_temseg.models.checkpoint import read_checkpoint_meta

    try:
        return read_checkpoint_meta(resolve_model(model or DEFAULT_DENOISER)).get("name")
    except (CheckpointError, OSError, ValueError):
        return None


__all__ = [
    "TrainingProcess",
    "adapt_files",
    "adapted_differs",
    "finetune_files",
    "pretrain_files",
    "pretrain_job",
    "read_images",
]
