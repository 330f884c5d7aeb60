"""Robust normalisation and device selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_temseg.engine import DeviceError, Normalization, describe_device, select_device


def _micrograph(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    clean = 200 + 150 * (np.sin(yy / 5) * np.sin(xx / 5) > 0.3)
    return rng.poisson(clean).astype(np.float32)


def test_percentile_stats_ignore_spikes_and_dead_pixels():
    img = _micrograph()
    norm = Normalization()
    ref = norm.stats(img)
    hit = img.copy()
    rng = np.random.default_rng(1)
    idx = rng.choice(img.size, 100, replace=False)  # 0.15 % X-ray hits at full scale
    hit.ravel()[idx[:60]] = 65535
    hit.ravel()[idx[60:]] = 0  # dead pixels
    got = norm.stats(hit)
    assert abs(got[0] - ref[0]) < 0.02 * ref[1] and abs(got[1] - ref[1]) < 0.05 * ref[1]
    # min/max scaling, by contrast, would be wrecked
    assert np.ptp(hit) > 100 * ref[1]
    z = norm.apply(hit, got)
    assert np.abs(z).max() <= norm.clip and np.percentile(z, 50) == pytest.approx(
        np.percentile(norm.apply(img, ref), 50), abs=0.05
    )


def test_a_few_stuck_or_dead_columns_do_not_squash_the_specimen():
    img = _micrograph()
    norm = Normalization()
    ref = norm.stats(img)
    bad = img.copy()
    bad[:, 29] = bad[:, 243] = 53194  # two stuck columns: 0.8 % of the frame
    bad[:, 215] = 0  # a dead one
    bad[100:, 17] = 40000  # a partial stuck column, 156 rows
    got = norm.stats(bad)
    assert abs(got[0] - ref[0]) < 0.02 * ref[1] and abs(got[1] - ref[1]) < 0.05 * ref[1]
    # the columns were what set the top percentile, 200 times the specimen's range
    raw = np.percentile(bad, [0.5, 99.5])
    assert raw[1] - raw[0] > 100 * ref[1]
    # the same pixels read in blocks of rows (engine.large) give the same statistics
    assert norm.stats(bad, block_rows=50) == got
    # a dead stretch of a row (a scan glitch, or padding) is left out too
    rows = img.copy()
    rows[40:43] = 65535
    rows[200, :100] = 65535
    got = norm.stats(rows)
    assert abs(got[1] - ref[1]) < 0.05 * ref[1]


def test_a_padded_border_is_left_out_however_much_of_the_frame_it_fills():
    """A drift-corrected or rotated frame's zero border, often more than the tenth of the
    frame above which long runs count as the image, set the low percentile and squashed
    the specimen; its value is rare in the rest of the frame, which tells it apart."""
    img = _micrograph()
    norm = Normalization()
    ref = norm.stats(img[:, 100:])
    padded = img.copy()
    padded[:, :100] = 0  # 39 % of the frame
    yy, xx = np.mgrid[:256, :256]
    padded[yy + xx < 120] = 0  # and a wedge, as a rotation leaves
    got = norm.stats(padded)
    assert abs(got[0] - ref[0]) < 0.05 * ref[1] and abs(got[1] - ref[1]) < 0.05 * ref[1]
    assert np.percentile(padded, 0.5) == 0, "counted in, the zeros were the low percentile"
    nan_padded = img.copy()
    nan_padded[:, :100] = np.nan  # NaN was always left out: the same statistics
    assert norm.stats(nan_padded) == pytest.approx(got, rel=0.02)


def test_long_runs_are_kept_where_they_are_the_image():
    norm = Normalization()

    def raw(img):  # the plain percentiles of every pixel, as (offset, scale)
        lo, hi = np.percentile(img, [0.5, 99.5])
        return float(lo), float(hi - lo)

    sparse = np.random.default_rng(2).poisson(0.03, (256, 256)).astype(np.float32)
    sparse[:, 7] = 0  # a dead column in a frame of mostly zeros in long runs
    mask = np.zeros((256, 256), np.float32)
    mask[64:192, 64:192] = 1.0  # a binary image: long runs everywhere
    short = _micrograph()
    short[:63, 5] = 65535  # 63 rows: shorter than a defect run, an ordinary outlier
    for img in (sparse, mask, short):
        assert norm.stats(img) == raw(img)
    assert norm.stats(short) != norm.stats(_micrograph())  # the outliers were counted


def test_round_trip_and_torch():
    img = _micrograph()
    norm = Normalization(clip=None)
    st = norm.stats(img)
    np.testing.assert_allclose(norm.invert(norm.apply(img, st), st), img, rtol=1e-5)
    t = norm.apply(torch.from_numpy(img), st)
    np.testing.assert_allclose(t.numpy(), norm.apply(img, st), rtol=1e-6)


def test_degenerate_frames_do_not_divide_by_zero():
    norm = Normalization()
    for frame in (np.full((64, 64), 7.0), np.zeros((64, 64)), np.full((8, 8), np.nan)):
        off, scale = norm.stats(frame)
        assert np.isfinite(off) and scale > 0
    sparse = np.zeros((128, 128), np.float32)
    sparse[::16, ::16] = 3  # a few counts in a sea of zeros: percentiles collapse
    off, scale = norm.stats(sparse)
    assert off == 0 and 0 < scale < 10
    nan_img = _micrograph()
    nan_img[:10] = np.nan
    assert np.isfinite(norm.stats(nan_img)).all()


def test_stats_subsample_big_frames_lazily():
    import dask.array as da

    img = da.from_array(np.tile(_micrograph(), (8, 8)), chunks=512)
    norm = Normalization(max_samples=65_536)
    off, scale = norm.stats(img)
    ref = Normalization().stats(_micrograph())
    assert abs(off - ref[0]) < 0.05 * ref[1] and abs(scale - ref[1]) < 0.1 * ref[1]


def test_normalization_dict_round_trip_and_validation():
    n = Normalization(low=1.0, high=99.0)
    assert Normalization.from_dict(n.to_dict()) == n
    assert Normalization.from_dict(None) == Normalization()
    assert Normalization.from_dict({**n.to_dict(), "future_key": 1}) == n
    with pytest.raises(ValueError, match="percentiles"):
        Normalization(low=60, high=40)
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normalization(method="zscore")


def test_select_and_describe_device():
    assert select_device("cpu") == torch.device("cpu")
    auto = select_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    assert describe_device("cpu") == f"CPU ({torch.get_num_threads()} threads)"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA was requested but is not available"):
            select_device("cuda")
    else:
        assert describe_device("cuda").startswith("CUDA: ")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu9")
