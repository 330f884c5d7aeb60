"""Outputs that cannot be written are refused before any work, and work is never lost
(issue 14): one-line errors for bad output paths, a rescue copy when a run's own output
fails at the end, atomic checkpoint writes that leave no temporary files behind."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from napari_temseg.cli import main
from napari_temseg.engine.finetune import FinetuneConfig
from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.io import write_image, write_labels
from napari_temseg.io.outputs import OutputError, check_output_file, check_output_folder
from napari_temseg.models import CheckpointSaveError, UNet, load_checkpoint, save_checkpoint
from napari_temseg.pipeline.training import finetune_files
from napari_temseg.synth import simulate

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TINY = FinetuneConfig(steps=2, batch_size=2, patch=32, base=4, depth=2, device="cpu")


@pytest.fixture
def files(tmp_path):
    s = simulate("stem", 64, pixel_size_nm=0.2, dose=100, seed=3)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=12, seed=0)
    write_image(tmp_path / "img.tif", s.noisy.astype(np.float32), scale=(0.2, 0.2))
    write_labels(tmp_path / "lab.tif", strokes, scale=(0.2, 0.2))
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("temseg: error: "), err
    return lines[0]


def _argvs(d):
    img, lab = str(d / "img.tif"), str(d / "lab.tif")
    ft = ["finetune", "--image", img, "--labels", lab, "--init", "none", "--steps", "2"]
    return {
        "denoise": lambda out: ["denoise", img, "-o", out, "--device", "cpu"],
        "segment": lambda out: ["segment", img, "--model", "x", "-o", out],
        "synth": lambda out: ["synth", "-o", out, "--size", "64"],
        "demo": lambda out: ["demo", "-o", out],
        "measure": lambda out: ["measure", lab, "-o", out],
        "pretrain": lambda out: ["pretrain", img, "-o", out, "--steps", "2", "--init", "scratch"],
        "finetune": lambda out: [*ft, "--patch", "32", "-o", out],
        "export": lambda out: ["export-bioimageio", "stem-denoise", out, "--no-validate"],
        "import": lambda out: ["import-bioimageio", str(d / "missing.zip"), out],
    }


@pytest.mark.parametrize("command", ["denoise", "segment", "synth", "demo"])
@pytest.mark.parametrize(
    ("where", "words"),
    [("afile", "is a file"), ("afile/sub", "afile is a file"), ("/proc/x", "cannot write")],
)
def test_batch_output_folders_that_cannot_be_written(files, capsys, command, where, words):
    out = where if where.startswith("/") else str(files / where)
    assert main(_argvs(files)[command](out)) == 1
    assert words in _error_line(capsys)


@pytest.mark.parametrize("command", ["measure", "pretrain", "finetune", "export", "import"])
@pytest.mark.parametrize(
    ("where", "words"),
    [("folder", "is a folder"), ("afile/m", "afile is a file"), ("/proc/x/m", "cannot write")],
)
def test_output_files_that_cannot_be_written(files, capsys, command, where, words):
    (files / "folder").mkdir()
    (files / "folder.zip").mkdir()  # export adds .zip
    out = where if where.startswith("/") else str(files / where)
    force = [] if command == "measure" else ["--force"]  # not even --force writes there
    assert main([*_argvs(files)[command](out), *force]) == 1
    assert words in _error_line(capsys)
    assert sorted(p.name for p in (files / "folder").iterdir()) == []


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_training(files, capsys):
    ro = files / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_output_folder(ro)
        assert main(_argvs(files)["finetune"](str(ro / "m.safetensors"))) == 1
        assert "cannot write" in _error_line(capsys)
    finally:
        ro.chmod(0o755)


def test_existing_outputs_need_force_and_say_so(files, capsys):
    model = files / "m.safetensors"
    model.write_bytes(b"mine")
    assert main(_argvs(files)["finetune"](str(model))) == 1
    assert "pass --force" in _error_line(capsys)
    assert model.read_bytes() == b"mine"
    with pytest.raises(FileExistsError, match="already exists"):
        check_output_file(model)


def test_a_failure_at_the_end_of_training_saves_the_model_elsewhere(files, monkeypatch):
    """The output folder disappears while training runs: the model goes to the rescue
    folder and the error says where, instead of the training being lost."""
    monkeypatch.setenv("HOME", str(files / "home"))
    out = files / "models" / "seg.safetensors"
    out.parent.mkdir()

    def pull_the_folder(ev):
        if out.parent.is_dir():
            shutil.rmtree(out.parent)
            out.parent.write_text("now a file")  # not writable for anyone, root included

    with pytest.raises(CheckpointSaveError, match="saved to") as exc:
        finetune_files(
            [files / "img.tif"], [files / "lab.tif"], out, init="none", config=TINY,
            steps=2, device="cpu", progress=pull_the_folder,
        )  # fmt: skip
    rescued = exc.value.rescued
    assert rescued is not None and rescued.parent == files / "home" / "napari-temseg-rescued"
    _, meta = load_checkpoint(rescued)
    assert meta["task"] == "segment" and str(rescued) in str(exc.value)


def test_checkpoints_are_written_atomically_under_our_own_name(tmp_path):
    """A kill during a save left safetensors' hidden ``.tmpXXXXXX`` (never removed) and
    ``--force`` onto a folder left ``MODEL.tmp``; now the only temporary name is ours,
    and the next save of the same file clears a leftover of a killed one."""
    net = UNet(1, 1, base=4, depth=2)
    path = tmp_path / "m.safetensors"
    (tmp_path / ".m.safetensors.partial").write_bytes(b"killed mid-save")
    (tmp_path / "m.safetensors.tmp").write_bytes(b"left by an older version")
    save_checkpoint(path, net, {"task": "denoise"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert load_checkpoint(path)[1]["task"] == "denoise"
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(IsADirectoryError):
        save_checkpoint(tmp_path / "dir.safetensors", net, {"task": "denoise"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.safetensors", "m.safetensors"]
    assert path.stat().st_mode & 0o044  # ordinary permissions, not mkstemp's 0600


@pytest.mark.parametrize("command", ["denoise", "measure"])
def test_a_spectrum_is_refused_naming_the_file_once(testdata, tmp_path, capsys, command):
    spectrum = str(testdata / "ncem_08_carbon.dm3")
    out = str(tmp_path / ("out" if command == "denoise" else "t.csv"))
    assert main([command, spectrum, "-o", out]) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("temseg: error: "))
    assert line.count("ncem_08_carbon.dm3") == 1 and "spectrum" in line
