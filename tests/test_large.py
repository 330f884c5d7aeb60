"""Frames larger than memory: band-by-band prediction and tiled writing (engine.large, io.TileStream).

The 16k x 16k case is a benchmark (benchmarks/bench_large.py); here the same code runs on
small frames with small bands, and checks what makes it safe to use on big ones: the
result matches the whole-frame one, only one band is ever read, and a failure leaves no
file behind.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_temseg import cli
from napari_temseg.engine import Cancelled
from napari_temseg.engine import large as large_mod
from napari_temseg.engine.denoise import denoise, denoise_bands
from napari_temseg.engine.large import band_rows, is_large
from napari_temseg.engine.segment import segment, segment_bands
from napari_temseg.io import TileStream, WriterError, read, write_image, write_labels
from napari_temseg.models import build_model, load_model, save_checkpoint
from napari_temseg.pipeline.batch import output_is_complete
from napari_temseg.synth import simulate


@pytest.fixture(scope="module")
def micrograph() -> np.ndarray:
    return simulate("stem", (520, 300), pixel_size_nm=0.1, dose=100, seed=3).noisy


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    net = build_model(
        {"arch": "unet", "in_channels": 1, "out_channels": 2, "base": 8, "depth": 3}
    ).eval()
    return net, {"task": "segment", "class_names": ["support", "particle"]}


class RecordingArray:
    """A lazily sliced array that remembers how many rows each read asked for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[int] = []
        self.whole_reads = 0

    def __getitem__(self, key):
        out = self.data[key]
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice) and (rows.step or 1) == 1:
            self.reads.append(out.shape[0])
        return out

    def __array__(self, dtype=None, copy=None):
        # nothing may read it whole (the statistics are sampled block by block)
        self.whole_reads += 1
        return np.asarray(self.data, dtype=dtype)


def test_band_plan_covers_every_row_once_with_clipped_halos():
    plan = band_rows(2500, band=1024, halo=64)
    assert [(r0, r1) for r0, r1, _, _ in plan] == [(0, 1024), (1024, 2048), (2048, 2500)]
    assert [(h0, h1) for _, _, h0, h1 in plan] == [(0, 1088), (960, 2112), (1984, 2500)]
    assert is_large((9000, 9000)) and not is_large((8192, 8192))
    assert not is_large((20, 9000, 9000)), "stacks stream frame by frame instead"
    with pytest.raises(ValueError):
        band_rows(100, band=0)


def test_banded_denoising_matches_the_whole_frame_and_reads_one_band_at_a_time(micrograph):
    model = load_model("stem-denoise")
    # 256 px tiles (overlap 32) and the default halo (64): with 128 px tiles and a 16 px
    # overlap the whole frame's own tile seams differ from the bands' by up to 1.2 % of the
    # range (measured with a GPU-trained STEM candidate, 2026-12-04), which says nothing of banding
    whole = denoise(micrograph, model, device="cpu", tile=256, overlap=32)
    lazy = RecordingArray(micrograph)
    done = []
    bands = list(
        denoise_bands(
            lazy,
            model,
            "cpu",
            tile=256,
            overlap=32,
            band=128,
            halo=64,
            progress=lambda d, t: done.append((d, t)),
        )
    )
    banded = np.concatenate(bands)
    assert [b.shape[0] for b in bands] == [128, 128, 128, 128, 8]
    assert max(lazy.reads) <= 128 + 2 * 64, "read more than one band and its halo at once"
    assert lazy.whole_reads == 0, "statistics are sampled block by block too"
    span = float(np.ptp(whole))
    diff = np.abs(banded - whole)
    # tiles are blended differently near the cuts; nothing a viewer or measurement sees
    assert diff.max() < 0.01 * span and diff.mean() < 0.0002 * span
    assert abs(float(banded.mean()) - float(whole.mean())) < 0.001 * span
    totals = {t for _, t in done}
    assert len(totals) == 1 and done[-1][0] == done[-1][1], "progress ends at its total"
    assert all(b >= a for (a, _), (b, _) in itertools.pairwise(done))


def test_banded_segmentation_agrees_with_the_whole_frame(micrograph, segmenter):
    whole = segment(micrograph, segmenter, device="cpu", tile=128, overlap=16)
    banded = np.concatenate(
        list(segment_bands(micrograph, segmenter, "cpu", tile=128, overlap=16, band=128))
    )
    assert banded.dtype == np.uint8 and banded.shape == micrograph.shape
    assert set(np.unique(banded)) <= {1, 2}
    assert np.mean(banded == whole) > 0.995


def test_cancel_stops_between_bands_and_leaves_no_file(micrograph, tmp_path):
    model = load_model("stem-denoise")
    cancel = threading.Event()

    def stop_after_first(done, total):
        cancel.set()

    gen = denoise_bands(
        micrograph,
        model,
        "cpu",
        tile=128,
        overlap=16,
        band=128,
        progress=stop_after_first,
        cancel=cancel,
    )
    with pytest.raises(Cancelled):
        write_image(tmp_path / "out.tif", TileStream(micrograph.shape, np.float32, gen))
    assert list(tmp_path.iterdir()) == [], "a cancelled write must not leave a file"


def test_tile_stream_writes_a_calibrated_tiled_tiff_that_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 3, size=(700, 530)).astype(np.uint8)
    bands = (labels[r : r + 512] for r in range(0, 700, 512))
    write_labels(
        tmp_path / "m.tif",
        TileStream(labels.shape, np.uint8, bands),
        scale=(0.05, 0.05),
        class_names=["support", "particle"],
    )
    back = read(tmp_path / "m.tif")[0]
    assert np.array_equal(np.asarray(back.data), labels)
    assert back.pixel_size_nm == pytest.approx(0.05)
    assert output_is_complete(tmp_path / "m.tif")
    import tifffile

    with tifffile.TiffFile(tmp_path / "m.tif") as tf:
        page = tf.pages[0]
        assert page.is_tiled and page.tilewidth == 256
        # baseline resolution tags too, for readers that know no ImageJ (px per cm)
        num, den = page.tags["XResolution"].value
        assert 1e7 / (num / den) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "bands, message",
    [
        ([np.zeros((256, 99), np.uint8)], "width"),
        ([np.zeros((256, 100), np.uint8)], "rows"),
        ([np.zeros((256, 100), np.uint8)] * 3, "more than"),
    ],
)
def test_tile_stream_refuses_bands_that_do_not_fit(tmp_path, bands, message):
    with pytest.raises(WriterError, match=message):
        write_labels(tmp_path / "m.tif", TileStream((600, 100), np.uint8, iter(bands)))
    assert not list(tmp_path.glob("*.tif"))


def test_cli_processes_a_large_frame_band_by_band(tmp_path, micrograph, segmenter, monkeypatch):
    monkeypatch.setattr(large_mod, "LARGE_FRAME_PX", 200 * 200)
    monkeypatch.setattr(large_mod, "BAND_ROWS", 256)
    write_image(tmp_path / "big.tif", micrograph, scale=(0.1, 0.1))
    out = tmp_path / "out"
    args = ["--tile", "128", "--overlap", "16", "--device", "cpu"]
    assert cli.main(["denoise", str(tmp_path / "big.tif"), "-o", str(out), *args]) == 0
    den = read(out / "big.tif")[0]
    assert den.pixel_size_nm == pytest.approx(0.1) and den.shape == micrograph.shape
    # the command's default, two orientations
    model = load_model("stem-denoise")
    whole = denoise(micrograph, model, device="cpu", tile=128, overlap=16, tta=2)
    assert np.abs(np.asarray(den.data) - whole).max() < 0.02 * float(np.ptp(whole))
    import tifffile

    with tifffile.TiffFile(out / "big.tif") as tf:
        assert tf.pages[0].is_tiled, "a large frame is written tile by tile"

    save_checkpoint(tmp_path / "seg.safetensors", *segmenter)
    seg_out = tmp_path / "masks"
    cmd = ["segment", str(tmp_path / "big.tif"), "--model", str(tmp_path / "seg.safetensors")]
    monkeypatch.setattr(large_mod, "LARGE_FRAME_PX", 10**9)  # the option decides alone
    assert cli.main([*cmd, "-o", str(seg_out), *args, "--band-above", "0.04"]) == 0
    mask = read(seg_out / "big.tif")[0]
    whole_mask = segment(micrograph, segmenter, device="cpu", tile=128, overlap=16)
    assert np.mean(np.asarray(mask.data) == whole_mask) > 0.995
    with tifffile.TiffFile(seg_out / "big.tif") as tf:
        assert tf.pages[0].is_tiled
    assert mask.pixel_size_nm == pytest.approx(0.1)
    # resume: the tiled output counts as complete and is skipped
    assert cli.main([*cmd, "-o", str(seg_out), *args]) == 0
    summary = (seg_out / "summary.json").read_text()
    assert '"skipped": 1' in summary


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_pages_of_a_memory_mapped_input_are_given_back(tmp_path):
    """Reading a mapped file band by band must not keep every page read resident."""
    import tifffile

    from napari_temseg.engine.large import release_pages

    path = tmp_path / "big.tif"
    mm = tifffile.memmap(path, shape=(2048, 2048), dtype=np.float32, photometric="minisblack")
    mm[:] = 1.0
    mm.flush()
    del mm
    data = tifffile.memmap(path, mode="r")

    def file_pages_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no RssFile line")

    before = file_pages_mb()
    assert float(np.asarray(data[:1536]).sum()) == 1536 * 2048  # touch 12 MB of pages
    touched = file_pages_mb()
    release_pages(data)
    after = file_pages_mb()
    assert touched - before > 8, "the read should have mapped the pages in"
    assert after - before < 2, f"{after - before:.1f} MB still resident after release"


def test_frame_statistics_read_block_by_block_equal_the_whole_frame_ones(tmp_path):
    import tifffile

    from napari_temseg.engine.large import frame_stats
    from napari_temseg.models.normalize import Normalization

    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, 50.0, size=(1500, 1300)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", data)
    mapped = tifffile.memmap(tmp_path / "f.tif", mode="r")
    for norm in (Normalization(max_samples=4096), Normalization(), Normalization("none")):
        assert frame_stats(mapped, norm, rows=100) == norm.stats(data)
    from napari_temseg.engine.binning import bin_frame

    for k in (2, 4):  # binned: the sampled rows only, the same sample as binning it all
        for norm in (Normalization(max_samples=4096), Normalization()):
            assert frame_stats(mapped, norm, rows=100, bin=k) == norm.stats(bin_frame(data, k))
    bordered = data.copy()
    bordered[:, :400] = 0  # a zero border, 31 %: left out binned or not, as in one piece
    for k in (1, 2):
        got = frame_stats(bordered, Normalization(), rows=100, bin=k)
        assert got == Normalization().stats(bin_frame(bordered, k) if k > 1 else bordered)
        assert got[0] > 0, "the border set the low percentile"


def test_a_band_that_is_mostly_border_keeps_it_as_the_whole_frame_does(micrograph):
    """Each band is judged by the whole frame's padding values: the top band of a rotated
    frame, mostly border, had none of its own (over three quarters) and was denoised."""
    from scipy import ndimage

    frame = ndimage.rotate(micrograph.astype(np.float32), 40, reshape=True, order=1, cval=0.0)
    model = load_model("stem-denoise")
    whole = denoise(frame, model, device="cpu", tile=256, overlap=32)
    banded = np.concatenate(
        list(denoise_bands(frame, model, "cpu", tile=256, overlap=32, band=128, halo=64))
    )
    border = frame == 0
    assert (whole[border] == 0).all() and (banded[border] == 0).all()


def test_a_model_that_needs_more_context_gets_it_in_tiles_and_bands():
    """hrtem-denoise looks about 96 px around a pixel (its header's ``context_px``, from
    scripts/measure_context.py): with the plain 32 px overlap its tiles leave seams of
    several % of the range; the engine raises the overlap (and the bands' halo) to it."""
    frame = simulate("hrtem", 512, dose=20.0, seed=7).noisy
    net, meta = load_model("hrtem-denoise")
    assert meta["context_px"] == 96
    plain = {k: v for k, v in meta.items() if k != "context_px"}
    kw = {"device": "cpu", "amp": False}  # float32: the same sums in every tile
    whole = denoise(frame, (net, meta), tile=512, **kw)
    span = float(np.ptp(np.percentile(frame, [0.5, 99.5])))
    seams = np.abs(denoise(frame, (net, plain), tile=256, overlap=32, **kw) - whole)
    tiled = np.abs(denoise(frame, (net, meta), tile=256, overlap=32, **kw) - whole)
    assert seams.max() > 0.02 * span, "the plain overlap no longer shows the seam"
    assert tiled.max() < 0.005 * span
    bands = np.concatenate(
        list(denoise_bands(frame, (net, meta), tile=256, overlap=32, band=192, halo=32, **kw))
    )
    assert np.abs(bands - whole).max() < 0.01 * span
