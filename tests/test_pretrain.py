"""Pretraining on the user's own images: pairs, both methods, the CLI function, the child process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_temseg.engine.pretrain import (
    PretrainConfig,
    estimate_gain,
    own_image_sources,
    run_pretrain,
)
from napari_temseg.models import load_model
from napari_temseg.pipeline.training import pretrain_files
from napari_temseg.synth import DistortionConfig, simulate

TINY = {"base": 4, "depth": 2, "val_size": 4, "val_every": 3, "batch_size": 2, "patch": 32}


def _image(seed: int, shape=(80, 80), dose=40.0, gain=1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = dose * (1.2 + np.sin(xx / 3.0) * np.cos(yy / 4.0))
    return (rng.poisson(lam) * gain + 100).astype(np.float32)


@pytest.mark.parametrize(("kind", "dose"), [("stem", 5.0), ("stem", 200.0), ("hrtem", 50.0)])
def test_gain_estimate_recovers_dose_of_simulated_frames(kind, dose):
    s = simulate(kind, 256, dose=dose, seed=3, distortions=DistortionConfig.poisson_only())
    true_gain = s.params["distortions"]["gain"]["adu_per_e"]
    est = estimate_gain(s.noisy)
    assert est.fitted
    assert 0.5 < est.gain / true_gain < 1.5
    assert 0.5 < est.dose / (s.clean.mean() / true_gain) < 2.0


def test_gain_estimate_falls_back_on_noise_free_images():
    smooth = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    est = estimate_gain(smooth)
    assert not est.fitted and est.dose == pytest.approx(100, rel=0.01)


def test_pairs_are_lower_dose_copies_with_right_shapes():
    img = _image(0, (96, 128), dose=50.0, gain=3.0)
    train, val = own_image_sources([img, img[None].repeat(2, 0)], patch=32, names=["x", "y"])
    x, y = train.sample(16, np.random.default_rng(1))
    assert x.shape == y.shape == (16, 1, 32, 32) and x.dtype == np.float32
    # x = Poisson(f * e) / f with f <= 0.5 around the target e: unbiased, and its added
    # noise (variance e / f) at least twice the target's own shot noise (variance e)
    r = y[..., 1:-1, 1:-1] - 0.25 * (
        y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:]
    )
    own_noise = float(np.var(r)) / 1.25
    assert abs(float(np.mean(x - y))) < 0.02
    assert float(np.var(x - y)) > 1.5 * own_noise
    desc = train.describe()
    assert desc["frames"] == 3 and desc["files"] == ["x", "y"]
    own = desc["image_dose_e_per_px"][0]
    assert 25 < own < 120  # about 50 e/px (1.2 x 40 on average would be exactly 60)
    assert desc["copy_dose_fraction"][1] < 1  # copies always have fewer electrons
    vx, _ = val.sample(4, np.random.default_rng(2))
    assert vx.shape == (4, 1, 32, 32)


def test_copy_noise_matches_the_lower_dose():
    """A flat 400 e/px frame copied at 10 % of its dose has Poisson noise of a 40 e/px frame."""
    rng = np.random.default_rng(0)
    flat = rng.poisson(400, size=(256, 256)).astype(np.float32)
    from napari_temseg.engine.pretrain import PoissonPairs

    est = estimate_gain(flat)
    pairs = PoissonPairs([flat], [est], (0.1, 0.1000001), intensity_range=(1.0, 1.0000001))
    noisy, clean = pairs(np.random.default_rng(1))
    rel = np.std(noisy - clean) / np.mean(clean)
    assert rel == pytest.approx(math.sqrt(1 / 40 - 1 / 400 + 1 / 400), rel=0.15)


def test_seeds_reproduce():
    img = _image(0)
    a = own_image_sources([img], patch=32)[0].sample(4, np.random.default_rng(5))
    b = own_image_sources([img], patch=32)[0].sample(4, np.random.default_rng(5))
    c = own_image_sources([img], patch=32)[0].sample(4, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_nan_pixels_are_filled_and_a_frame_of_no_data_is_refused():
    """A few NaN pixels made every noisy copy NaN ("lam value too large")."""
    img = _image(0, (96, 96))
    holed = img.copy()
    holed[10:20, 30:40] = np.nan
    train, _ = own_image_sources([holed], patch=32, names=["holed.tif"])
    x, y = train.sample(64, np.random.default_rng(1))
    assert np.isfinite(x).all() and np.isfinite(y).all()
    plain = own_image_sources([img], patch=32)[0].describe()["image_dose_e_per_px"]
    assert train.describe()["image_dose_e_per_px"] == pytest.approx(plain, rel=0.1)
    stack = np.stack([img, np.full_like(img, np.nan)])
    with pytest.raises(ValueError, match=r"^s.tif frame 2 has no finite pixel value"):
        own_image_sources([stack], patch=32, names=["s.tif"])


def test_clear_errors():
    with pytest.raises(ValueError, match="smaller than the patch size"):
        own_image_sources([np.zeros((20, 200), np.float32)], patch=32)
    with pytest.raises(ValueError, match="RGB"):
        own_image_sources([np.zeros((64, 64, 3), np.uint8)], patch=32)
    with pytest.raises(ValueError, match="unknown method"):
        PretrainConfig(method="diffusion")


@pytest.mark.parametrize("method", ["poisson", "pix2pix"])
def test_both_methods_train_and_save_a_denoiser(method, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / f"{method}.safetensors"
    cfg = PretrainConfig(
        method=method,
        steps=6,
        init="scratch",
        device="cpu",
        output=str(out),
        preview_every_s=0,
        **TINY,
    )
    events = []
    result = run_pretrain([_image(0), _image(1, (72, 96))], cfg, ["a", "b"], events.append)
    assert result.path == out and result.steps_done == 6 and not result.stopped
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 6 and all(math.isfinite(e.loss) for e in steps)
    if method == "pix2pix":  # adversarial from step 1 at this length (warm-up = 10 %)
        assert all(math.isfinite(e.g_loss) for e in steps)
        assert any(e.d_loss is not None and math.isfinite(e.d_loss) for e in steps)
    model, meta = load_model(out)
    assert meta["task"] == "denoise" and meta["pretrain"]["method"] == method
    from napari_temseg.engine import denoise

    restored = denoise(_image(2), (model, meta), device="cpu", tile=64, overlap=8)
    assert restored.shape == (80, 80) and np.isfinite(restored).all()


def test_cli_function_writes_loads_and_resumes(tmp_path):
    import tifffile

    torch.set_num_threads(1)
    tifffile.imwrite(tmp_path / "one.tif", _image(0).astype(np.uint16))
    tifffile.imwrite(tmp_path / "two.tif", _image(1, (64, 90)).astype(np.uint16))
    first = pretrain_files(
        [tmp_path / "one.tif", tmp_path / "two.tif"],
        tmp_path / "m.safetensors",
        steps=4,
        init="scratch",
        device="cpu",
        progress=False,
        **TINY,
    )
    _, meta = load_model(first)
    assert meta["training_data"]["files"] == ["one.tif", "two.tif"]
    assert meta["pretrain"]["total_steps"] == 4
    second = pretrain_files(
        [tmp_path],
        tmp_path / "m2.safetensors",
        steps=3,
        init=str(first),
        device="cpu",
        progress=False,
        **{**TINY, "base": 8},
    )
    _, meta2 = load_model(second)
    assert meta2["pretrain"]["total_steps"] == 7 and meta2["pretrain"]["step_offset"] == 4
    assert meta2["config"]["base"] == 4  # continued from the model, not rebuilt
    with pytest.raises(FileExistsError, match="already exists"):
        pretrain_files([tmp_path / "one.tif"], second, steps=1, progress=False)
    with pytest.raises(ValueError, match="unsupported file type"):
        pretrain_files(
            [tmp_path / "m2.safetensors"], tmp_path / "x.safetensors", steps=1, progress=False
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        pretrain_files([tmp_path / "empty"], tmp_path / "x.safetensors", progress=False)


def test_child_process_streams_events_and_stops_gracefully(tmp_path):
    import time

    from napari_temseg.engine.process import events_of
    from napari_temseg.pipeline.training import TrainingProcess

    cfg = PretrainConfig(
        steps=100_000,
        init="scratch",
        device="cpu",
        preview_every_s=0,
        output=str(tmp_path / "p.safetensors"),
        **TINY,
    )
    proc = TrainingProcess(cfg, images=[_image(0)], names=["a"], threads=1)
    proc.start()
    events = []
    deadline = time.monotonic() + 180
    while not any(e.kind == "step" for e in events) and time.monotonic() < deadline:
        events += events_of(proc.poll())
        time.sleep(0.05)
    assert events, "no progress from the child within a minute"
    proc.shutdown(timeout_s=20)
    assert not proc.is_alive()
    assert proc.error is None and proc.result is not None and proc.result.stopped
    assert load_model(proc.result.path)[1]["task"] == "denoise"


def test_child_process_reports_bad_input():
    from napari_temseg.pipeline.training import TrainingProcess

    proc = TrainingProcess(
        PretrainConfig(patch=64, init="scratch", device="cpu"),
        images=[np.zeros((32, 32), np.float32)],
        threads=1,
    )
    proc.start()
    proc.join(180)
    proc.poll()
    assert proc.finished and "smaller than the patch size" in proc.error
