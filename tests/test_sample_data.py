"""The npe2 sample data opens in a real viewer with the simulated pixel size as scale."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(
    ("key", "label"), [("stem_nanoparticles", "STEM"), ("hrtem_nanoparticles", "HRTEM")]
)
def test_sample_opens_noisy_clean_and_ground_truth(make_napari_viewer, key, label):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-temseg", key)
    names = [layer.name for layer in viewer.layers]
    assert names == [f"{label} noisy", f"{label} clean", f"{label} ground truth"]
    noisy, clean, truth = (viewer.layers[n] for n in names)
    px = noisy.metadata["pixel_size_nm"]
    assert 0.005 < px < 5
    for layer in (noisy, clean, truth):
        assert tuple(layer.scale) == pytest.approx((px, px))
        assert [str(u) for u in layer.units] == ["nanometer", "nanometer"]
    assert truth.__class__.__name__ == "Labels"
    assert set(np.unique(truth.data)) == {1, 2}
    # the noisy image really is noisier than the clean one, and both show the same scene
    assert noisy.data.shape == clean.data.shape == truth.data.shape
    assert np.std(noisy.data - clean.data) > 0
    assert np.corrcoef(noisy.data.ravel(), clean.data.ravel())[0, 1] > 0.3
