"""NaN, inf and huge values: refused or masked and reported, never silently processed.

Cases from issue 14: an all-NaN image denoised to near zero and segmented into two
classes; two inf pixels put 21 output pixels outside the input range; float64 1e300 gave
NaN and inf.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_temseg.cli import main
from napari_temseg.engine import denoise
from napari_temseg.engine.segment import load_segmenter, segment
from napari_temseg.io import DataWarning, read
from napari_temseg.models import load_model

torch.set_num_threads(1)


def _image(seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 10, (64, 64)).astype(dtype)


def _denoise(image: np.ndarray, **kw) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        out = denoise(image, device="cpu", tile=64, overlap=8, amp=False, **kw)  # exact sums
    return out, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.fixture
def seg(tiny_segmenter):
    return load_segmenter(tiny_segmenter)


def test_an_all_nan_image_is_refused(seg):
    nan = np.full((64, 64), np.nan, np.float32)
    with pytest.raises(ValueError, match="every pixel is NaN or infinite"):
        denoise(nan, device="cpu")
    with pytest.raises(ValueError, match="every pixel is NaN or infinite"):
        segment(nan, seg, device="cpu")


def test_an_all_nan_frame_of_a_stack_is_left_out_and_named(seg, tiny_segmenter, tmp_path, capsys):
    """A dropped frame of a movie stopped the whole run: nothing was denoised or segmented."""
    from napari_temseg.engine.segment import segment_checked

    stack = np.stack([_image(1), np.full((64, 64), np.nan, np.float32), _image(2)])
    kw = {"device": "cpu", "tile": 64, "overlap": 8}
    with pytest.warns(DataWarning, match=r"^frame 1: every pixel is NaN or infinite: left out"):
        out = denoise(stack, **kw)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_allclose(out[2], denoise(stack[2], **kw), atol=1e-4)
    with pytest.warns(DataWarning, match=r"^frame 1: every pixel is NaN"):
        labels, probs = segment(stack, seg, probabilities=True, **kw)
    assert (labels[1] == 0).all() and (labels[[0, 2]] > 0).all()
    assert np.allclose(probs[1], 0.5)  # two classes, nothing known
    with pytest.warns(DataWarning):
        labels, unsure, found = segment_checked(stack, seg, **kw)
    assert (labels[1] == 0).all() and (unsure[1] == 100).all() and (labels[0] > 0).all()
    assert ((1,), "every pixel is NaN or infinite: left out (NaN when denoised, 0 when "
            "segmented)") in found  # fmt: skip
    # the command line writes the other frames and says which was left out
    np.save(tmp_path / "movie.npy", stack)
    argv = ["--device", "cpu", "--tile", "64", "--overlap", "8"]
    assert main(["denoise", str(tmp_path / "movie.npy"), "-o", str(tmp_path / "d"), *argv]) == 0
    err = capsys.readouterr().err
    assert err.count("frame 1: every pixel is NaN or infinite: left out") == 1
    written = read(tmp_path / "d" / "movie.tif")[0].data
    assert np.isnan(written[1]).all() and np.isfinite(written[0]).all()
    model = tiny_segmenter
    code = main(["segment", str(tmp_path / "movie.npy"), "--model", model, "-o",
                 str(tmp_path / "s"), *argv])  # fmt: skip
    assert code == 0 and "frame 1: every pixel is NaN" in capsys.readouterr().err
    mask = read(tmp_path / "s" / "movie.tif")[0].data
    assert (mask[1] == 0).all() and (mask[[0, 2]] > 0).all()


def test_two_inf_pixels_are_masked_reported_and_move_nothing_out_of_range():
    image = _image()
    image[10, 10], image[40, 20] = np.inf, -np.inf
    out, notes = _denoise(image)
    bad = ~np.isfinite(image)
    assert np.isnan(out[bad]).all() and np.isfinite(out[~bad]).all()
    finite = image[~bad]
    assert finite.min() <= out[~bad].min() and out[~bad].max() <= finite.max()
    assert notes == [
        "2 of 4096 pixels are NaN or infinite: filled from the frame's own pixels and masked "
        "in the result"
    ]
    binned, notes = _denoise(image, bin=2)  # averaged away by the binning: still said
    assert np.isnan(binned[bad]).all() and np.isfinite(binned[~bad]).all()
    assert notes == [
        "2 of 4096 pixels are NaN or infinite: filled from the frame's own pixels and masked "
        "in the result"
    ]


def test_nan_pixels_do_not_change_their_neighbours():
    """Masked pixels enter the network as draws of the frame's own pixels, not as an
    extreme value."""
    clean = _image(1)
    holed = clean.copy()
    holed[30:33, 30:33] = np.nan
    reference, _ = _denoise(clean)
    out, _ = _denoise(holed)
    far = np.ones_like(clean, bool)
    far[20:43, 20:43] = False  # 10 px from the hole
    # the U-Net's receptive field reaches further than 10 px: a hole filled with the
    # median (or the frame's own pixels) moves these pixels by ~2e-4 of their value, one filled with an extreme value
    # by ~5e-2
    np.testing.assert_allclose(out[far], reference[far], rtol=1e-3, atol=1e-3)
    assert np.isnan(out[30:33, 30:33]).all()


def test_a_zero_border_is_kept_and_does_not_squash_or_ramp_the_specimen():
    """A quarter of zeros around a simulated bright-field frame (as drift correction
    leaves): counted in the percentiles it squashed the specimen (13 times the error);
    fed to the network it came back as a flat 124 with a ramp into the specimen. Now it
    is left out, filled for the network like NaN, and given back as it was."""
    from napari_temseg.engine.finite import padding_mask, padding_values
    from napari_temseg.synth import simulate

    s = simulate("hrtem", 512, dose=10.0, seed=11)
    noisy = s.noisy.astype(np.float32)
    bordered, nan_bordered = noisy.copy(), noisy.copy()
    bordered[:, :128] = 0
    nan_bordered[:, :128] = np.nan
    yy, xx = np.mgrid[:512, :512]
    wedge = yy + xx < 200  # as a rotation leaves, with a thin tip
    bordered[wedge] = 0
    nan_bordered[wedge] = np.nan
    data = bordered != 0
    far = data & (xx >= 160) & (yy + xx >= 232)
    edge = data & ~far  # beside the border: as good as with a NaN border

    def err(out, where):
        return float(np.mean((out[where] - s.clean[where]) ** 2))

    plain = denoise(noisy, "hrtem-denoise", device="cpu", amp=False)
    got = denoise(bordered, "hrtem-denoise", device="cpu", amp=False)
    nan_got, _ = _denoise_with(nan_bordered)
    assert (got[~data] == 0).all(), "the border comes back as it was"
    binned = denoise(bordered, "hrtem-denoise", device="cpu", bin=2)  # interpolated back
    assert (binned[~data] == 0).all(), "and through binning"
    assert err(got, far) < 1.1 * err(plain, far)
    assert err(got, edge) < 1.1 * err(nan_got, edge)
    # filled with a constant (the median), the 16 px beside it had 9 times the error
    assert err(got, edge) < 1.3 * err(plain, edge)
    # a stuck column is not padding: the denoiser fills it in, as it was trained to
    stuck = noisy.copy()
    stuck[:, 300] = 0
    assert not padding_mask(stuck, padding_values(stuck)).any()


def test_padding_is_found_on_the_whole_frame_and_filled_with_its_own_data():
    """What the network is given for a border, and what comes back, through the tiles with
    an identity network: every border pixel of a rotated frame comes back as it was (a mask
    found tile by tile missed 9 % of them); what fills it for the network has the data's
    mean (a Poisson frame's own zeros stay in the draws) and no pattern."""
    from scipy import ndimage

    from napari_temseg.engine.finite import padding_mask, padding_values
    from napari_temseg.engine.tiling import predict_tiled

    rng = np.random.default_rng(0)

    def same(x):
        return x

    frame = ndimage.rotate(rng.normal(370, 30, (700, 700)), 3, reshape=True, cval=0.0)
    back = predict_tiled(frame, same, tile=256, overlap=32, within_input=True)
    assert (back[frame == 0] == 0).all()

    counts = rng.poisson(0.7, (512, 512)).astype(np.float32)
    counts[:, :25] = counts[:25] = 0  # an L of zeros, under a tenth of the frame
    assert padding_mask(counts, padding_values(counts))[:, :25].all()
    seen = predict_tiled(counts, same, tile=256, overlap=32, denormalize=False)
    fill, data = seen[30:, :20], counts[25:, 25:]  # the network's view of the border
    assert abs(fill.mean() - data.mean()) < 0.05 * data.std()
    assert abs(np.corrcoef(fill[:, :-1].ravel(), fill[:, 1:].ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(fill[:-1].ravel(), fill[1:].ravel())[0, 1]) < 0.05

    # a particle clipped to 0 inside an 8-bit frame is specimen, not padding
    img = np.clip(rng.normal(150, 20, (512, 512)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:512, :512]
    img[(yy - 256) ** 2 + (xx - 256) ** 2 < 60**2] = 0
    values = padding_values(img)
    assert values is None or not padding_mask(img, values).any()


def test_a_detectors_ceiling_or_floor_at_the_edge_is_specimen_not_padding():
    """Vacuum that saturates a bright-field camera, or a dark-field vacuum clipped at 0,
    is one value over long runs at the edge, as padding is; but it meets the specimen
    along its outline, not along straight lines. Taken for padding, a segmenter left it
    unclassified and every particle beside it touched the border. Borders of rotated and
    shifted frames are still found whole."""
    from napari_temseg.engine.finite import padding_of

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:768, :768]
    hole = yy**2 + xx**2 < 260**2  # a hole in the carbon film, at the corner
    bright_field = np.minimum(rng.poisson(np.where(hole, 2000.0, 700.0)), 1023)
    assert (bright_field[hole] == 1023).mean() > 0.99  # a 10-bit camera, saturated
    assert padding_of(bright_field.astype(np.uint16)) is None
    dark_field = np.clip(rng.normal(np.where(hole, -50.0, 30.0), 5.0), 0, None)
    assert padding_of(dark_field) is None
    ring = (yy - 384) ** 2 + (xx - 384) ** 2 > 330**2  # vacuum all round one particle
    assert padding_of(np.clip(rng.normal(np.where(ring, -50.0, 30.0), 5.0), 0, None)) is None

    lamella = xx > 300 + 0.3 * (yy - 384)  # vacuum beyond a straight edge, saturated
    straight = np.minimum(rng.poisson(np.where(lamella, 2000.0, 700.0)), 1023)
    assert padding_of(straight.astype(np.uint16)) is None  # the camera's ceiling
    shifted = ndimage.shift(rng.normal(370, 30, (768, 768)), (37.3, -90.6), order=1)
    assert np.array_equal(padding_of(shifted), shifted == 0)


def test_the_strip_a_shift_along_one_axis_leaves_is_padding():
    """Drift correction often shifts a frame along one axis by a few pixels: a strip of
    zeros narrower than the 64 px runs that padding otherwise needs both ways (it was
    filled in by the denoiser as a stuck band, classified by a segmenter, and did not cut
    particles), from 2 px. A stuck column inside the frame is still not padding."""
    from napari_temseg.engine.finite import padding_of

    base = np.random.default_rng(2).normal(370, 30, (512, 512))
    for shift in [(0, 20), (0, -6), (-13, 0), (0, 20.4), (0, 2), (3, 0)]:
        frame = ndimage.shift(base, shift, order=1)
        assert np.array_equal(padding_of(frame), frame == 0), shift
    # one pixel is what a dead edge column leaves too: the network fills it in
    assert padding_of(ndimage.shift(base, (0, 1), order=1)) is None
    stuck = base.copy()
    stuck[:, 200:202] = 0
    assert padding_of(stuck) is None
    got = denoise(ndimage.shift(base, (0, 20), order=1), "hrtem-denoise", device="cpu")
    assert (got[:, :20] == 0).all() and (got[:, 20:] != 0).all()


def test_rotated_frames_borders_are_found_whole_at_any_angle():
    """Each wedge of a rotated frame, with its thin tip (too short for the 64 px runs),
    is padding at every angle; the check that padding is cut along straight lines once
    dropped the wedges at 0.5-1.5 and 5-20 degrees (the tips, left out, made what was left
    look cut along a curve)."""
    from napari_temseg.engine.finite import padding_of

    base = np.random.default_rng(11).poisson(1000.0, (512, 512)).astype(np.float32)
    for angle in [0.5, 1, 1.5, 2, 5, 7, 10, 20, 45]:
        for reshape in (False, True):
            frame = ndimage.rotate(base, angle, reshape=reshape, order=1)
            assert np.array_equal(padding_of(frame), frame == 0), (angle, reshape)


def test_bands_of_a_large_frame_are_judged_as_the_whole_frame():
    """A band sees a short piece of a hole's arc, which looks straight: judged on its own
    data it took the vacuum for padding where the whole frame does not. Bands now take
    the whole frame's data hull (``engine.finite.Padding``) and agree with it."""
    from napari_temseg.engine.finite import frame_padding, padding_of
    from napari_temseg.engine.large import band_rows

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:1024, :1024]
    hole = (yy - 512) ** 2 + (xx - 2100) ** 2 < 1500**2  # a wide hole, clipped at 0
    vacuum = np.clip(rng.normal(np.where(hole, -50.0, 30.0), 5.0), 0, None)
    base = rng.normal(370, 30, (1024, 1024))
    rotated = ndimage.rotate(base, 4, reshape=False, order=1)
    crossed = ndimage.shift(base, (10, 0), order=1)
    crossed[:, 500] = 0  # a dead column through the border: the border is still found
    for frame in (vacuum, rotated, crossed):
        whole = padding_of(frame)
        whole = np.zeros(frame.shape, bool) if whole is None else whole
        spec = frame_padding(frame)
        banded = np.zeros(frame.shape, bool)
        for r0, r1, h0, h1 in band_rows(1024, 256, 64):
            mask = padding_of(frame[h0:h1], spec.band(h0) if spec else np.empty(0))
            if mask is not None:
                banded[r0:r1] = mask[r0 - h0 : r1 - h0]
        assert (whole ^ banded).sum() <= 4
    assert whole[:10].all() and whole[:, 500].sum() <= 10 + 4  # the column: within 2 px
    assert padding_of(vacuum) is None
    assert np.array_equal(padding_of(rotated), rotated == 0)


def test_a_whole_frames_hull_follows_a_band_into_binning_and_resampling():
    """A band denoised binned, or segmented at another pixel size, is judged in the frame
    the tiles see: the whole frame's data hull is scaled to it (``Padding.scaled``);
    unscaled, it marked half the binned frame's data as inside the border's reach."""
    from napari_temseg.engine.binning import bin_frame
    from napari_temseg.engine.finite import frame_padding, padding_of

    base = np.random.default_rng(4).normal(370, 30, (1024, 1024)).astype(np.float32)
    frame = ndimage.rotate(base, 9, reshape=True, order=1)[:1024, :1024]
    spec = frame_padding(frame)

    def differ(a, b):
        return ((a if a is not None else 0) ^ (b if b is not None else 0)).sum()

    small = bin_frame(frame, 2)
    own = padding_of(small)
    assert own.sum() > 0.1 * own.size
    assert differ(own, padding_of(small, spec.scaled(0.5, 0.5))) <= 0.01 * own.sum()
    assert differ(own, padding_of(small, spec)) > 0.05 * own.sum()  # unscaled
    zoomed = ndimage.zoom(frame, 0.7, order=1, grid_mode=True, mode="reflect")
    own = padding_of(zoomed)
    assert differ(own, padding_of(zoomed, spec.scaled(0.7, 0.7))) <= 0.01 * own.sum()


def test_what_padding_is_not_and_is_at_the_edges():
    """A dead row along the edge is a detector's, not padding; zero padding around data
    that are all negative is padding, though 0 is then the frame's highest value."""
    from napari_temseg.engine.finite import padding_of

    base = np.random.default_rng(3).normal(370, 30, (512, 512))
    dead = base.copy()
    dead[0] = 0
    assert padding_of(dead) is None
    negative = ndimage.shift(-base, (0, 30), order=1)  # a phase or log image, say
    assert np.array_equal(padding_of(negative), negative == 0)


def _denoise_with(image):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return denoise(image, "hrtem-denoise", device="cpu", amp=False), None


def test_segmentation_leaves_non_finite_pixels_unclassified(seg):
    image = _image(2)
    image[5:9, 5:9] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        labels = segment(image, seg, device="cpu", tile=64, overlap=8)
    assert (labels[5:9, 5:9] == 0).all()
    assert labels.min() == 0 and (labels[np.isfinite(image)] > 0).all()
    assert any("16 of 4096" in str(w.message) for w in caught)


def test_segmentation_leaves_a_padded_border_unclassified(seg):
    """A zero border is no specimen: not a class (0), as NaN pixels are; the network
    sees it filled, so the data beside it is classified as without it."""
    image = np.random.default_rng(3).normal(100, 10, (160, 160)).astype(np.uint16)
    bordered = image.copy()
    bordered[:, :70] = 0
    labels = segment(bordered, seg, device="cpu", tile=64, overlap=8)
    assert (labels[:, :70] == 0).all() and (labels[:, 70:] > 0).all()
    stuck = image.copy()
    stuck[:, 100] = 0  # a stuck column is classified with its neighbours
    assert (segment(stuck, seg, device="cpu", tile=64, overlap=8) > 0).all()


def test_float64_beyond_float32_is_segmented_but_not_denoised(seg):
    huge = _image(3, np.float64) * 1e298  # values near 1e300
    with pytest.raises(ValueError, match=r"reach 1\.\d+e\+300, beyond what a float32"):
        denoise(huge, device="cpu")
    labels = segment(huge, seg, device="cpu", tile=64, overlap=8)
    same = segment(huge / 1e298, seg, device="cpu", tile=64, overlap=8)
    assert labels.min() >= 1 and (labels == same).mean() > 0.99  # scale-free, as it should


def test_contrast_a_float32_result_cannot_hold_is_refused_not_flattened(seg, tmp_path, capsys):
    """1e8 plus a spread of a few units came back as two values; at 1e6 4 % off."""
    from napari_temseg.engine.denoise import denoise_bands

    x = _image(6, np.float64) / 10  # spread about 5 (0.5-99.5 %)
    for offset, kw in ((1e8, {}), (1e6, {}), (1e8, {"bin": 2})):
        with pytest.raises(ValueError, match=r"vary by only 5\.\d+, [\d.e+]+ float32 steps there"):
            denoise(x + offset, device="cpu", tile=64, overlap=8, **kw)
    with pytest.raises(ValueError, match=r"^frame 1: pixel values near"):  # which frame
        denoise(np.stack([x, x + 1e8]), device="cpu", tile=64, overlap=8)
    with pytest.raises(ValueError, match="subtract the offset first"):  # a large frame's bands
        list(denoise_bands(x + 1e8, load_model("stem-denoise", device="cpu"), band=32))
    counts = np.uint32(4_000_000_000) + (x * 10).astype(np.uint32)  # 32-bit counts, far from 0
    with pytest.raises(ValueError, match=r"near 4e\+09 vary by only \d+, 0\.\d+ float32 steps"):
        denoise(counts, device="cpu", tile=64, overlap=8)
    # what a float32 holds well enough is denoised as without the offset
    out, _ = _denoise(x + 1e4)
    np.testing.assert_allclose(out - 1e4, _denoise(x)[0], atol=0.02 * x.std())
    flat = np.full((64, 64), 1e8 + 0.3)  # constant: given back, nothing to resolve
    assert np.allclose(_denoise(flat)[0], np.float32(1e8 + 0.3))
    assert segment(x + 1e8, seg, device="cpu", tile=64, overlap=8).min() >= 1  # no result in
    # the frame's units: classified as it stands
    np.save(tmp_path / "offset.npy", x + 1e8)
    code = main(["denoise", str(tmp_path / "offset.npy"), "-o", str(tmp_path / "o"),
                 "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "subtract the offset first" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "offset.tif").exists()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_denoised_values_stay_within_the_input_range(dtype):
    image = np.clip(_image(4) + 50 * (np.arange(64) % 7 == 0), 0, 255).astype(dtype)
    out, notes = _denoise(image)
    assert notes == [] and np.isfinite(out).all()
    assert image.min() <= out.min() and out.max() <= image.max()


def test_the_command_line_refuses_all_nan_and_reports_a_few(tmp_path, capsys):
    np.save(tmp_path / "nan.npy", np.full((64, 64), np.nan, np.float32))
    some = _image(5)
    some[0, :3] = np.nan
    np.save(tmp_path / "some.npy", some)
    argv = ["--device", "cpu", "--tile", "64", "--overlap", "8", "-o", str(tmp_path / "out")]
    assert main(["denoise", str(tmp_path / "nan.npy"), *argv]) == 1
    err = capsys.readouterr().err
    assert "nan.npy: every pixel is NaN or infinite: there is nothing to process" in err
    assert main(["denoise", str(tmp_path / "some.npy"), *argv]) == 0
    err = capsys.readouterr().err
    assert err.count("temseg: note: some.npy: 3 of 4096 pixels are NaN or infinite") == 1


def test_the_denoise_widget_refuses_all_nan_and_masks_a_few(make_napari_viewer, qtbot, monkeypatch):
    """In napari the refusal is an error notification; masked pixels stay NaN in the layer.
    (The report is a DataWarning, which napari relays from the worker as a warning
    notification; pytest's own warning capture intercepts it here, so it is checked in
    the engine tests above.)"""
    from napari_temseg.widgets import _tasks
    from napari_temseg.widgets import denoise as denoise_mod

    errors: list[str] = []  # a job's failure is notified by the runner, for every dock
    monkeypatch.setattr(_tasks, "show_error", lambda m: errors.append(str(m)))
    viewer = make_napari_viewer()
    w = denoise_mod.DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._device.value = "cpu"

    w._image.value = viewer.add_image(np.full((40, 40), np.nan, np.float32), name="blank")
    w.run()
    qtbot.waitUntil(lambda: not w._task.running, timeout=60_000)
    assert errors and "every pixel is NaN or infinite" in errors[-1]
    assert "blank denoised" not in viewer.layers

    holed = _image(6)
    holed[:2, :2] = np.nan
    w._image.value = viewer.add_image(holed, name="holed")
    w.run()
    qtbot.waitUntil(lambda: "holed denoised" in viewer.layers, timeout=60_000)
    out = viewer.layers["holed denoised"].data
    assert np.isnan(out[:2, :2]).all() and np.isfinite(out[2:, 2:]).all()
