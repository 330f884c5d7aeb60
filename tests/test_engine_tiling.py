"""Tiled inference: seamless blending, stacks, dask, progress, cancel, out-of-memory."""

from __future__ import annotations

import itertools
import threading

import dask.array as da
import numpy as np
import pytest
import torch

from napari_temseg.engine import (
    Cancelled,
    Normalization,
    denoise,
    predict_tiled,
    tile_starts,
    tiles_per_frame,
)
from napari_temseg.models import UNet

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def net() -> UNet:
    torch.manual_seed(0)
    return UNet(base=4, depth=2).eval()


def _pattern(h: int = 150, w: int = 130) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (1000 + 200 * np.sin(yy / 6) * np.cos(xx / 4) + 0.5 * yy).astype(np.float32)


@pytest.mark.parametrize(
    "length,tile,overlap", [(100, 32, 8), (256, 256, 32), (10, 64, 16), (300, 96, 40)]
)
def test_tile_starts_cover_everything(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_tiled_equals_untiled(net):
    img = _pattern()
    whole = denoise(img, (net, {}), device="cpu", tile=512, amp=False)  # exact sums
    tiled = denoise(img, (net, {}), device="cpu", tile=64, overlap=24, amp=False)
    assert tiled.dtype == np.float32 and tiled.shape == img.shape
    assert np.abs(tiled - whole).max() < 1e-3 * np.ptp(whole)


def _box(x: torch.Tensor) -> torch.Tensor:
    """A 9x9 mean with zero padding: blind to anything beyond the border, like any conv net."""
    return torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=True)


@pytest.mark.parametrize("shape,tile", [((100, 90), 256), ((150, 130), 64), ((5, 7), 64)])
def test_the_border_gets_mirrored_context(shape, tile):
    """At the image border the network sees the frame mirrored outward, not zeros: the
    result is the network on the mirrored frame, cropped (exact in one tile, up to the
    blending inside; the mirror is as wide as the overlap, or the frame if smaller)."""
    img = _pattern(*shape)
    got = predict_tiled(img, _box, tile=tile, overlap=16)
    m = min(16, *shape)
    padded = np.pad(img.astype(np.float64), m, mode="reflect")
    want = _box(torch.from_numpy(padded)[None, None]).numpy()[0, 0]
    want = want[m : m + shape[0], m : m + shape[1]]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    zero_padded = _box(torch.from_numpy(img.astype(np.float64))[None, None]).numpy()[0, 0]
    assert np.abs(got[0] - zero_padded[0]).max() > 100  # not the zero-padded answer


def test_no_seams_on_a_ramp_with_a_trained_model():
    """The bundled denoiser on a smooth ramp: tiled output as smooth as untiled."""
    yy, xx = np.mgrid[:384, :320].astype(np.float32)
    ramp = 500 + 2.0 * yy + 1.0 * xx
    whole = denoise(ramp, "stem-denoise", device="cpu", tile=512)
    tiled = denoise(ramp, "stem-denoise", device="cpu", tile=128, overlap=32)
    assert np.abs(tiled - whole).max() < 0.01 * np.ptp(whole)
    # a seam would show as a kink: the second difference at tile borders stands out
    d2 = np.abs(np.diff(tiled[:, 40:280], n=2, axis=0)).mean(axis=1)
    inner = d2[20:-20]
    assert inner.max() < 5 * np.median(inner) + 1e-3 * np.ptp(whole)


def test_stack_frame_by_frame_and_dask(net):
    frames = np.stack([_pattern(), 3 * _pattern() + 50, _pattern()[::-1].copy()])
    stack = frames.reshape(3, *frames.shape[1:])
    out = denoise(stack, (net, {}), device="cpu", tile=64, overlap=16)
    for i in range(3):
        single = denoise(frames[i], (net, {}), device="cpu", tile=64, overlap=16)
        np.testing.assert_allclose(out[i], single, rtol=1e-5, atol=1e-3)
    lazy = da.from_array(stack[None], chunks=(1, 1, 75, 65))  # 4D: (t, z, y, x)
    out_lazy = denoise(lazy, (net, {}), device="cpu", tile=64, overlap=16)
    assert out_lazy.shape == (1, *stack.shape)
    np.testing.assert_allclose(out_lazy[0], out, rtol=1e-5, atol=1e-3)


def test_output_in_input_units(net):
    img = (_pattern() * 30).astype(np.uint16)
    out = denoise(img, (net, {}), device="cpu", tile=64, overlap=16)
    assert out.dtype == np.float32
    lo, hi = np.percentile(img, [0.5, 99.5])
    assert lo - (hi - lo) < np.median(out) < hi + (hi - lo)  # the network's output, mapped back


def test_progress_and_cancel_between_tiles(net):
    img = _pattern(200, 200)
    seen: list[tuple[int, int]] = []
    denoise(
        img,
        (net, {}),
        device="cpu",
        tile=64,
        overlap=16,
        batch_size=1,
        progress=lambda d, t: seen.append((d, t)),
    )
    total = tiles_per_frame(img.shape, 64, 16)
    assert seen == [(i, total) for i in range(1, total + 1)]

    cancel = threading.Event()
    calls = []

    def fn(x):
        calls.append(1)
        if len(calls) == 3:
            cancel.set()
        return x

    with pytest.raises(Cancelled, match="3 of"):
        predict_tiled(img, fn, tile=64, overlap=16, batch_size=1, cancel=cancel)
    assert len(calls) == 3


def test_out_of_memory_shrinks_batch_then_tile():
    img = _pattern(160, 160)
    shapes = []

    def fn(x):
        shapes.append(tuple(x.shape))
        if x.shape[0] > 1 or x.shape[-1] > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return 2 * x

    norm = Normalization(method="none")
    out = predict_tiled(img, fn, tile=128, overlap=16, batch_size=4, normalization=norm)
    np.testing.assert_allclose(out, 2 * img, rtol=1e-5)
    assert shapes[0] == (4, 1, 128, 128) and shapes[-1] == (1, 1, 64, 64)


def test_multichannel_output_for_segmentation():
    img = _pattern(90, 70)

    def probs(x):
        p = torch.sigmoid(x)
        return torch.cat([p, 1 - p, torch.zeros_like(p)], dim=1)

    out = predict_tiled(
        img[None],
        probs,
        tile=32,
        overlap=8,
        out_channels=3,
        normalization=Normalization(),
        denormalize=False,
    )
    assert out.shape == (1, 3, 90, 70)
    np.testing.assert_allclose(out[0].sum(axis=0), 1.0, atol=1e-5)
    assert 0 <= out.min() and out.max() <= 1


def test_bad_input_is_reported(net):
    for bad, pattern in [
        (np.zeros(10, np.float32), "2D image"),
        (np.zeros((0, 10), np.float32), "empty"),
        (np.zeros((8, 8), complex), "grayscale"),
        (np.zeros((64, 64, 3), np.uint8), "RGB"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            denoise(bad, (net, {}), device="cpu")
    with pytest.raises(ValueError, match="overlap"):
        denoise(_pattern(), (net, {}), device="cpu", tile=64, overlap=32)
    with pytest.raises(ValueError, match="tile"):
        denoise(_pattern(), (net, {}), device="cpu", tile=8)
    seg_meta = {"task": "segment"}
    with pytest.raises(ValueError, match="not to denoise"):
        denoise(_pattern(), (net, seg_meta), device="cpu")


def test_nan_pixels_do_not_spread(net):
    """NaN pixels stay NaN (no data; see test_engine_finite.py), and spread nowhere."""
    img = _pattern()
    img[40:42, 50:53] = np.nan
    out = denoise(img, (net, {}), device="cpu", tile=64, overlap=16)
    assert np.isnan(out[40:42, 50:53]).all() and np.isfinite(out[np.isfinite(img)]).all()


def test_bundled_model_improves_a_fresh_simulated_image():
    from napari_temseg.synth import simulate

    for kind in ("stem", "hrtem"):
        s = simulate(kind, 256, dose=50.0, seed=987_654)
        out = denoise(s.noisy, f"{kind}-denoise", device="cpu")
        rng = np.ptp(s.clean)

        def psnr(a, clean=s.clean, rng=rng):
            return 10 * np.log10(rng**2 / np.mean((a - clean) ** 2))

        assert psnr(out) > psnr(s.noisy) + 3.0, kind


def test_bfloat16_where_the_cpu_computes_it_stays_close_to_float32():
    """The network runs in bfloat16 on a CPU that computes it natively (about twice as
    fast); the answer stays within 1 % of the frame's range of float32's, and ``amp=False``
    keeps float32."""
    from napari_temseg.engine.device import cpu_has_fast_bf16
    from napari_temseg.synth import simulate

    if not cpu_has_fast_bf16():
        pytest.skip("this CPU computes no bfloat16 natively: float32 throughout")
    frame = simulate("hrtem", 128, dose=100.0, seed=3).noisy
    exact = denoise(frame, "hrtem-denoise", "cpu", amp=False)
    fast = denoise(frame, "hrtem-denoise", "cpu")
    span = float(np.ptp(np.percentile(frame, [0.5, 99.5])))
    assert 0 < np.abs(fast - exact).max() < 0.01 * span
