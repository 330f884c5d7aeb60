"""Batch runs over many files: input expansion, resume, failure isolation, a summary.

What ``temseg denoise`` and ``temseg segment`` share when a microscopist points them at a
session's worth of files: inputs may be files, folders or glob patterns; one bad file is
reported on one line and the others still run; outputs already written completely are
skipped (so an interrupted batch resumes where it stopped); and ``OUTDIR/summary.json`` and
``summary.csv`` say what happened to every input. No Qt, no numerics: the per-file work is
a callable from the caller.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_temseg.io.model import DataWarning, ResultWarning
from napari_temseg.io.readers import SUFFIXES
from napari_temseg.pipeline.naming import output_stems

#: in a folder, these are not inputs of their own: an .emi's image is its .ser, which is
#: listed anyway, and .png files are the plugin's own masks
FOLDER_SKIP = (".emi", ".png")


@dataclass
class FileResult:
    input: str
    status: str  # "done", "skipped" (output already complete), "failed" or "stopped"
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)  # the results to doubt (ResultWarning)
    # what the readers and engine noted (DataWarning), carried back from a cluster worker
    # to be shown where the batch runs; not part of the summary
    said: list[str] = field(default_factory=list)


@dataclass
class BatchReport:
    results: list[FileResult]
    summary: Path | None = None  # summary.json, once written (not when no input exists)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        """Inputs per status; "stopped" (the batch stopped before they were done) only when some are."""
        out = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def write(self, outdir: Path, name: str = "summary") -> tuple[Path, Path]:
        """``summary.json`` (counts and every file) and ``summary.csv`` (one row a file)."""
        js, cs = outdir / f"{name}.json", outdir / f"{name}.csv"
        files = [{k: v for k, v in asdict(r).items() if k != "said"} for r in self.results]
        payload = {"counts": self.counts(), "files": files}
        js.write_text(json.dumps(payload, indent=1))
        with cs.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["input", "status", "outputs", "seconds", "error", "warnings"])
            for r in self.results:
                outs, took = ";".join(r.outputs), f"{r.seconds:.2f}"
                w.writerow([r.input, r.status, outs, took, r.error, " | ".join(r.notes)])
        return js, cs


def expand_inputs(items: Iterable[str | Path]) -> tuple[list[Path], list[FileResult]]:
    """Files, folders (their readable files, sorted) and glob patterns -> (files, misses).

    A folder contributes the files the readers take (not ``.emi``/``.png``, see
    ``FOLDER_SKIP``); a pattern or path that matches nothing becomes a failed result, so
    a typo is reported instead of silently processing nothing. Duplicates are dropped.
    """
    files: list[Path] = []
    misses: list[FileResult] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and f.suffix.lower() in SUFFIXES
                and f.suffix.lower() not in FOLDER_SKIP
            )
            if not found:
                misses.append(FileResult(str(item), "failed", error="folder holds no image files"))
            files += found
        elif p.exists():
            files.append(p)
        else:
            matched = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            matched = [m for m in matched if m.is_file()]
            if not matched:
                misses.append(FileResult(str(item), "failed", error="no such file"))
            files += matched
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, misses


class BatchRefused(ValueError):
    """A batch that must not start: it would write over its own inputs."""


def check_outdir_apart(items: Sequence[str | Path], outdir: str | Path) -> None:
    """Refuse an output folder that is one of the input folders (cheap: a face calls it
    before it loads a model; :func:`run_batch` again)."""
    out = Path(outdir).expanduser().resolve()
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir() and p.resolve() == out:
            raise BatchRefused(
                f"the output folder {outdir} is an input folder: its results would replace "
                "inputs of the same name and be read as inputs next time; choose another"
            )


def check_outputs_apart(
    items: Sequence[str | Path], files: Sequence[Path], planned: Iterable[Path], outdir: Path
) -> None:
    """Refuse a batch whose output folder is one of its input folders, or one of whose
    outputs is one of its inputs: ``--overwrite`` replaced a raw micrograph by its mask,
    and without it the input passed for its own finished output."""
    check_outdir_apart(items, outdir)
    inputs = {f.resolve() for f in files}
    for o in planned:
        if o.resolve() in inputs:
            raise BatchRefused(
                f"{o} would be written over the input of that name; choose another output folder"
            )


def output_is_complete(path: Path) -> bool:
    """True when ``path`` is a TIFF whose every page's data lies inside the file.

    An interrupted write leaves a file that is missing pages or whose last strips point
    past its end; such a file is redone on resume. Cheap: reads the headers only.
    """
    if not path.is_file():
        return False
    try:
        import tifffile

        from napari_temseg.io.tiff import tifffile_quiet

        size = path.stat().st_size
        with tifffile_quiet(), tifffile.TiffFile(path) as tf:
            if not tf.pages:
                return False
            for page in tf.pages:
                offsets, counts = page.dataoffsets, page.databytecounts
                if not offsets or any(o + c > size for o, c in zip(offsets, counts, strict=True)):
                    return False
                if any(c == 0 for c in counts):
                    return False
            series = tf.series[0]
            return series.size > 0
    except Exception:  # unreadable header: not complete
        return False


def attempt(
    process: Callable[[Path, str], list[Path]],
    path: Path,
    stem: str,
    target: Path | None,
    errors: tuple[type[BaseException], ...] = (Exception,),
    remote: bool = False,
) -> FileResult:
    """Run ``process(path, stem)`` once -> its result; an error in ``errors`` fails it.

    A failed file's half-written main output (``target``) is removed. Module-level so that
    a cluster worker can run it (``process`` must then be picklable, e.g. a ``FileJob``).
    Its warnings are warned again once the file is done; ``remote`` (on a cluster worker):
    they come back in the result instead (``said``, ``notes``), to be shown where the batch
    runs (:func:`show_again`), not as raw Python warnings on a worker's console.
    """
    t0 = time.perf_counter()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            outs = process(path, stem)
        r = FileResult(str(path), "done", [str(o) for o in outs])
        r.notes = [str(w.message) for w in caught if issubclass(w.category, ResultWarning)]
    except errors as exc:
        if target is not None and target.exists() and not output_is_complete(target):
            os.remove(target)  # never leave a half-written output behind
        r = FileResult(str(path), "failed", error=str(exc) or type(exc).__name__)
    finally:  # shown as they would have been, once the file is done
        for w in caught if not remote else ():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if remote:
        r.said = [
            str(w.message)
            for w in caught
            if issubclass(w.category, DataWarning) and not issubclass(w.category, ResultWarning)
        ]
    r.seconds = time.perf_counter() - t0
    return r


def show_again(r: FileResult) -> None:
    """Warn, where the batch runs, what a cluster worker's run of ``r`` noted."""
    for text in r.said:
        warnings.warn(text, DataWarning, stacklevel=2)
    for text in r.notes:
        warnings.warn(text, ResultWarning, stacklevel=2)


def run_batch(
    inputs: Sequence[str | Path],
    outdir: str | Path,
    process: Callable[[Path, str], list[Path]],
    *,
    outputs: Callable[[Path, str], list[Path]] | None = None,
    stale: Callable[[Path], str | None] | None = None,
    resume: bool = True,
    errors: tuple[type[BaseException], ...] = (Exception,),
    on_result: Callable[[FileResult], None] | None = None,
    client: Any = None,
) -> BatchReport:
    """Run ``process(input, stem) -> outputs`` over the expanded ``inputs``.

    ``stem`` is the input's own output stem (``naming.output_stems``: two inputs never share
    one). ``outputs(input, stem)`` names every output an input makes, the main one first;
    with ``resume`` an input all of whose outputs are complete is skipped (a file of
    several datasets killed after its first output is redone), unless ``stale(output)``
    says why one is not this run's result (another task or model wrote it): then that
    input fails, and the file is left as it is. A batch whose outputs would replace its
    inputs is refused before anything runs (:class:`BatchRefused`). An exception in
    ``errors`` marks that input failed and the batch goes on; anything else (a wrong
    model, Ctrl-C) stops it, with the summary of what was done still written. When no
    input exists at all nothing is written, not even the folder. ``on_result`` sees each
    result as it comes (the CLI prints it).

    Without ``client`` the files run one after the other in this process. With a
    ``dask.distributed`` client they run on its workers, one task per file (``process``
    must be picklable and the output folder shared); any error there marks only that
    file failed, and the summary lists the files in input order.
    """
    outdir = Path(outdir)
    files, results = expand_inputs(inputs)
    for r in results:
        if on_result:
            on_result(r)
    report = BatchReport(results)
    if not files:
        return report
    earlier = _earlier_notes(outdir)  # a skipped file keeps what its run noted
    stems = output_stems(files)
    plans = [
        outputs(path, stem) if outputs else [] for path, stem in zip(files, stems, strict=True)
    ]
    check_outputs_apart(inputs, files, (o for made in plans for o in made), outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[Path, str, Path | None]] = []
    try:
        for path, stem, made in zip(files, stems, plans, strict=True):
            target = made[0] if made else None
            if resume and made and all(output_is_complete(o) for o in made):
                why = next(((o, w) for o in made if (w := stale and stale(o))), None)
                if why is None:
                    notes = earlier.get(str(path.resolve()), [])
                    r = FileResult(str(path), "skipped", [str(o) for o in made], notes=notes)
                else:
                    error = f"{why[0]} {why[1]}: choose another output folder, or --overwrite"
                    r = FileResult(str(path), "failed", error=error)
                results.append(r)
                if on_result:
                    on_result(r)
            elif client is None:
                r = attempt(process, path, stem, target, errors)
                results.append(r)
                if on_result:
                    on_result(r)
            else:
                todo.append((path, stem, target))
        if todo:
            _run_on_cluster(client, process, todo, errors, results, on_result)
            order = {str(p): i for i, p in enumerate(files)}
            results.sort(key=lambda r: order.get(r.input, -1))
    finally:  # every input has its entry, also when the batch was stopped before it
        reached = {r.input for r in results}
        results += [FileResult(str(f), "stopped") for f in files if str(f) not in reached]
        report.summary = report.write(outdir)[0]
    return report


def _earlier_notes(outdir: Path) -> dict[str, list[str]]:
    """input (resolved) -> notes of the summary an earlier run left in ``outdir`` (empty if none or
    unreadable): resumed, a file whose run was noted as doubtful ("100 % of the pixels
    are 'support'") was listed as skipped with no note, and the doubt was lost."""
    try:
        files = json.loads((outdir / "summary.json").read_text())["files"]
        return {
            str(Path(f["input"]).resolve()): [str(n) for n in f.get("notes") or []] for f in files
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _run_on_cluster(
    client: Any,
    process: Callable[[Path, str], list[Path]],
    todo: list[tuple[Path, str, Path | None]],
    errors: tuple[type[BaseException], ...],
    results: list[FileResult],
    on_result: Callable[[FileResult], None] | None,
) -> None:
    """One task per file on the client's workers; results as they finish."""
    from distributed import as_completed

    futures = {
        client.submit(attempt, process, path, stem, target, errors, True, pure=False): path
        for path, stem, target in todo
    }
    try:
        for fut in as_completed(list(futures)):
            path = futures[fut]
            try:
                r = fut.result()
            except Exception as exc:  # a worker died or raised something unexpected
                msg = str(exc) or type(exc).__name__
                r = FileResult(str(path), "failed", error=f"on the cluster: {msg}")
            show_again(r)
            results.append(r)
            if on_result:
                on_result(r)
    except BaseException:
        client.cancel(list(futures))
        raise
