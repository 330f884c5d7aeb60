"""Batch runs: folders and globs, resume, failure isolation and the summary (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_temseg.cli import main
from napari_temseg.io import write_image
from napari_temseg.pipeline.batch import expand_inputs, output_is_complete, run_batch


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

    def process(path, stem):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run_batch(files, tmp_path / "out", process, errors=(ValueError,))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 0, "failed": 0, "stopped": 2}


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


def test_stacks_stream_to_disk_frame_by_frame(tmp_path, monkeypatch):
    """A stack is denoised/segmented one frame at a time and written as it goes; the file
    is the same as the whole-stack result, calibrated, and a failure mid-stack leaves no
    partial output."""
    from napari_temseg.engine import denoise
    from napari_temseg.engine.finetune import FinetuneConfig, finetune, save_segmenter
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import read
    from napari_temseg.synth import simulate

    frames = [simulate("stem", 64, pixel_size_nm=0.1, dose=100, seed=s) for s in (1, 2, 3)]
    stack = np.stack([f.noisy for f in frames])
    write_image(tmp_path / "in" / "stack.tif", stack, scale=(1.0, 0.1, 0.1))
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--tile", "64", "--overlap", "8"]) == 0
    (back,) = read(out / "stack.tif")
    # the command's default: two orientations
    expected = denoise(stack, "stem-denoise", device="cpu", tile=64, overlap=8, tta=2)
    np.testing.assert_allclose(np.asarray(back.data), expected, rtol=1e-5, atol=1e-3)
    assert back.scale == pytest.approx((1.0, 0.1, 0.1))

    strokes = scribbles_from_mask(frames[0].recorded_semantic, per_class=3, length=16, seed=0)
    result = finetune(
        [frames[0].noisy],
        [strokes],
        init="none",
        config=FinetuneConfig(steps=3, batch_size=2, patch=32, base=4, depth=2, device="cpu"),
    )
    model = save_segmenter(tmp_path / "seg.safetensors", result.model, result.meta)
    masks = tmp_path / "masks"
    assert main(["segment", str(tmp_path / "in"), "--model", str(model), "-o", str(masks)]) == 0
    (labels,) = read(masks / "stack.tif")
    assert labels.shape == stack.shape and set(np.unique(np.asarray(labels.data))) <= {1, 2}

    # a frame that fails mid-stack: the input fails, nothing half-written is left
    from napari_temseg.pipeline import predict_files as segment_mod  # where files call it

    calls = []
    real = segment_mod.segment

    def flaky(data, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure on frame 2")
        return real(data, *a, **kw)

    monkeypatch.setattr(segment_mod, "segment", flaky)
    again = tmp_path / "again"
    assert main(["segment", str(tmp_path / "in"), "--model", str(model), "-o", str(again)]) == 1
    assert sorted(p.name for p in again.iterdir()) == ["summary.csv", "summary.json"]


def test_a_file_without_an_image_fails_alike_in_every_command(tmp_path, capsys):
    """denoise, segment and measure share one check (io.read_images) and one message."""
    import numpy as np

    from napari_temseg import cli
    from napari_temseg.engine.strokes import SegmentError
    from napari_temseg.io import NotAnImageError, read_images
    from napari_temseg.pipeline.predict_files import first_image

    np.save(tmp_path / "eels.npy", np.arange(100.0))
    with pytest.raises(NotAnImageError, match=r"holds no image to process \(found: spectrum\)"):
        read_images(tmp_path / "eels.npy")
    with pytest.raises(SegmentError, match="holds no image to process"):
        first_image(tmp_path / "eels.npy")
    for argv in (
        ["denoise", str(tmp_path / "eels.npy"), "-o", str(tmp_path / "d"), "--device", "cpu"],
        ["measure", str(tmp_path / "eels.npy"), "-o", str(tmp_path / "t.csv")],
    ):
        assert cli.main(argv) == 1
        assert "holds no image to process (found: spectrum)" in capsys.readouterr().err


# --------------------------------------------------------------------------- issue 14


def test_inputs_sharing_a_stem_each_get_their_own_output(tmp_path, capsys):
    """``x.tif`` and ``x.npy`` used to map to one ``x.tif``: the second was skipped as
    complete or silently replaced the first."""
    rng = np.random.default_rng(1)
    a, b = rng.poisson(20, (2, 48, 48)).astype(np.float32)
    write_image(tmp_path / "in" / "x.tif", a, scale=(0.1, 0.1))
    np.save(tmp_path / "in" / "x.npy", b)
    write_image(tmp_path / "in" / "y.tif", b, scale=(0.1, 0.1))
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]
    argv += ["--tile", "48", "--overlap", "8"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["x.npy.tif", "x.tif.tif", "y.tif"]  # a stem of its own keeps the rule
    assert not np.allclose(tifffile.imread(out / "x.npy.tif"), tifffile.imread(out / "x.tif.tif"))
    assert main(argv) == 0  # resume: both are complete, each on its own account
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 3, "failed": 0}


def test_output_stems_are_distinct_whatever_the_names():
    from pathlib import Path

    from napari_temseg.pipeline.naming import output_stems

    files = [Path(p) for p in ("a/x.dm3", "a/x.dm4", "b/x.dm3", "a/X.tif", "a/y.tif", "x.dm3")]
    stems = output_stems(files)
    assert stems[4] == "y"
    assert len({s.lower() for s in stems}) == len(files)


def test_resume_checks_every_output_of_a_file(tmp_path, capsys):
    """A file of two images killed after its first output (its second still a
    ``.partial``) used to be reported "already complete"; it is redone now."""
    rng = np.random.default_rng(2)
    (tmp_path / "in").mkdir()
    with tifffile.TiffWriter(tmp_path / "in" / "two.tif") as tw:
        tw.write(rng.poisson(20, (48, 48)).astype(np.float32))
        tw.write(rng.poisson(20, (40, 40)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]
    argv += ["--tile", "40", "--overlap", "8"]
    assert main(argv) == 0
    second = out / "two_1.tif"
    assert tifffile.imread(second).shape == (40, 40)
    second.rename(out / ".two_1.tif.partial")  # what a kill during its write leaves
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert tifffile.imread(second).shape == (40, 40)
    assert not (out / ".two_1.tif.partial").exists()
    assert main(argv) == 0
    assert "two_1.tif are complete" in capsys.readouterr().out  # now both are


def test_a_missing_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "nothere.tif"), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "no such file" in captured.err and "nothing written" in captured.out
    assert not out.exists()


def test_a_batch_never_writes_over_its_inputs(tmp_path, capsys):
    """Output folder = input folder: --overwrite replaced the raw frames by their results,
    and without it each input passed for its own finished output."""
    files = _images(tmp_path / "raw")
    before = [p.read_bytes() for p in files]
    for extra in ([], ["--overwrite"]):
        argv = ["denoise", str(tmp_path / "raw"), "-o", str(tmp_path / "raw"), *extra]
        assert main([*argv, "--device", "cpu", "--tile", "64", "--overlap", "8"]) == 1
        said = capsys.readouterr()
        err = said.err.strip()
        assert err.endswith(
            "is an input folder: its results would replace inputs of the "
            "same name and be read as inputs next time; choose another"
        )
        assert "\n" not in err and "denoising with" not in said.out  # before the model loads
    # a single file named into its own folder
    argv = ["denoise", str(files[0]), "-o", str(tmp_path / "raw"), "--overwrite"]
    assert main([*argv, "--device", "cpu", "--tile", "64", "--overlap", "8"]) == 1
    assert "would be written over the input of that name" in capsys.readouterr().err
    assert [p.read_bytes() for p in files] == before
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["scan_0.tif", "scan_1.tif"]


def test_resume_skips_only_what_this_run_would_have_made(tmp_path, capsys, tiny_segmenter):
    """A complete TIFF of the right name from another command or model is no finished
    output: the file fails in one line and is left as it is, not skipped."""
    files = _images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    common = ["-o", str(out), "--device", "cpu", "--tile", "64", "--overlap", "8"]
    assert main(["denoise", str(files[0]), *common, "--orientations", "1"]) == 0
    made = (out / "scan_0.tif").read_bytes()
    capsys.readouterr()
    assert main(["segment", str(files[0]), *common, "--model", tiny_segmenter]) == 1
    assert "out/scan_0.tif holds a denoised image, not this run's mask" in capsys.readouterr().err
    assert main(["denoise", str(files[0]), *common]) == 1  # two orientations by default
    assert "was denoised with 1 orientation(s), not 2" in capsys.readouterr().err
    assert main(["denoise", str(files[0]), *common, "--model", "hrtem-denoise"]) == 1
    assert "was denoised with stem-denoise, not hrtem-denoise" in capsys.readouterr().err
    assert (out / "scan_0.tif").read_bytes() == made
    assert main(["denoise", str(files[0]), *common, "--orientations", "1"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert main(["segment", str(files[0]), *common, "--model", tiny_segmenter, "--overwrite"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 0}
    # and a segment batch resumed as it ran skips its own masks (the model, given by
    # another path to the same file, is the same model)
    same = str(
        Path(tiny_segmenter).parent
        / ".."
        / Path(tiny_segmenter).parent.name
        / Path(tiny_segmenter).name
    )
    assert main(["segment", str(files[0]), *common, "--model", same]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 0}


def test_a_stopped_batch_lists_every_input_and_a_resumed_one_keeps_its_warnings(tmp_path):
    """Stopped, the summary listed only what had run; resumed, a file whose result was
    doubted was listed as skipped with no note."""
    import warnings

    from napari_temseg.io import ResultWarning

    files = _images(tmp_path / "in", n=3)
    out = tmp_path / "out"

    def outputs(path, stem):
        return [out / f"{stem}.tif"]

    def process(path, stem):
        if path.name == "scan_2.tif":
            raise KeyboardInterrupt
        if path.name == "scan_0.tif":
            warnings.warn(f"{path.name}: 100.0% of the pixels are 'support'", ResultWarning, 2)
        write_image(out / f"{stem}.tif", np.zeros((8, 8), np.float32))
        return [out / f"{stem}.tif"]

    with warnings.catch_warnings(), pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("ignore", ResultWarning)
        run_batch(files, out, process, outputs=outputs)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["status"] for f in summary["files"]] == ["done", "done", "stopped"]
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0, "stopped": 1}
    noted = summary["files"][0]["notes"]
    assert noted == ["scan_0.tif: 100.0% of the pixels are 'support'"]

    report = run_batch(files[:2], out, process, outputs=outputs)
    assert [r.status for r in report.results] == ["skipped", "skipped"]
    assert report.results[0].notes == noted and report.results[1].notes == []
    assert "support" in (out / "summary.csv").read_text()
