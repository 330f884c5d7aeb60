"""Test-time augmentation: a segmenter or a denoiser averaged over the eight rotations and
mirrorings."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from conftest import train_segmenter_file
from napari_temseg.cli import main
from napari_temseg.engine import tta as tta_mod
from napari_temseg.engine.segment import load_segmenter, segment
from napari_temseg.engine.tta import (
    SHRINK_BANDS,
    DihedralMean,
    _blur,
    orientation_count,
    shrink_bands,
    shrink_disagreement,
    with_tta,
)
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


def test_file_jobs_wrap_segmenters_and_denoisers_each_their_way(segmenter, tmp_path):
    job = FileJob("segment", segmenter, str(tmp_path), device="cpu", tta=True)
    net = job.load()[0]
    assert isinstance(net, DihedralMean) and net.probabilities
    assert not isinstance(FileJob("segment", segmenter, str(tmp_path)).load()[0], DihedralMean)
    net = FileJob("denoise", None, str(tmp_path), device="cpu", tta=True).load()[0]
    assert isinstance(net, DihedralMean) and not net.probabilities  # outputs, not softmax


# ---------------------------------------------------------------- denoising


@pytest.fixture(scope="module")
def low_dose():
    """Simulated HRTEM at 2 e/px: where the bundled network invents grain."""
    s = simulate("hrtem", 192, pixel_size_nm=0.05, dose=2, seed=11)
    return s.noisy.astype(np.float32), s.recorded_clean.astype(np.float64)


def _bundled_and_tile(frame: np.ndarray) -> tuple[nn.Module, dict, torch.Tensor]:
    """``hrtem-denoise`` and the frame's top-left 96 px, normalised as the engine does
    it: a (1, 1, 96, 96) tile to run the network on by hand."""
    from napari_temseg.models import load_model
    from napari_temseg.models.normalize import Normalization

    net, meta = load_model("hrtem-denoise", "cpu")
    norm = Normalization()
    x = torch.from_numpy(norm.apply(frame[:96, :96].astype(np.float64), norm.stats(frame)))
    return net, meta, x.float()[None, None]


def test_a_denoiser_is_averaged_over_its_outputs_and_the_same_every_way_round(low_dose):
    """Eight passes done by hand, averaged and shrunk where they disagree, and the same
    whichever way the frame is turned or mirrored; a single pass is not (so the option is
    not a no-op)."""
    from napari_temseg.engine import denoise

    frame = low_dose[0]
    net, meta, x = _bundled_and_tile(frame)
    with torch.no_grad():
        y = DihedralMean(net, probabilities=False)(x)
        passes = []
        for turns in range(4):
            for mirror in (False, True):
                t = torch.rot90(x, turns, (-2, -1))
                q = net(t.flip(-1) if mirror else t)
                passes.append(torch.rot90(q.flip(-1) if mirror else q, -turns, (-2, -1)))
    stack = torch.stack(passes)
    fine = _blur(stack.reshape(8, 1, 96, 96), SHRINK_BANDS[0][0]).reshape(stack.shape)
    spreads = [stack.var(0, unbiased=False), fine.var(0, unbiased=False)]
    by_hand = shrink_bands(stack.mean(0), spreads)
    torch.testing.assert_close(y, by_hand, rtol=1e-4, atol=1e-5)
    assert float((y - stack.mean(0)).abs().max()) > 1e-3  # the shrinkage did something

    kw = {"device": "cpu", "tile": 256}
    whole = denoise(frame, (net, meta), tta=True, **kw)
    turned = denoise(np.rot90(frame).copy(), (net, meta), tta=True, **kw)
    np.testing.assert_allclose(np.rot90(turned, -1), whole, rtol=1e-4, atol=1e-3)
    one, one_turned = (
        denoise(frame, (net, meta), **kw),
        denoise(np.rot90(frame).copy(), (net, meta), **kw),
    )
    assert np.abs(np.rot90(one_turned, -1) - one).max() > 0.05 * np.ptp(one)


def test_detail_the_passes_agree_on_is_kept_and_detail_they_scatter_on_is_smoothed():
    """shrink_disagreement: no spread keeps the mean exactly; a spread as large as the
    detail leaves its smooth part; in between, the more spread the less detail."""
    from napari_temseg.engine.tta import SHRINK_SIGMA

    gen = torch.Generator().manual_seed(1)
    mean = torch.rand(1, 1, 64, 64, generator=gen)
    detail_power = float(((mean - _blur(mean, SHRINK_SIGMA)) ** 2).mean())
    torch.testing.assert_close(shrink_disagreement(mean, torch.zeros_like(mean)), mean)
    smooth = _blur(mean, SHRINK_SIGMA)
    scattered = shrink_disagreement(mean, torch.full_like(mean, 10 * detail_power))
    torch.testing.assert_close(scattered, smooth)
    left = [
        float((shrink_disagreement(mean, torch.full_like(mean, f * detail_power)) - smooth).std())
        for f in (0.1, 0.3, 0.6)
    ]
    assert left[0] > left[1] > left[2] > 0


def test_the_coarse_band_is_shrunk_by_its_own_spread_and_weight():
    """shrink_bands: one band is shrink_disagreement; with two, coarse detail the passes
    agree on is kept whole, and coarse detail they scatter on by as little as 1/weight of its
    power (a fifth: the coarse band's weight is 5) is smoothed away, leaving the fine band
    as it was."""
    gen = torch.Generator().manual_seed(3)
    mean = _blur(torch.rand(1, 1, 128, 128, generator=gen), 2.0)
    spread = torch.full_like(mean, 1e-4)
    torch.testing.assert_close(
        shrink_bands(mean, [spread], ((4.0, 1.0),)), shrink_disagreement(mean, spread, 4.0, 1.0)
    )
    (w_fine, _), (w_coarse, weight) = SHRINK_BANDS
    rest = _blur(mean, w_fine)
    coarse = rest - _blur(rest, w_coarse)
    power = float(_blur(coarse * coarse, w_coarse).max())  # the most the band has anywhere
    none = torch.zeros_like(mean)
    torch.testing.assert_close(shrink_bands(mean, [none, none]), mean)
    scattered = shrink_bands(mean, [none, torch.full_like(mean, power / weight)])
    torch.testing.assert_close(scattered, mean - coarse, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="2 bands need as many spreads"):
        shrink_bands(mean, [none])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_shrinkage_stays_exact_and_finite_under_autocast(dtype):
    """The tiler runs models under autocast on a GPU: a flat tile (squared detail that
    underflows in float16) and a faint one come back finite and in float32."""
    flat = torch.full((1, 1, 40, 40), 0.45)
    faint = flat + 1e-4 * torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=dtype):
        for mean in (flat, faint):
            out = shrink_disagreement(mean, torch.full_like(mean, 1e-9))
            assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
            assert float((out - mean).abs().max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_averaged_denoiser_stays_finite_in_float32_under_autocast(dtype):
    """Both bands, as DihedralMean runs them (the passes smoothed, their moments), under
    autocast: a constant net (flat tile, no spread) gives its constant back in float32,
    and a net with a small orientation-dependent output stays finite."""
    torch.manual_seed(4)
    flat = DihedralMean(nn.Conv2d(1, 1, 1).requires_grad_(False), False)
    flat.net.weight.fill_(0.0)
    flat.net.bias.fill_(0.45)
    x = torch.rand(1, 1, 40, 40)
    tilted = DihedralMean(nn.Conv2d(1, 1, 3, padding=1).requires_grad_(False), False)
    with torch.autocast("cpu", dtype=dtype):
        out = flat(x)
        assert out.dtype == torch.float32 and float((out - 0.45).abs().max()) < 1e-2
        out = tilted(1e-3 * x)
        assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("n", [2, 8])
def test_averaging_takes_grain_off_the_bundled_denoiser_at_low_dose(low_dose, n):
    """On a simulated frame the network never saw, at 2 e/px, the average of two or of
    eight orientations is closer to the scene than one pass (measured on held-out
    simulated HRTEM at 1 e/px: +5.4 and +5.2 dB, ``bench_tta_shrink.py --pairs``)."""
    from napari_temseg.engine import denoise

    frame, clean = low_dose
    err = {
        k: float(np.mean((denoise(frame, "hrtem-denoise", "cpu", tile=256, tta=k) - clean) ** 2))
        for k in (1, n)
    }
    assert 10 * np.log10(err[1] / err[n]) > 0.3, err


def test_two_orientations_are_the_tile_and_its_quarter_turn_shrunk_by_their_variance(low_dose):
    """Two passes (as is, turned by 90 degrees) averaged and shrunk in both bands, their
    spread counted as the unbiased variance of two; not the same as eight passes."""
    net, _meta, x = _bundled_and_tile(low_dose[0])
    with torch.no_grad():
        y = DihedralMean(net, probabilities=False, orientations=2)(x)
        eight = DihedralMean(net, probabilities=False)(x)
        stack = torch.stack([net(x), torch.rot90(net(torch.rot90(x, 1, (-2, -1))), -1, (-2, -1))])
    fine = _blur(stack.reshape(2, 1, 96, 96), SHRINK_BANDS[0][0]).reshape(stack.shape)
    spreads = [stack.var(0, unbiased=True), fine.var(0, unbiased=True)]
    torch.testing.assert_close(y, shrink_bands(stack.mean(0), spreads), rtol=1e-4, atol=1e-5)
    assert float((y - eight).abs().max()) > 1e-3


def test_an_orientation_count_there_is_none_of_is_refused_in_one_line(tmp_path, capsys):
    assert [orientation_count(k) for k in (False, True, 1, 2, 8)] == [1, 8, 1, 2, 8]
    for bad in (0, 3, 4):
        with pytest.raises(ValueError, match="orientations must be 1, 2 or 8"):
            orientation_count(bad)
    with pytest.raises(ValueError, match="orientations must be 1, 2 or 8"):
        FileJob("denoise", "hrtem-denoise", str(tmp_path), tta=4)
    tifffile.imwrite(tmp_path / "f.tif", np.ones((32, 32), np.float32))
    with pytest.raises(SystemExit):
        main(["denoise", str(tmp_path / "f.tif"), "-o", str(tmp_path / "o"), "--orientations", "4"])
    err = capsys.readouterr().err
    assert "invalid choice: 4" in err and "Traceback" not in err


def test_the_blur_as_a_matrix_is_the_convolution_it_replaces(monkeypatch):
    """Tiles are blurred by matrix products (faster on CPUs); the same sums as the mirrored
    convolution, also where a side is within the kernel's reach and is repeated instead."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 1, 96, 80), (1, 1, 30, 50), (2, 1, 10, 7)]
    images = [torch.randn(s, generator=gen) for s in shapes]
    fast = [_blur(x, sigma) for x in images for sigma in (4.0, 16.0)]
    monkeypatch.setattr(tta_mod, "MATRIX_SIDE", 0)  # every side by convolution
    slow = [_blur(x, sigma) for x in images for sigma in (4.0, 16.0)]
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("flags", "n"), [(["--tta"], 8), ([], 2), (["--orientations", "1"], 1)])
def test_denoise_from_the_command_line_with_orientations(low_dose, tmp_path, flags, n):
    """`temseg denoise` averages two orientations unless told otherwise (`--tta` is eight,
    `--orientations 1` one pass), writes what the engine gives and says so in the file."""
    from napari_temseg.engine import denoise

    frame = low_dose[0][:96, :96].copy()
    tifffile.imwrite(tmp_path / "f.tif", frame)
    argv = ["denoise", str(tmp_path / "f.tif"), "--model", "hrtem-denoise", "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "out"), *flags]) == 0
    want = denoise(frame, "hrtem-denoise", "cpu", tta=n)
    with tifffile.TiffFile(tmp_path / "out" / "f.tif") as tf:
        np.testing.assert_allclose(tf.asarray(), want, rtol=1e-5, atol=1e-4)
        info = tf.imagej_metadata["Info"]
    assert f'"denoised_orientations": {n}' in info, "the setting is kept"
    assert ("disagreement_smoothed_px" in info) == (n > 1)


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


def test_a_frame_streamed_in_bands_is_averaged_too(low_dose, tmp_path):
    """A batch job over a frame above its band threshold (``engine.large``) averages every
    band: the file matches the whole frame denoised with ``tta=True``."""
    from napari_temseg.engine import denoise

    frame = low_dose[0]
    tifffile.imwrite(tmp_path / "big.tif", frame)
    job = FileJob(
        "denoise",
        "hrtem-denoise",
        str(tmp_path / "out"),
        device="cpu",
        tta=True,
        large_frame_px=64 * 64,
    )
    (path,) = job(tmp_path / "big.tif")
    got = tifffile.imread(path)
    np.testing.assert_allclose(got, denoise(frame, "hrtem-denoise", "cpu", tta=True), atol=0.5)
    plain = denoise(frame, "hrtem-denoise", "cpu")
    assert (
        np.abs(got - plain).max()
        > 5 * np.abs(got - denoise(frame, "hrtem-denoise", "cpu", tta=True)).max()
    )


def test_a_model_is_never_averaged_both_ways(segmenter):
    model = load_segmenter(segmenter)
    with pytest.raises(ValueError, match="already averaged"):
        with_tta(with_tta(model), probabilities=False)
