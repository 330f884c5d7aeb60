"""Test-time augmentation: a segmenter averaged over the eight rotations and mirrorings."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from conftest import train_segmenter_file
from napari_temseg.cli import main
from napari_temseg.engine.segment import DihedralMean, load_segmenter, segment, with_tta
from napari_temseg.pipeline.files import FileJob
from napari_temseg.synth import simulate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frame():
    return simulate("stem", 96, pixel_size_nm=0.1, dose=100, seed=3).noisy.astype(np.float32)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> str:
    """A small segmenter trained long enough to have opinions (a 3-step one answers 0.5
    everywhere, in every orientation)."""
    return train_segmenter_file(
        tmp_path_factory.mktemp("tta"),
        96,
        steps=30,
        batch_size=4,
        patch=64,
        base=8,
        depth=3,
        device="cpu",
    )


def test_the_average_is_the_same_for_every_orientation_of_the_frame(segmenter, frame):
    """What the mean of eight orientations says cannot depend on how the frame is turned;
    a single pass's answer does (so the wrapper is not a no-op)."""
    model = load_segmenter(segmenter)
    tta = with_tta(model)
    assert isinstance(tta[0], DihedralMean) and tta[1] is model[1]
    assert with_tta(tta)[0] is tta[0]  # never wrapped twice
    _, p = segment(frame, tta, device="cpu", tile=128, probabilities=True)
    _, turned = segment(np.rot90(frame).copy(), tta, device="cpu", tile=128, probabilities=True)
    _, mirrored = segment(frame[:, ::-1].copy(), tta, device="cpu", tile=128, probabilities=True)
    np.testing.assert_allclose(np.rot90(turned, -1, (-2, -1)), p, atol=1e-5)
    np.testing.assert_allclose(mirrored[..., ::-1], p, atol=1e-5)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    _, one = segment(frame, model, device="cpu", tile=128, probabilities=True)
    _, one_turned = segment(
        np.rot90(frame).copy(), model, device="cpu", tile=128, probabilities=True
    )
    assert np.abs(np.rot90(one_turned, -1, (-2, -1)) - one).max() > 1e-3
    assert np.abs(p - one).max() > 1e-3


def test_the_average_is_the_mean_of_the_eight_passes(segmenter, frame):
    """Checked against the eight passes done by hand on whole frames (one tile each)."""
    model = load_segmenter(segmenter)
    _, p = segment(frame, with_tta(model), device="cpu", tile=128, probabilities=True)
    passes = []
    for turns in range(4):
        for mirror in (False, True):
            x = np.rot90(frame, turns)
            x = x[:, ::-1] if mirror else x
            q = segment(x.copy(), model, device="cpu", tile=128, probabilities=True)[1]
            q = q[..., ::-1] if mirror else q
            passes.append(np.rot90(q, -turns, (-2, -1)))
    np.testing.assert_allclose(p, np.mean(passes, axis=0), atol=1e-5)


def test_only_segmentation_jobs_take_it(segmenter, tmp_path):
    job = FileJob("segment", segmenter, str(tmp_path), device="cpu", tta=True)
    assert isinstance(job.load()[0], DihedralMean)
    assert not isinstance(FileJob("segment", segmenter, str(tmp_path)).load()[0], DihedralMean)
    with pytest.raises(ValueError, match="segmentation setting"):
        FileJob("denoise", None, str(tmp_path), tta=True)


def test_segment_and_measure_from_the_command_line(segmenter, frame, tmp_path, capsys):
    """`temseg segment --tta` writes the averaged masks; `temseg measure --tta` without a
    segmenter to average is refused in one line."""
    tifffile.imwrite(tmp_path / "f.tif", frame)
    argv = ["segment", str(tmp_path / "f.tif"), "--model", segmenter, "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "tta"), "--tta"]) == 0
    got = tifffile.imread(tmp_path / "tta" / "f.tif")
    want = segment(frame, with_tta(load_segmenter(segmenter)), device="cpu")
    assert np.array_equal(got, want)
    capsys.readouterr()
    rc = main(["measure", str(tmp_path / "tta" / "f.tif"), "-o", str(tmp_path / "t.csv"), "--tta"])
    err = capsys.readouterr().err
    assert rc == 1 and "--tta averages the --confirm-with segmenter" in err
    assert "Traceback" not in err
