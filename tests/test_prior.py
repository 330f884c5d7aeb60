"""Class balance by EM (engine/prior.py): the frames' shares, not the strokes'."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temseg.engine.prior import describe_balance, estimate_prior, prior_ratio, stroke_prior


def _posteriors(truth_share: float, trained: float, n: int = 200_000, seed: int = 0):
    """Bayes posteriors of a classifier trained at prior ``trained`` on pixels whose class
    1 share is ``truth_share`` (class-conditional intensities N(0, 1) and N(2, 1))."""
    rng = np.random.default_rng(seed)
    cls = rng.random(n) < truth_share
    x = rng.normal(np.where(cls, 2.0, 0.0), 1.0)
    like0, like1 = np.exp(-0.5 * x**2), np.exp(-0.5 * (x - 2.0) ** 2)
    p1 = like1 * trained / (like1 * trained + like0 * (1 - trained))
    return np.stack([1 - p1, p1]).reshape(2, 400, n // 400)


@pytest.mark.parametrize("share", [0.01, 0.2, 0.5])
def test_em_finds_the_frames_share_whatever_the_strokes_taught(share):
    trained = np.array([0.5, 0.5])
    probs = _posteriors(share, 0.5)
    shares, iterations = estimate_prior([probs[:, :200], probs[:, 200:]], trained)
    assert abs(shares[1] - share) < 0.01 + 0.1 * share, shares
    assert shares.sum() == pytest.approx(1.0) and 1 <= iterations < 500
    # what a naive count of the argmax says is far off for a rare class
    naive = (probs.argmax(0) == 1).mean()
    if share == 0.01:
        assert naive > 5 * share


def test_stroke_prior_weights_counts_and_refuses_nothing_painted():
    assert stroke_prior([300, 100], [1.0, 3.0]) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError):
        stroke_prior([0, 0], [1.0, 1.0])


def test_ratio_and_description_from_a_header():
    balance = {
        "strokes": [0.5, 0.5],
        "painted_frames": [0.99, 0.01],
        "ratio": [1.98, 0.02],
        "stroke_recall": [1.0, 0.95],
        "in_head_bias": True,
    }
    assert prior_ratio({"class_balance": balance}) == pytest.approx([1.98, 0.02])
    assert prior_ratio({}) is None and prior_ratio({"class_balance": {"ratio": [1, -1]}}) is None
    line = describe_balance(balance, ["support", "atom"])
    assert "atom 1 % (strokes 50 %)" in line and "corrected" in line
    untrained = {**balance, "in_head_bias": False, "stroke_recall": [1.0, 0.5]}
    refused = describe_balance(untrained, ["support", "atom"])
    assert refused.startswith("class balance not corrected") and "does not yet find" in refused
    lossy = {**balance, "in_head_bias": False, "stroke_recall_balanced": [1.0, 0.6]}
    refused = describe_balance(lossy, ["support", "atom"])
    assert "would find less" in refused and "atom 95% -> 60%" in refused
    assert describe_balance(None, ["a", "b"]) == ""
