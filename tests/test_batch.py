"""Batch runs: folders and globs, resume, failure isolation and the summary (issue 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_temseg.batch import expand_inputs, output_is_complete, run_batch
from napari_temseg.cli import main
from napari_temseg.io import write_image


def _images(folder, n=2, size=64):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"scan_{i}.tif"
        write_image(p, rng.poisson(20, (size, size)).astype(np.float32), scale=(0.1, 0.1))
        paths.append(p)
    return paths


def test_expand_folders_globs_and_misses(tmp_path):
    a, b = _images(tmp_path / "data")
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "mask.png").write_bytes(b"")
    files, misses = expand_inputs([tmp_path / "data", str(tmp_path / "data" / "scan_*.tif")])
    assert files == [a, b]  # the folder and the pattern name the same two: no duplicates
    assert misses == []
    files, misses = expand_inputs([tmp_path / "nothing_*.dm4", tmp_path / "empty_folder"])
    assert files == [] and [m.error for m in misses] == ["no such file", "no such file"]
    (tmp_path / "empty").mkdir()
    _, misses = expand_inputs([tmp_path / "empty"])
    assert misses[0].status == "failed" and "no image" in misses[0].error


def test_complete_outputs_are_told_from_truncated_ones(tmp_path):
    (p,) = _images(tmp_path, n=1, size=256)
    assert output_is_complete(p)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert not output_is_complete(cut)
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    assert not output_is_complete(tmp_path / "junk.tif")
    assert not output_is_complete(tmp_path / "missing.tif")


def test_an_unexpected_error_stops_the_batch_but_keeps_the_summary(tmp_path):
    files = _images(tmp_path / "in")

    def process(path):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run_batch(files, tmp_path / "out", process, errors=(ValueError,))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 0, "failed": 0}


def test_denoise_batch_isolates_failures_and_resumes(tmp_path, capsys):
    a, b = _images(tmp_path / "in")
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 50)
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]
    argv += ["--tile", "64", "--overlap", "8"]
    assert main(argv) == 1  # one input failed ...
    captured = capsys.readouterr()
    assert "broken.tif" in captured.err and "Traceback" not in captured.err
    for p in (a, b):  # ... and the others were still written, calibrated
        with tifffile.TiffFile(out / p.name) as tf:
            assert tf.series[0].shape == (64, 64) and tf.imagej_metadata["unit"] == "nm"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert (out / "summary.csv").read_text().count("\n") == 4

    # options that would fail every file are refused before the batch starts
    assert main([*argv[:-1], "32"]) == 1
    assert "--overlap" in capsys.readouterr().err

    # a second run skips what is complete and redoes a truncated output
    before = (out / a.name).stat().st_mtime_ns
    data = (out / b.name).read_bytes()
    (out / b.name).write_bytes(data[: len(data) - 2000])
    assert main(argv) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 1, "failed": 1}
    assert (out / a.name).stat().st_mtime_ns == before
    assert output_is_complete(out / b.name)
    assert "skipped" in capsys.readouterr().out

    # --overwrite redoes everything
    assert main([*argv, "--overwrite"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
