"""The ``temseg`` command: the headless face of the same engine the napari widgets use.

Every subcommand parses its arguments here and calls library functions in ``io``,
``synth``, ``engine`` and ``models``; no numerics live in this file. Errors a user can
cause (a missing file, a corrupt file, a bad option) end with a one-line message on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_temseg import __version__, defaults


class CLIError(Exception):
    """An error to report as one line on stderr (exit code 1)."""


# --------------------------------------------------------------------------- helpers


def _outdir_apart(args: argparse.Namespace) -> None:
    """The batch's output folder is none of its input folders, said before any model loads
    or adapts (``pipeline.batch.check_outdir_apart``)."""
    from napari_temseg.pipeline.batch import BatchRefused, check_outdir_apart

    try:
        check_outdir_apart(args.inputs, args.output)
    except BatchRefused as exc:
        raise CLIError(str(exc)) from exc


def _output_folder(path: str | Path) -> Path:
    """``path`` checked as the folder outputs go to, before any work (one line if not)."""
    from napari_temseg.io.outputs import OutputError, check_output_folder

    try:
        return check_output_folder(path)
    except OutputError as exc:
        raise CLIError(str(exc)) from exc


def _output_file(path: str | Path, overwrite: bool, example: str = "model.safetensors") -> Path:
    """``path`` checked as a file to write, before any work (one line if it cannot be)."""
    from napari_temseg.io.outputs import OutputError, check_output_file

    path = Path(path).expanduser()
    if path.is_file() and not overwrite:
        raise CLIError(f"{path} already exists; choose another name or pass --force")
    try:
        return check_output_file(path, overwrite=True, example=example)
    except OutputError as exc:
        raise CLIError(str(exc)) from exc


def _progress(total: int, desc: str):
    """A tqdm bar on stderr (quiet when stderr is not a terminal and not asked for)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", file=sys.stderr, leave=False)


# --------------------------------------------------------------------------- subcommands


def cmd_info(args: argparse.Namespace) -> int:
    from napari_temseg.io import ReaderError, info_dict

    try:
        info = info_dict(args.file)
    except (ReaderError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.file}: {info['kind']}, shape {tuple(info['shape'])}, {info['dtype']}")
    for ax in info["axes"]:
        unit = f" x {ax['scale']:g} {ax['unit']}" if ax["unit"] else ""
        print(f"  {ax['name']:>8}: {ax['size']}{unit}")
    px = info.get("pixel_size_nm")
    print(f"  pixel size: {px:g} nm" if px else "  pixel size: not calibrated")
    for label, value in _acquisition_lines(info["acquisition"]):
        print(f"  {label}: {value}")
    for note in info["notes"]:
        print(f"  note: {note}")
    if len(info["datasets"]) > 1:
        print(
            f"  the file holds {len(info['datasets'])} datasets (above: number {info['described'] + 1}):"
        )
        for i, d in enumerate(info["datasets"], 1):
            title = f" '{d['title']}'" if d["title"] else ""
            print(f"    {i}{title}: {d['kind']}, shape {tuple(d['shape'])}")
    return 0


def _acquisition_lines(acq: dict[str, Any]) -> list[tuple[str, str]]:
    """The acquisition facts of ``info`` as (label, value) lines, with their units."""
    shown = {
        "microscope": ("microscope", "{}"),
        "voltage_kV": ("voltage", "{:g} kV"),
        "magnification": ("magnification", "{:,.0f}x"),
        "detector": ("detector", "{}"),
        "dwell_time_us": ("dwell time", "{:g} µs"),
        "dose": ("dose", "{:g}"),
        "acquisition_time": ("acquired", "{}"),
    }
    return [(shown[k][0], shown[k][1].format(v)) for k, v in acq.items() if k in shown]


def _read_images(path: str):
    """The image datasets of one file (spectra and other non-images are refused clearly)."""
    from napari_temseg.io import ReaderError, read_images

    try:
        return read_images(path)
    except (ReaderError, OSError) as exc:
        raise CLIError(str(exc)) from exc


def _tile_bar(name: str):
    """A per-file tile progress bar and the ``progress(done, total)`` callback that feeds it."""
    bar = _progress(0, name)

    def report(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, report


def _about(path: str | Path, message: str) -> str:
    """``path: message``, unless the message names the file already (readers' errors do)."""
    path = str(path)
    named = message.startswith((path, Path(path).name))
    return message if named else f"{path}: {message}"


def _print_result(r) -> None:
    """One line per input: where it went, that it was skipped, or why it failed."""
    if r.status == "failed":
        print(f"temseg: error: {_about(r.input, r.error)}", file=sys.stderr)
    elif r.status == "skipped":
        done = ", ".join(r.outputs)
        print(f"{r.input}: skipped, {done} {'is' if len(r.outputs) == 1 else 'are'} complete")
        for note in r.notes:  # what its run said to doubt still holds
            print(f"temseg: warning: {note} (said when it was made)", file=sys.stderr)
    else:
        print(f"{r.input} -> {', '.join(r.outputs)} ({r.seconds:.1f} s)")


def _run_files(args: argparse.Namespace, job: Any, process: Callable[[Path], list]) -> int:
    """The batch over ``args.inputs`` shared by denoise and segment: resume, summary, exit.

    In this process ``process`` runs each file (with progress bars); with ``--scheduler``
    the picklable ``job`` runs on the cluster's workers instead, one task per file.
    """
    from napari_temseg.io import ReaderError
    from napari_temseg.pipeline.batch import BatchRefused, run_batch
    from napari_temseg.pipeline.cluster import ClusterError, batch_client, threads_per_worker

    outdir = Path(job.outdir)
    try:
        with batch_client(args.scheduler, args.workers) as client:
            if client is not None:
                n = len(client.scheduler_info().get("workers", {}))
                print(f"running on {n} dask worker(s) at {client.scheduler.address}")
                if args.scheduler == "local" and job.device in ("auto", "cpu"):
                    job = replace(job, threads=threads_per_worker(n))
            report = run_batch(
                args.inputs,
                outdir,
                process if client is None else job,
                outputs=job.outputs_for,
                stale=job.stale,
                resume=not args.overwrite,
                errors=(*BATCH_ERRORS, ReaderError),
                on_result=_print_result,
                client=client,
            )
    except (ClusterError, BatchRefused) as exc:
        raise CLIError(str(exc)) from exc
    c = report.counts()
    where = f"summary in {report.summary}" if report.summary else "nothing written"

    def noted(status: str) -> str:
        doubt = sum(1 for r in report.results if r.notes and r.status == status)
        return f" ({doubt} with warnings)" if doubt else ""

    done, skipped = f"{c['done']} done{noted('done')}", f"{c['skipped']} skipped{noted('skipped')}"
    print(f"{done}, {skipped}, {c['failed']} failed; {where}")
    return 1 if c["failed"] else 0


BATCH_ERRORS = (CLIError, ValueError, RuntimeError, OSError, MemoryError)


def _check_tiling(args: argparse.Namespace) -> None:
    """Refuse a bad --tile/--overlap once, before a batch fails on every file with it."""
    from napari_temseg.engine.tiling import check_tiling

    try:
        check_tiling(args.tile, args.overlap)
    except ValueError as exc:
        raise CLIError(f"--tile {args.tile} --overlap {args.overlap}: {exc}") from exc


def _file_job(args: argparse.Namespace, task: str) -> Any:
    """The per-file job of ``temseg denoise|segment``, its model loaded (and checked) here."""
    from napari_temseg.engine import DeviceError, describe_device
    from napari_temseg.models import CheckpointError
    from napari_temseg.pipeline.files import FileJob

    _output_folder(args.output)  # before the model loads: a bad OUTDIR should cost nothing
    _check_tiling(args)
    if args.band_above is not None and not args.band_above > 0:
        raise CLIError(
            f"--band-above must be a positive number of megapixels, got {args.band_above}"
        )
    if args.workers is not None and (args.scheduler != "local" or args.workers < 1):
        raise CLIError("--workers N (N >= 1) sizes the cluster of --scheduler local only")
    job = FileJob(
        task,
        args.model,
        args.output,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        large_frame_px=None if args.band_above is None else int(args.band_above * 1e6),
        bin=getattr(args, "bin", 1),
        # denoise: --orientations (--tta is 8 of them); segment: --tta
        tta=getattr(args, "orientations", None) or getattr(args, "tta", False),
    )
    try:
        device = job.resolved_device()
        job.load()
    except (DeviceError, CheckpointError, OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if not args.scheduler:
        verb = "denoising" if task == "denoise" else "segmenting"
        print(f"{verb} with {job.model_name} on {describe_device(device)}")
    return job


def cmd_denoise(args: argparse.Namespace) -> int:
    _outdir_apart(args)
    if args.adapt is not None:
        args.model = _adapted_model(args)
    job = _file_job(args, "denoise")
    bars: list = []

    def frame_bar(label: str):
        while bars:
            bars.pop().close()
        bar, report = _tile_bar(label)
        bars.append(bar)
        return report

    def process(path: Path, stem: str) -> list[Path]:
        try:
            return job(path, stem, frame_progress=frame_bar)
        finally:
            while bars:
                bars.pop().close()

    return _run_files(args, job, process)


def _adapted_model(args: argparse.Namespace) -> str:
    """``--adapt S``: the model adapted to the inputs, written to OUTDIR for reuse.

    An adapted model already in OUTDIR is reused (a resumed batch), unless --overwrite or
    it was adapted for other --orientations (its final smoothing is fitted on that output)."""
    from napari_temseg.models import DEFAULT_DENOISER, CheckpointError
    from napari_temseg.models.checkpoint import read_checkpoint_meta
    from napari_temseg.pipeline.training import adapt_files, adapted_differs

    if not args.adapt > 0:
        raise CLIError(f"--adapt needs a positive number of seconds, got {args.adapt}")
    _output_folder(args.output)
    base = Path(args.model).stem if args.model else DEFAULT_DENOISER
    path = Path(args.output) / f"{base}-adapted.safetensors"
    if path.exists() and not args.overwrite:
        try:
            meta = read_checkpoint_meta(path)
        except (CheckpointError, OSError, ValueError):
            meta = {}
        why = adapted_differs(meta, args.model, args.orientations, args.bin)
        if why is None:
            print(f"using the adapted model already in the output folder: {path.name}")
            return str(path)
        print(f"{path.name} in the output folder {why}: adapting again")
    try:
        path, result = adapt_files(
            args.inputs,
            args.model,
            path,
            args.adapt,
            device=args.device,
            bin=args.bin,
            overwrite=True,
            tta=args.orientations,
        )
    except (ValueError, RuntimeError, OSError, CheckpointError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"{result.message}; wrote {path}")
    return str(path)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from napari_temseg.pipeline.training import pretrain_files

    _output_file(args.output, args.force)
    try:
        path = pretrain_files(
            args.images,
            args.output,
            method=args.method,
            steps=args.steps,
            init=args.init or "auto",
            device=args.device,
            seed=args.seed,
            overwrite=args.force,
            patch=args.patch,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from napari_temseg.engine.events import format_duration
    from napari_temseg.engine.finetune import FinetuneConfig
    from napari_temseg.engine.prior import describe_balance
    from napari_temseg.io import ReaderError
    from napari_temseg.models import CheckpointError
    from napari_temseg.pipeline.training import finetune_files

    out = Path(args.output)
    _output_file(
        out.with_suffix(".safetensors") if out.suffix == "" and not out.is_dir() else out,
        args.force,
    )
    names = [n.strip() for n in args.classes.split(",") if n.strip()] if args.classes else None
    try:
        cfg = FinetuneConfig(
            steps=args.steps,
            max_seconds=args.seconds,
            patch=args.patch,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            holdout_frames=3 if args.validate_on_a_frame else 0,
            invert_contrast=defaults.FINETUNE_INVERT if args.invert_contrast else 0.0,
            class_balance=not args.keep_stroke_balance,
        )
    except ValueError as exc:  # --steps 0, --lr nan: say which option, before any work
        msg = str(exc).replace("max_seconds", "seconds", 1)
        raise CLIError(f"--{msg}") from exc  # the config's messages start with the field
    bars: list = []  # opened at the first event: a refused input leaves no bar behind

    def report(ev) -> None:
        if not bars:
            bars.append(_progress(args.steps, "fine-tuning"))
            bars[0].unit = "step"
        bar = bars[0]
        if ev.kind == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{ev.loss:.3f}", left=format_duration(ev.eta_s), refresh=False)
        elif ev.kind == "val" and ev.val_dice is not None:
            dice = " ".join("-" if d is None else f"{d:.3f}" for d in ev.val_dice)
            bar.write(f"step {ev.step}: validation Dice per class {dice}")

    try:
        path, result = finetune_files(
            args.image,
            args.labels,
            args.output,
            init=args.init or "auto",
            steps=args.steps,
            class_names=names,
            device=args.device,
            overwrite=args.force,
            config=cfg,
            progress=report,
        )
    except (ValueError, RuntimeError, OSError, ReaderError, CheckpointError) as exc:
        raise CLIError(str(exc)) from exc
    finally:
        for bar in bars:
            bar.close()
    dice = ", ".join(
        f"{n} {'-' if d is None else f'{d:.3f}'}"
        for n, d in zip(result.meta["class_names"], result.best_val_dice, strict=True)
    )
    if result.timed_out:
        print(f"time budget of {format_duration(args.seconds)} reached at step {result.steps_done}")
    on = result.meta.get("training", {}).get("validation", "held-out strokes")
    print(f"wrote {path} (kept {result.kept}; Dice on {on}: {dice})")
    balance = describe_balance(result.meta.get("class_balance"), result.meta["class_names"])
    if balance:
        print(balance)
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    _outdir_apart(args)
    job = _file_job(args, "segment")

    def process(path: Path, stem: str) -> list[Path]:
        bar, report = _tile_bar(path.name)
        with bar:  # a frame unlike the painted ones, or degenerate: a ResultWarning
            return job(path, stem, progress=report)

    return _run_files(args, job, process)


def cmd_measure(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.atoms:
        return _measure_atoms(args)
    if args.confirm_with:
        raise CLIError("--confirm-with confirms atoms: use it with --atoms STROKES")
    if args.tta:
        raise CLIError("--tta averages the --confirm-with segmenter: use it with both")
    from napari_temseg.engine.measure import SUPPORT_CLASS, measure, write_csv
    from napari_temseg.io.calibration import Calibration
    from napari_temseg.io.sidecar import instance_classes
    from napari_temseg.pipeline.batch import expand_inputs

    output = _csv_output(args.output, "particles.csv")
    masks, misses = expand_inputs(args.masks)
    images, image_misses = expand_inputs(args.image or [])
    misses += image_misses
    for miss in misses:
        _print_result(miss)
    if images and len(images) != len(masks):
        raise CLIError(f"got {len(masks)} mask(s) but {len(images)} image(s); give one per mask")
    tables, failed = [], len(misses)
    names = _table_names(masks)
    for i, path in enumerate(masks):
        about = path  # whose fault an error is: the mask's, or its --image's
        try:
            (mask,) = _read_images(path)[:1]
            if images:
                about = images[i]
                image = _read_images(images[i])[0].data
                about = path
            else:
                image = None
            calibration = Calibration.from_image(mask)
            known = instance_classes(mask.metadata)  # an instance mask our writers wrote
            side = mask.metadata.get("sidecar") or {}
            classes = side.get("mask") == "semantic" or (
                side.get("kind") == "labels" and side.get("classes") and known is None
            )
            if args.instances and classes:
                raise CLIError(
                    "its sidecar says it holds classes (a semantic mask), not one id per "
                    "particle: leave out --instances"
                )
            result = measure(
                mask.data,
                image,
                scale=calibration.yx,
                unit=calibration.unit,
                return_labels=False,
                min_size_px=args.min_size,
                particle_classes=args.particle_classes,
                instances=args.instances or known is not None,
                instance_class=known or None,
            )
        except (CLIError, ValueError) as exc:
            failed += 1
            print(f"temseg: error: {_about(about, str(exc))}", file=sys.stderr)
            continue
        table = result.table
        table.insert(0, "file", names[path])
        tables.append(table)
        s = result.summary
        print(f"{path}: {s.get('count', 0)} particle(s), coverage {s.get('coverage', 0):.1%}")
        if not len(table) and not (args.instances or known is not None or args.particle_classes):
            if bool(np.any(np.asarray(mask.data) == SUPPORT_CLASS)):
                print(
                    f"temseg: warning: {path}: class {SUPPORT_CLASS} counts as support/"
                    f"background; to measure its objects, pass --particle-classes {SUPPORT_CLASS}",
                    file=sys.stderr,
                )
    if tables:
        out = write_csv(pd.concat(tables, ignore_index=True), output, overwrite=True)
        print(f"wrote {out}")
    return 1 if failed else 0


def _table_names(paths: list[Path]) -> dict[Path, str]:
    """What the table's ``file`` column calls each input: its name, or where two inputs
    share one (``s1/m.tif``, ``s2/m.tif``), its path below the folder they all share."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return dict(zip(paths, names, strict=True))
    full = [p.resolve() for p in paths]
    common = Path(os.path.commonpath(full))
    return {p: str(f.relative_to(common)) for p, f in zip(paths, full, strict=True)}


def _csv_output(path: str, example: str) -> Path:
    """The table file ``temseg measure`` writes (``.csv`` added, as write_csv does), checked
    before any work."""
    output = Path(path)
    if output.suffix.lower() != ".csv" and not output.is_dir():
        output = output.with_name(output.name + ".csv")
    return _output_file(output, overwrite=True, example=example)


def _measure_atoms(args: argparse.Namespace) -> int:
    """``temseg measure IMAGES --atoms STROKES``: fit the atom finder on the painted image,
    find and measure every atom of every image, one CSV row per atom."""
    import pandas as pd

    from napari_temseg.engine.atoms import AtomError, atom_mask_of, atom_table, fit_atom_finder
    from napari_temseg.engine.measure import write_csv
    from napari_temseg.engine.segment import load_segmenter, segment
    from napari_temseg.engine.tta import with_tta
    from napari_temseg.io.calibration import Calibration
    from napari_temseg.models import CheckpointError
    from napari_temseg.pipeline.batch import expand_inputs

    if args.tta and not args.confirm_with:
        raise CLIError("--tta averages the --confirm-with segmenter: use it with both")
    output = _csv_output(args.output, "atoms.csv")
    images, misses = expand_inputs(args.masks)
    for miss in misses:
        _print_result(miss)
    if not images:
        raise CLIError("no image to find atoms on")
    painted = args.painted or images[0]
    strokes = np.asarray(_read_images(args.atoms)[0].data)
    frame = np.asarray(_read_images(painted)[0].data)
    if strokes.shape != frame.shape or frame.ndim != 2:
        raise CLIError(
            f"{args.atoms} {strokes.shape} must be painted on one 2D frame of {painted} "
            f"{frame.shape}; name that image with --painted"
        )
    try:
        finder = fit_atom_finder(frame, strokes, args.atom_class)
    except AtomError as exc:
        raise CLIError(f"{args.atoms}: {exc}") from exc
    print(
        f"atom finder fitted on {painted}: width sigma {finder.sigma:.2f} px, "
        f"threshold {finder.threshold:.2f} (noise units)"
    )
    judge = None
    if args.confirm_with:
        try:
            judge = load_segmenter(args.confirm_with)
            judge = with_tta(judge) if args.tta else judge
        except (CheckpointError, ValueError, OSError) as exc:
            raise CLIError(f"--confirm-with: {exc}") from exc
        print(
            f"candidates down to {finder.confirmed_threshold:.2f} (noise units) confirmed by "
            f"{args.confirm_with}"
        )
    tables, failed = [], len(misses)
    for path in images:
        try:
            ds = _read_images(path)[0]
            if np.ndim(ds.data) != 2:
                raise CLIError(f"atoms are found on 2D frames, got shape {np.shape(ds.data)}")
            calibration = Calibration.from_image(ds)
            frame = np.asarray(ds.data)
            atom_mask = None
            if judge is not None:
                seg = segment(frame, judge, pixel_size_nm=calibration.pixel_size_nm)
                atom_mask, why_not = atom_mask_of(seg, args.atom_class)
                if why_not:
                    print(f"{path}: {why_not}")
            table = atom_table(
                frame,
                finder.find(frame, atom_mask=atom_mask),
                2 * finder.sigma,
                calibration.yx,
                calibration.unit,
            )
        except (CLIError, ValueError) as exc:
            failed += 1
            print(f"temseg: error: {_about(path, str(exc))}", file=sys.stderr)
            continue
        table.insert(0, "file", Path(path).name)
        tables.append(table)
        print(f"{path}: {len(table)} atom(s)")
    if tables:
        out = write_csv(pd.concat(tables, ignore_index=True), output, overwrite=True)
        print(f"wrote {out}")
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from napari_temseg.models import list_models

    models = list_models()
    if not models:
        print("no bundled models are installed")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"{m.name:<{width}}  {m.task:<8}  {m.description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_temseg.pipeline.demo import run_demo

    run_demo(_output_folder(args.output))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:

    from napari_temseg.io import write_image, write_labels
    from napari_temseg.synth import simulate

    outdir = _output_folder(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(args.seed).generate_state(args.n)
    for i, seed in enumerate(seeds):
        s = simulate(kind=args.kind, size=args.size, dose=args.dose, seed=int(seed))
        stem = f"{args.kind}_{i:04d}"
        scale = (s.pixel_size_nm, s.pixel_size_nm)
        about = {
            "kind": s.kind,
            "pixel_size_nm": s.pixel_size_nm,
            "dose": s.dose,
            "seed": int(seed),
            "params": s.params,
        }
        write_image(outdir / f"{stem}_noisy.tif", s.noisy, scale=scale, metadata=about)
        write_image(outdir / f"{stem}_clean.tif", s.clean, scale=scale, metadata=about)
        write_labels(
            outdir / f"{stem}_mask.tif",
            s.recorded_semantic,  # registers with the noisy file
            scale=scale,
            class_names=["support", "particle"],
        )
        write_labels(
            outdir / f"{stem}_instances.tif",
            s.recorded_instances,
            scale=scale,
            metadata={"mask": "instance"},
        )
        (outdir / f"{stem}.json").write_text(json.dumps(about, indent=1, default=float))
    print(
        f"wrote {args.n} simulated {args.kind} image(s) with clean versions and masks to {outdir}"
    )
    return 0


def cmd_export_bioimageio(args: argparse.Namespace) -> int:
    from napari_temseg.io import ReaderError
    from napari_temseg.models import CheckpointError
    from napari_temseg.models.bioimageio import (
        export_bioimageio,
        package_path,
        validate_bioimageio,
    )

    out = _output_file(package_path(args.output), args.force, example="model.zip")
    try:
        path = export_bioimageio(
            args.model,
            out,
            name=args.name,
            authors=args.author,
            description=args.description,
            sample=args.sample,
        )
    except (ImportError, CheckpointError, ReaderError, ValueError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {path}")
    if args.no_validate:
        return 0
    ok, summary = validate_bioimageio(path)
    if not ok:
        print(summary, file=sys.stderr)
        raise CLIError(f"{path}: the bioimageio.core model test failed (summary above)")
    print("bioimageio.core model test: passed")
    return 0


def cmd_import_bioimageio(args: argparse.Namespace) -> int:
    from napari_temseg.models.bioimageio import import_bioimageio

    out = Path(args.output)
    if out.suffix == "" and not out.is_dir():
        out = out.with_suffix(".safetensors")
    out = _output_file(out, args.force)
    try:
        _, meta = import_bioimageio(args.package, out)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    task = meta.get("task", "denoise")
    print(f"wrote {out} (a {task} model: temseg {task} --model {out} ...)")
    return 0


# --------------------------------------------------------------------------- parser

SUBCOMMANDS = (
    "info",
    "denoise",
    "pretrain",
    "finetune",
    "segment",
    "measure",
    "models",
    "demo",
    "synth",
    "export-bioimageio",
    "import-bioimageio",
)


INPUTS_HELP = "files, folders (every image file in them) or quoted glob patterns"
TTA_HELP = (
    "test-time augmentation: average the segmenter over the eight rotations and mirrorings "
    "of each tile (8x the time; fewer specks on frames that were not painted)"
)
OVERWRITE_HELP = (
    "redo inputs whose output already exists (default: skip outputs that are complete, "
    "so an interrupted batch resumes)"
)


def _tiling_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--tile", type=int, default=defaults.TILE, metavar="N")
    s.add_argument(
        "--overlap",
        type=int,
        default=defaults.OVERLAP,
        metavar="N",
        help="tile overlap in pixels; raised to what the model records it needs "
        "(hrtem-denoise: 96)",
    )


def _batch_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--band-above",
        type=float,
        default=None,
        metavar="MP",
        help="process 2D frames larger than this many megapixels band by band, written "
        "as they are done, so they need not fit in memory (default: 67, i.e. 8192²)",
    )
    s.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS|local",
        help="run the files on a dask.distributed cluster: a scheduler address "
        "(tcp://host:8786) or 'local' to start one on this machine (default: in this process)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="workers of --scheduler local (default: one per GPU, else one per 2 CPU cores)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="temseg",
        description="Denoise, restore and segment TEM/STEM images (the headless face of "
        "the napari-temseg plugin).",
    )
    p.add_argument("--version", action="version", version=f"napari-temseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("info", help="describe a microscope file (shape, axes, calibration)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("denoise", help="denoise/restore images with a bundled or own model")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUTS_HELP)
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.add_argument("--model", default=None, metavar="NAME|PATH", help="see `temseg models`")
    s.add_argument("--device", default=defaults.DEVICE, choices=("auto", "cpu", "cuda", "mps"))
    _tiling_options(s)
    s.add_argument(
        "--bin",
        type=int,
        default=1,
        choices=defaults.BINS,
        help="denoise binned KxK and interpolate back: for low-dose frames sampled finer "
        "than their detail (default 1: the frame's own sampling)",
    )
    s.add_argument(
        "--adapt",
        type=float,
        default=None,
        metavar="SECONDS",
        help="first fine-tune the model for SECONDS on simulated images with the inputs' own "
        "noise level and pixel size and, with --orientations 1, on the inputs themselves "
        "taught by the model's own eight-orientation average; the adapted model is written "
        "to OUTDIR and used for all files (for atom-column positions the oracle Gaussian "
        "still placed simulated columns closer, median)",
    )
    s.add_argument(
        "--orientations",
        type=int,
        default=defaults.DENOISE_ORIENTATIONS,
        choices=defaults.ORIENTATION_CHOICES,
        help="average the model over this many orientations of each tile (2: the tile and "
        "the tile turned by 90 degrees; 8: every rotation and mirroring) and smooth the "
        "detail they disagree on: that many times the time, less invented grain at low "
        f"dose; 1: one pass (default {defaults.DENOISE_ORIENTATIONS})",
    )
    s.add_argument(
        "--tta",
        dest="orientations",
        action="store_const",
        const=8,
        help="the same as --orientations 8",
    )
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _batch_options(s)
    s.set_defaults(func=cmd_denoise)

    s = sub.add_parser("pretrain", help="pretrain a denoiser on your own unlabeled images")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("-o", "--output", required=True, metavar="MODEL")
    s.add_argument("--method", choices=("poisson", "pix2pix"), default=defaults.PRETRAIN_METHOD)
    s.add_argument("--steps", type=int, default=defaults.PRETRAIN_STEPS, metavar="N")
    s.add_argument(
        "--init",
        default=None,
        metavar="NAME|PATH",
        help="start model: 'auto' (bundled denoiser, default), 'scratch', a name or a "
        "checkpoint (an earlier pretraining continues where it stopped)",
    )
    s.add_argument("--device", default=defaults.DEVICE, choices=("auto", "cpu", "cuda", "mps"))
    s.add_argument(
        "--patch",
        type=int,
        default=defaults.PRETRAIN_PATCH,
        metavar="N",
        help="patch side in pixels",
    )
    s.add_argument("--seed", type=int, default=defaults.SEED, metavar="S")
    s.add_argument("--force", action="store_true", help="overwrite MODEL if it exists")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("finetune", help="fine-tune a denoiser into a segmenter from labels")
    s.add_argument("--image", nargs="+", required=True, metavar="IMG")
    s.add_argument(
        "--labels",
        nargs="+",
        required=True,
        metavar="LAB",
        help="stroke masks, one per image, same shape: 0 = not labelled, 1..K = classes",
    )
    s.add_argument("-o", "--output", required=True, metavar="MODEL")
    s.add_argument(
        "--init",
        default=None,
        metavar="NAME|PATH|none",
        help="denoiser to start from ('auto': the bundled STEM denoiser), a segmenter to "
        "continue, or 'none' to train from scratch",
    )
    s.add_argument("--steps", type=int, default=defaults.FINETUNE_STEPS, metavar="N")
    s.add_argument(
        "--seconds",
        type=float,
        default=defaults.FINETUNE_SECONDS,
        metavar="S",
        help="time budget: stop after S seconds or --steps steps, whichever comes first, "
        "keeping the best model (default 0: no time limit)",
    )
    s.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="class names for labels 1..K (default: from the labels' sidecar, else "
        "'support,particle')",
    )
    s.add_argument(
        "--patch",
        type=int,
        default=defaults.FINETUNE_PATCH,
        metavar="N",
        help="patch side in pixels",
    )
    s.add_argument("--lr", type=float, default=defaults.FINETUNE_LR, metavar="LR")
    s.add_argument("--seed", type=int, default=defaults.SEED, metavar="S")
    s.add_argument("--device", default=defaults.DEVICE, choices=("auto", "cpu", "cuda", "mps"))
    s.add_argument(
        "--validate-on-a-frame",
        action="store_true",
        help="with 3 or more painted frames, validate on all strokes of one of them, left "
        "out of training: an honest Dice for frames you did not paint, at the cost of "
        "training on fewer strokes",
    )
    s.add_argument(
        "--invert-contrast",
        action="store_true",
        help="the frames may differ in contrast polarity (HRTEM defocus, thickness): also "
        f"train on inverted patches ({defaults.FINETUNE_INVERT * 100:.0f}%% of them): better on "
        "frames of the other polarity, worse on frames like the painted ones",
    )
    s.add_argument(
        "--keep-stroke-balance",
        action="store_true",
        help="do not correct the model to the class proportions of the painted frames "
        "(by default it is: strokes over-represent rare classes such as atoms, which a "
        "model then finds everywhere)",
    )
    s.add_argument("--force", action="store_true", help="overwrite MODEL if it exists")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("segment", help="segment images with a fine-tuned model")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUTS_HELP)
    s.add_argument("--model", required=True, metavar="MODEL")
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.add_argument("--device", default=defaults.DEVICE, choices=("auto", "cpu", "cuda", "mps"))
    _tiling_options(s)
    s.add_argument("--tta", action="store_true", help=TTA_HELP)
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _batch_options(s)
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser(
        "measure",
        help="measure particles in masks (or, with --atoms, find atoms in images), write a CSV",
    )
    s.add_argument(
        "masks", nargs="+", metavar="MASK", help=INPUTS_HELP + "; with --atoms: the images"
    )
    s.add_argument("--image", nargs="+", default=None, metavar="IMG")
    s.add_argument("-o", "--output", required=True, metavar="TABLE.csv")
    s.add_argument(
        "--instances",
        action="store_true",
        help="the masks hold one id per particle (StarDist, Cellpose, ...), 0 between "
        "them; an instance mask temseg wrote is read as one without it (its sidecar says so)",
    )
    s.add_argument(
        "--particle-classes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="the classes measured as particles (default: every class above 1; class 1 counts "
        "as support/background, so a 0/1 mask needs --particle-classes 1)",
    )
    s.add_argument(
        "--min-size",
        type=int,
        default=defaults.MIN_SIZE_PX,
        metavar="PX",
        help="smallest particle in pixels; specks and pinholes smaller than this are cleaned "
        f"from the mask first (default {defaults.MIN_SIZE_PX}; 0: measure the mask as it is)",
    )
    s.add_argument(
        "--atoms",
        metavar="STROKES",
        default=None,
        help="find atoms instead: a labels file with a few atoms painted (--atom-class) and a "
        "few support strokes (any other label) on one frame; every atom of every image is a row",
    )
    s.add_argument(
        "--atom-class",
        type=int,
        default=defaults.ATOM_CLASS,
        metavar="N",
        help=f"label of the atoms ({defaults.ATOM_CLASS})",
    )
    s.add_argument(
        "--painted",
        default=None,
        metavar="IMG",
        help="the image STROKES were painted on (default: the first image)",
    )
    s.add_argument(
        "--confirm-with",
        default=None,
        metavar="SEGMENTER",
        help="with --atoms: a segmenter trained on the same strokes (temseg finetune); "
        "fainter candidates are kept where it says atom (more faint atoms, fewer specks)",
    )
    s.add_argument("--tta", action="store_true", help="with --confirm-with: " + TTA_HELP)
    s.set_defaults(func=cmd_measure)

    s = sub.add_parser("models", help="list the bundled models")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("demo", help="run the headless end-to-end demo on simulated data")
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "synth", help="write simulated TEM/STEM images with clean versions and masks"
    )
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.add_argument("--kind", choices=("stem", "hrtem"), default="stem")
    s.add_argument("--n", type=int, default=1, metavar="N", help="number of images")
    s.add_argument("--size", type=int, default=512, metavar="N", help="image side in pixels")
    s.add_argument("--dose", type=float, default=None, metavar="D", help="electrons per pixel")
    s.add_argument("--seed", type=int, default=0, metavar="S")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser(
        "export-bioimageio",
        help="write a model as a bioimage.io model package (zip) and test it",
    )
    s.add_argument("model", metavar="MODEL", help="a bundled model's name or a checkpoint")
    s.add_argument("output", metavar="OUTPUT.zip")
    s.add_argument("--name", default=None, help="the package's name (default: the model's)")
    s.add_argument(
        "--author", action="append", default=None, metavar="NAME", help="repeat for several"
    )
    s.add_argument("--description", default=None, metavar="TEXT")
    s.add_argument(
        "--sample",
        default=None,
        metavar="FILE",
        help="image for the test tensors and cover (default: a simulated micrograph)",
    )
    s.add_argument("--no-validate", action="store_true", help="skip the bioimageio.core model test")
    s.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    s.set_defaults(func=cmd_export_bioimageio)

    s = sub.add_parser(
        "import-bioimageio",
        help="turn a package written by export-bioimageio back into a checkpoint",
    )
    s.add_argument("package", metavar="PACKAGE", help="the zip, its folder or its rdf.yaml")
    s.add_argument("output", metavar="OUTPUT.safetensors")
    s.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    s.set_defaults(func=cmd_import_bioimageio)
    return p


@contextmanager
def _notes_as_lines() -> Iterator[None]:
    """Print the data notes of io/engine (``DataWarning``: colour made grey, non-finite
    pixels replaced) as one ``temseg: note:`` line each, every time they occur."""
    import warnings

    from napari_temseg.io import DataWarning, ResultWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            from tqdm import tqdm  # its write keeps a line of its own beside a progress bar

            if issubclass(category, ResultWarning):  # a result to doubt
                tqdm.write(f"temseg: warning: {message}", file=sys.stderr)
            elif issubclass(category, DataWarning):
                tqdm.write(f"temseg: note: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _notes_as_lines():
            return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"temseg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("temseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
