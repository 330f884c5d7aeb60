"""Per-pixel uncertainty and per-frame warnings (engine/checks.py): pure numpy, no Qt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_temseg.engine.checks import (
    REMEDY,
    check_frame,
    check_frames,
    degenerate,
    frame_stats,
    outside_painted,
    uncertainty,
)
from napari_temseg.synth import simulate

torch.set_num_threads(1)


def test_uncertainty_is_one_minus_the_margin_of_the_two_likeliest_classes():
    probs = np.array([[[1.0, 0.5, 0.7]], [[0.0, 0.5, 0.3]]], np.float32)  # (K=2, 1, 3)
    assert uncertainty(probs) == pytest.approx(np.array([[0.0, 1.0, 0.6]]))
    three = np.array([0.5, 0.3, 0.2], np.float32)[:, None, None]  # K=3
    assert uncertainty(three)[0, 0] == pytest.approx(0.8)
    stack = np.stack([probs, probs[::-1]])  # (T, K, Y, X)
    u = uncertainty(stack)
    assert u.shape == (2, 1, 3) and np.allclose(u[0], u[1])


def test_frame_stats_ignore_gain_spikes_and_dead_pixels():
    """What the network sees: per-frame normalisation makes gain and offset irrelevant."""
    img = simulate("stem", 256, dose=200, seed=1).noisy.astype(np.float64)
    clean = frame_stats(img)
    assert frame_stats(img * 0.3 + 100.0) == pytest.approx(clean)  # another detector gain
    img[::29, ::31] = 1e6  # X-ray spikes on about 0.1 % of the pixels
    img[5, :] = 0.0  # a dead row
    assert frame_stats(img) == pytest.approx(clean, rel=0.05)


def test_a_frame_of_the_painted_session_passes_a_lower_dose_one_does_not():
    def stats(dose, seed, gain=1.0):
        return frame_stats(simulate("stem", 128, dose=dose, seed=seed).noisy * gain)

    painted = [stats(200, 1), stats(200, 3)]
    assert outside_painted(stats(200, 3, gain=0.3), painted) is None  # darker, same dose
    why = outside_painted(stats(20, 1), painted)  # a tenth of the dose: 3x the noise
    assert why is not None and why.startswith("unlike the painted frames: noise")
    # painting a frame of that session too widens what is accepted
    assert outside_painted(stats(20, 3), [*painted, stats(20, 1)]) is None


def test_one_class_almost_everywhere_is_degenerate():
    lab = np.full((100, 100), 2, np.uint8)
    lab[:1, :] = 1  # 1 % support
    why = degenerate(lab, ["support", "particle"])
    assert why is not None and "99.0% of the pixels are 'particle'" in why
    lab[:10, :] = 1
    assert degenerate(lab, ["support", "particle"]) is None


def test_checks_of_a_trained_segmenter_name_the_frames_to_paint():
    """Painted-frame statistics travel in the segmenter; unlike frames are named."""
    from napari_temseg.engine.finetune import FinetuneConfig, finetune
    from napari_temseg.engine.strokes import scribbles_from_mask

    s = simulate("stem", 128, pixel_size_nm=0.1, dose=200, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=20, seed=0)
    cfg = FinetuneConfig(steps=2, batch_size=2, patch=64, base=8, depth=3, device="cpu")
    meta = finetune([s.noisy], [strokes], init="none", config=cfg).meta
    (stats,) = meta["training_data"]["intensity"]
    assert stats == frame_stats(s.noisy)
    good = s.recorded_semantic.astype(np.uint8)
    other = simulate("stem", 128, pixel_size_nm=0.1, dose=10, seed=1).noisy  # low dose
    image = np.stack([s.noisy * 2.0, other])
    labels = np.stack([good, np.full_like(good, 2)])
    found = check_frames(image, labels, meta)
    assert {idx for idx, _ in found} == {(1,)}
    assert len(found) == 2 and all(w.endswith(REMEDY) for _, w in found)
    # a segmenter without stored statistics still gets the degenerate check
    old = {**meta, "training_data": {}}
    assert len(check_frame(other, labels[1], old)) == 1
