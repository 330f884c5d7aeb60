"""scripts/train_bundled_denoisers.py: what a training stage is told about its data lands in
the weights' header, where adaptation and the docks read it back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from napari_temseg.models.checkpoint import read_checkpoint_meta
from napari_temseg.synth import PIXEL_SIZE_RANGE_NM

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_bundled_denoisers.py"
TINY = [
    "--steps", "2", "--batch", "2", "--patch", "32", "--image-size", "64", "--base", "4",
    "--depth", "2", "--val-size", "2", "--val-every", "1", "--warmup", "1", "--threads", "1",
]  # fmt: skip


def _train():
    return _module().main


def test_a_pixel_range_and_a_low_dose_share_are_trained_on_and_recorded(tmp_path):
    out = tmp_path / "out"
    argv = ["--kind", "hrtem", *TINY, "--pixel-range", "0.2", "0.6", "--out", str(out)]
    argv += ["--low-dose", "0.5", "10"]
    assert _train()([*argv, "--work", str(tmp_path / "w")]) == 0
    meta = read_checkpoint_meta(out / "hrtem-denoise.safetensors")
    assert meta["pixel_size_nm_range"] == [0.2, 0.6]
    assert meta["training_data"]["pixel_size_range_nm"] == [0.2, 0.6]
    assert meta["training_data"]["low_dose_share_max"] == [0.5, 10.0]
    assert "--pixel-range 0.2 0.6" in meta["training"]["command"]


def test_without_a_pixel_range_the_simulators_own_is_recorded(tmp_path):
    out = tmp_path / "out"
    argv = ["--kind", "stem", *TINY, "--out", str(out), "--work", str(tmp_path / "w")]
    assert _train()(argv) == 0
    meta = read_checkpoint_meta(out / "stem-denoise.safetensors")
    assert meta["pixel_size_nm_range"] == list(PIXEL_SIZE_RANGE_NM["stem"])
    assert "low_dose_share_max" not in meta["training_data"]


@pytest.mark.parametrize("bad", [["0.5", "0.2"], ["0", "0.3"], ["0.1", "500"]])
def test_a_reversed_or_impossible_pixel_range_is_refused_in_one_line(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _train()(["--kind", "hrtem", *TINY, "--pixel-range", *bad, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        f"--pixel-range must be 0 < LO <= HI <= 100 nm, got {[float(b) for b in bad]}"
    )
    assert not list(tmp_path.iterdir())


def test_a_low_dose_share_outside_zero_to_one_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _train()(["--kind", "hrtem", *TINY, "--low-dose", "1.5", "10", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--low-dose must be a share in [0, 1]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _module():
    spec = importlib.util.spec_from_file_location("train_bundled_denoisers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distilled_targets_mix_the_clean_image_with_the_teachers_average():
    import numpy as np
    import torch

    from napari_temseg.engine import simulated_source
    from napari_temseg.engine.tta import with_tta
    from napari_temseg.models import UNet

    torch.manual_seed(0)
    teacher = (UNet(base=4, depth=2, residual=True).eval(), {"task": "denoise"})
    src = simulated_source("hrtem", size=64, patch=32, patches_per_image=2)
    plain_x, clean = src.sample(3, np.random.default_rng(1))
    mod = _module()
    distilled = mod.DistilledSource(src, teacher, 0.25)
    xs, ys = distilled.sample(3, np.random.default_rng(1))
    np.testing.assert_array_equal(xs, plain_x)  # the inputs are untouched
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=distilled.bf16):
        avg = with_tta(teacher, probabilities=False)[0](torch.from_numpy(xs)).float().numpy()
    np.testing.assert_allclose(ys, 0.75 * clean + 0.25 * avg, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ys, clean, atol=1e-3)  # the teacher moved the targets


def test_a_distilled_stage_trains_on_the_teachers_targets_and_records_its_share(tmp_path):
    first, out = tmp_path / "first", tmp_path / "out"
    assert _train()(["--kind", "hrtem", *TINY, "--out", str(first), "--work", str(tmp_path)]) == 0
    init = str(first / "hrtem-denoise.safetensors")
    mod, drawn = _module(), []

    class Counted(mod.DistilledSource):
        def sample(self, n, rng):
            drawn.append(n)
            return super().sample(n, rng)

    mod.DistilledSource = Counted
    argv = ["--kind", "hrtem", *TINY, "--init", init, "--distill", "0.5", "--out", str(out)]
    assert mod.main([*argv, "--work", str(tmp_path / "w")]) == 0
    assert drawn == [2, 2]  # every training batch (2 steps of 2), and not the validation set
    meta = read_checkpoint_meta(out / "hrtem-denoise.safetensors")
    assert meta["training"]["distill"] == 0.5
    assert "--distill 0.5" in meta["training"]["command"]


@pytest.mark.parametrize("argv", [["--distill", "0.5"], ["--distill", "1.5", "--init", "x"]])
def test_a_distillation_without_a_start_or_outside_zero_to_one_is_refused(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        _train()(["--kind", "hrtem", *TINY, *argv, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--distill must be in [0, 1] and needs --init" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_resume_under_other_settings_is_refused_in_one_line(tmp_path, capsys):
    """The state must not continue under another loss, decay share or distillation: the
    result would be a mix that no recorded command makes. How long it runs may change."""
    work, out = tmp_path / "w", tmp_path / "out"
    argv = ["--kind", "stem", *TINY, "--checkpoint-every", "1", "--work", str(work)]
    argv += ["--detector-decay", "0.5", "--out", str(out)]
    assert _train()(argv) == 0
    capsys.readouterr()
    assert _train()([*argv, "--detector-decay", "0.9", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "detector_decay.probability=0.5" in err
    assert "detector_decay.probability=0.9" in err
    assert _train()([*argv, "--loss", "l2", "--resume"]) == 2
    assert "loss: 'l1' there, 'l2' now" in capsys.readouterr().err
    assert _train()([*argv, "--steps", "3", "--resume"]) == 0  # to step 3 of 3
    assert read_checkpoint_meta(out / "stem-denoise.safetensors")["training"]["steps"] == 3
