"""The training loop: it learns, it is seeded, it survives NaNs, it stops when asked."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from napari_temseg.engine import (
    PairSource,
    TrainConfig,
    TrainingDiverged,
    iter_train,
    simulated_source,
    train,
)
from napari_temseg.models import UNet, load_checkpoint

torch.set_num_threads(2)


def toy_pair(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in simulator: Gaussian 'columns' on a lattice, Poisson noise, random dose."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    a = rng.uniform(6, 10)
    cy, cx = rng.uniform(0, a, 2)
    img = (np.cos(2 * np.pi * (yy - cy) / a) * np.cos(2 * np.pi * (xx - cx) / a)) ** 4
    # enough counts that the lattice is learnable: at 1-5 e/px a constant beats any filter
    clean = (0.2 + img) * rng.uniform(10, 40)
    return rng.poisson(clean).astype(np.float32), clean.astype(np.float32)


def tiny_config(**kw) -> TrainConfig:
    base = {
        "steps": 40,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup": 5,
        "val_every": 10,
        "val_size": 8,
        "device": "cpu",
        "seed": 3,
    }
    return TrainConfig(**{**base, **kw})


def tiny_source(**kw) -> PairSource:
    return PairSource(toy_pair, patch=32, patches_per_image=2, description={"source": "toy"}, **kw)


def test_training_lowers_validation_loss(tmp_path):
    from napari_temseg.engine.train import evaluate

    val = tiny_source().sample(16, np.random.default_rng(99))
    torch.manual_seed(0)
    model = UNet(base=8, depth=2, residual=True)
    untrained, _ = evaluate(model, val, "l1", torch.device("cpu"))
    identity = float(np.abs(val[0] - val[1]).mean())  # loss of returning the noisy input
    cfg = tiny_config(
        steps=200, val_every=50, checkpoint=str(tmp_path / "best.safetensors"), meta={"name": "toy"}
    )
    events = []
    result = train(model, tiny_source(), cfg, val=val, progress=events.append)
    vals = [e for e in events if e.kind == "val"]
    assert [e.step for e in vals] == [50, 100, 150, 200]
    assert result.best_val_loss < 0.5 * untrained and result.best_val_loss < 0.95 * identity
    assert result.steps_done == 200 and not result.stopped and result.examples_per_s > 0
    assert all(e.examples_per_s > 0 and math.isfinite(e.loss) for e in events if e.kind == "step")
    model, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["task"] == "denoise" and meta["name"] == "toy"
    assert meta["training_data"]["source"] == "toy"
    assert meta["normalization"]["method"] == "percentile"
    assert meta["training"]["best_step"] == result.best_step
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the run ends holding the best weights


def test_late_average_keeps_the_mean_of_the_late_validated_weights():
    """average_late=0.5: the run returns the mean of the weights at the validations of its
    second half, not the best or the last of them."""
    val = tiny_source().sample(8, np.random.default_rng(99))
    seen = []

    def snapshot(ev):  # the current weights at every validation (the model trains in place)
        if ev.kind == "val":
            seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    torch.manual_seed(0)
    model = UNet(base=4, depth=2)
    result = train(
        model,
        tiny_source(),
        tiny_config(steps=40, val_every=10, average_late=0.5),
        val=val,
        progress=snapshot,
    )
    assert result.averaged_from == 20 and result.best_step == 40
    late = seen[1:]  # the validations of steps 20, 30 and 40
    for k, kept in result.model.state_dict().items():
        if kept.is_floating_point():
            torch.testing.assert_close(kept, sum(s[k] for s in late) / len(late))
    assert not all(
        torch.equal(a, b)
        for a, b in zip(result.model.state_dict().values(), late[-1].values(), strict=True)
    )
    with pytest.raises(ValueError, match="average_late"):
        tiny_config(average_late=1.5)


def _seeded_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)  # initial weights are the caller's to seed
    return UNet(base=4, depth=2)


def test_same_seed_same_run():
    runs = [
        train(_seeded_unet(), tiny_source(), tiny_config(steps=8, val_every=8)) for _ in range(2)
    ]
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = train(_seeded_unet(), tiny_source(), tiny_config(steps=8, val_every=8, seed=4))
    assert not torch.equal(
        next(iter(other.model.parameters())), next(iter(runs[0].model.parameters()))
    )


class NaNSometimes(PairSource):
    """Every third batch carries a NaN target: those steps must be skipped."""

    calls = 0

    def sample(self, n, rng):
        x, y = super().sample(n, rng)
        NaNSometimes.calls += 1
        if NaNSometimes.calls % 3 == 0:
            y[0, 0, 0, 0] = np.nan
        return x, y


def test_nan_steps_are_skipped_and_weights_stay_finite():
    src = NaNSometimes(toy_pair, patch=32, patches_per_image=2)
    val = tiny_source().sample(8, np.random.default_rng(0))
    result = train(_seeded_unet(), src, tiny_config(steps=18), val=val)
    assert result.skipped_steps >= 4
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert math.isfinite(result.best_val_loss)


def test_divergence_stops_with_the_best_weights_kept():
    cfg = tiny_config(steps=200, lr=1e12, warmup=1, val_every=1, max_bad_steps=3)
    model = _seeded_unet()
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(model, tiny_source(), cfg)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cancel_stops_between_steps_and_keeps_the_best():
    cancel = threading.Event()

    def progress(ev):
        if ev.kind == "step" and ev.step == 5:
            cancel.set()

    result = train(_seeded_unet(), tiny_source(), tiny_config(), progress=progress, cancel=cancel)
    assert result.stopped and result.steps_done == 5
    assert result.history[-1].step == 5 and result.best_step in (5,)


def test_generator_interface_and_clean_pass_through_share():
    src = tiny_source(clean_fraction=1.0)
    x, y = src.sample(4, np.random.default_rng(0))
    np.testing.assert_array_equal(x, y)  # clean inputs: the target is the input itself
    gen = iter_train(_seeded_unet(), tiny_source(), tiny_config(steps=3, val_every=3))
    kinds = [ev.kind for ev in gen]
    assert kinds == ["step", "step", "step", "val"]


def test_simulator_source_gives_normalised_patches():
    src = simulated_source("stem", size=64, patch=32, dose_range=(10, 100))
    x, y = src.sample(3, np.random.default_rng(0))
    assert x.shape == y.shape == (3, 1, 32, 32) and x.dtype == np.float32
    assert np.isfinite(x).all() and np.abs(np.median(y)) < 5
    d = src.describe()
    assert (
        d["kind"] == "stem" and d["dose_range_e_per_px"] == [10, 100] and d["clean_fraction"] == 0.1
    )


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="perceptual")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="patch"):
        PairSource(toy_pair, patch=4)


def test_simulated_source_targets_and_parallel_workers():
    from napari_temseg.engine.data import ParallelSource

    with pytest.raises(ValueError, match="target"):
        simulated_source("stem", size=64, patch=32, target="sharp")
    src = simulated_source("stem", size=64, patch=32, dose_range=(10, 100), patches_per_image=2)
    assert src.describe()["target"] == "recorded"
    with ParallelSource(src, workers=2, seed=0) as par:
        x, y = par.sample(5)
        assert x.shape == y.shape == (5, 1, 32, 32) and np.isfinite(x).all()
    with ParallelSource(src, workers=2, seed=0) as again:
        x2, _ = again.sample(5)  # results are used in task order: the same seed, the same run
    np.testing.assert_array_equal(x, x2)


def test_a_share_of_simulated_images_comes_from_a_counting_detector():
    from napari_temseg.engine.data import _SimulatedPair

    src = simulated_source("stem", size=64, patch=32, dose_range=(2, 5), counting_fraction=1.0)
    assert src.describe()["counting_detector_fraction"] == 1.0
    pair = src.make_pair
    noisy, _ = pair(np.random.default_rng(3))
    # shot noise only: whole electron counts (times one scale), no offset, no read-out noise
    quantum = noisy[noisy > 0].min()
    counts = noisy / quantum
    assert noisy.min() == 0 and np.allclose(counts, np.round(counts), atol=1e-3)
    full = _SimulatedPair("stem", 64, (2, 5), (0.1, 0.1), pair.config, "recorded")
    with_noise, _ = full(np.random.default_rng(3))  # gain, read-out noise, ADC levels
    assert len(np.unique(noisy)) < 60 < 300 < len(np.unique(with_noise))
    # no share: the random stream (so an old run's seed) is what it was
    old = simulated_source("stem", size=64, patch=32, dose_range=(2, 5))
    a, _ = old.make_pair(np.random.default_rng(4))
    b, _ = _SimulatedPair(
        "stem", 64, (2, 5), old.make_pair.pixels, old.make_pair.config, "recorded"
    )(np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="counting_fraction"):
        simulated_source("stem", counting_fraction=1.5)


def test_time_budget_stops_the_run_and_keeps_a_validation():
    src = PairSource(toy_pair, patch=32)
    cfg = TrainConfig(steps=10_000, batch_size=2, val_every=10_000, val_size=4, max_seconds=0.5)
    result = train(UNet(base=4, depth=2), src, cfg)
    assert 0 < result.steps_done < 10_000 and not result.stopped
    assert result.history and result.history[-1].step == result.steps_done
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(max_seconds=0)


def test_cpu_bf16_detection_follows_the_cpu_flags():
    from pathlib import Path

    from napari_temseg.engine.device import cpu_has_fast_bf16

    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo here")
    flags = set(info.read_text().split())
    if "avx512_bf16" in flags:
        assert cpu_has_fast_bf16()
    elif not any(f.startswith("amx") for f in flags):
        assert not cpu_has_fast_bf16()


def test_training_on_a_bf16_cpu_runs_under_bf16_autocast_and_still_learns():
    """amp=True trains in bf16 where the CPU computes it natively; amp=False stays float32."""
    from napari_temseg.engine.device import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        pytest.skip("this CPU has no native bf16: training stays float32")
    losses = {}
    for amp in (True, False):
        torch.manual_seed(0)
        model = UNet(base=8, depth=2, residual=True)
        events = []
        train(model, tiny_source(), tiny_config(steps=60, amp=amp), progress=events.append)
        losses[amp] = [e.loss for e in events if e.kind == "step"]
    assert losses[True] != losses[False]  # autocast is on: bf16 rounding changes the numbers
    assert all(math.isfinite(v) for v in losses[True])
    assert np.mean(losses[True][-10:]) < 0.8 * np.mean(losses[True][:10])  # and it learns


def test_a_share_of_simulated_images_can_be_drawn_at_low_dose():
    def counts(src, seed):  # a counting detector: the image is whole electrons times a scale
        noisy, _ = src.make_pair(np.random.default_rng(seed))
        return float(noisy.mean() / noisy[noisy > 0].min())

    kw = {"size": 64, "patch": 32, "dose_range": (1, 1000), "counting_fraction": 1.0}
    low = simulated_source("hrtem", **kw, low_dose=(1.0, 2.0))
    full = simulated_source("hrtem", **kw)
    assert low.describe()["low_dose_share_max"] == [1.0, 2.0]
    assert "low_dose_share_max" not in full.describe()
    low_means = [counts(low, s) for s in range(8)]
    full_means = [counts(full, s) for s in range(8)]
    assert max(low_means) <= 2.0  # electrons per pixel never above the low-dose maximum
    assert sum(m > 2.0 for m in full_means) >= 4
    with pytest.raises(ValueError, match="low_dose"):
        simulated_source("hrtem", dose_range=(1, 10), low_dose=(0.5, 0.5))
