"""What `temseg denoise/segment/measure` write keeps the input's shape, axes and calibration.

Uncalibrated stays uncalibrated down to the measurement table (pixels, px²); a (1, H, W)
stack stays (1, H, W); a time axis stays a time axis; colour is made grey once, with a
note, instead of being processed as rows of 3 pixels. Also every TIFF of the corpus
(tests/tiff_corpus.py) goes through denoise, segment and measure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_temseg.cli import main
from napari_temseg.io import read, write_image, write_labels
from tiff_corpus import variants

torch.set_num_threads(1)  # tiny images on a shared 2-core box
VARIANTS = variants()


@pytest.fixture
def segmenter(tiny_segmenter) -> str:
    return tiny_segmenter


def _denoise(path, out) -> int:
    return main(
        ["denoise", str(path), "-o", str(out), "--device", "cpu", "--tile", "64", "--overlap", "8"]
    )


def _segment(path, model, out) -> int:
    return main(["segment", str(path), "--model", model, "-o", str(out), "--device", "cpu"])


def test_uncalibrated_stays_uncalibrated_down_to_the_table(tmp_path, segmenter):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "raw.npy", rng.normal(100, 10, (64, 64)).astype(np.float32))
    assert read(tmp_path / "raw.npy")[0].pixel_size_nm is None

    assert _denoise(tmp_path / "raw.npy", tmp_path / "den") == 0
    (denoised,) = read(tmp_path / "den" / "raw.tif")
    assert denoised.pixel_size_nm is None and denoised.units == ("pixel", "pixel")

    assert _segment(tmp_path / "den" / "raw.tif", segmenter, tmp_path / "seg") == 0
    (mask,) = read(tmp_path / "seg" / "raw.tif")
    assert mask.pixel_size_nm is None

    assert main(["measure", str(tmp_path / "seg" / "raw.tif"), "-o", str(tmp_path / "t.csv")]) == 0
    columns = list(pd.read_csv(tmp_path / "t.csv").columns)
    assert "area_px2" in columns and not any("nm" in c for c in columns)


def test_calibration_and_axis_names_survive_denoise_and_segment(tmp_path, segmenter):
    stack = np.random.default_rng(1).normal(50, 5, (2, 48, 40)).astype(np.float32)
    write_image(tmp_path / "in" / "t.tif", stack, scale=(1.0, 0.2, 0.25), axes=["time", "y", "x"])
    (original,) = read(tmp_path / "in" / "t.tif")
    assert _denoise(tmp_path / "in" / "t.tif", tmp_path / "den") == 0
    assert _segment(tmp_path / "in" / "t.tif", segmenter, tmp_path / "seg") == 0
    for out in (tmp_path / "den" / "t.tif", tmp_path / "seg" / "t.tif"):
        (back,) = read(out)
        assert back.axes == original.axes  # names, sizes, scales, units


def test_a_single_frame_stack_stays_a_stack(tmp_path, segmenter):
    one = np.random.default_rng(2).normal(50, 5, (1, 48, 40)).astype(np.float32)
    np.save(tmp_path / "one.npy", one)
    assert _denoise(tmp_path / "one.npy", tmp_path / "den") == 0
    assert _segment(tmp_path / "one.npy", segmenter, tmp_path / "seg") == 0
    assert read(tmp_path / "den" / "one.tif")[0].shape == (1, 48, 40)
    assert read(tmp_path / "seg" / "one.tif")[0].shape == (1, 48, 40)
    assert tifffile.imread(tmp_path / "den" / "one.tif").size == one.size


def test_colour_is_made_grey_with_a_note(tmp_path, capsys):
    rgb = np.zeros((64, 48, 3), np.uint8)
    rgb[..., 0] = 200  # red: not the same in every channel
    rgb[16:48, 8:40, 1] = 100
    tifffile.imwrite(tmp_path / "colour.tif", rgb, photometric="rgb")
    assert _denoise(tmp_path / "colour.tif", tmp_path / "den") == 0
    err = capsys.readouterr().err
    assert err.count("temseg: note: colour.tif: a colour (RGB) image: converted to grey") == 1
    (out,) = read(tmp_path / "den" / "colour.tif")
    assert out.shape == (64, 48)
    assert "converted to grey" in out.metadata["original_metadata"]["notes"][0]


@pytest.mark.parametrize("samples", [2, 3, 4])
def test_a_colour_or_alpha_png_is_one_grey_picture(tmp_path, capsys, samples):
    """A PNG holds one picture: its samples were read as frames (an RGB screenshot
    denoised as 128 strips of 128x3, alpha averaged into the result)."""
    import imagecodecs

    grey = np.random.default_rng(3).poisson(50, (64, 48)).astype(np.uint8)
    alpha = [np.full_like(grey, 255)] if samples in (2, 4) else []
    pixels = np.stack([grey] * (1 if samples == 2 else 3) + alpha, -1)
    (tmp_path / "shot.png").write_bytes(imagecodecs.png_encode(pixels))
    assert _denoise(tmp_path / "shot.png", tmp_path / "den") == 0
    err = capsys.readouterr().err
    said = "alpha dropped" if samples != 3 else "equal channels: read as grey"
    assert err.count(said) == 1, err
    (out,) = read(tmp_path / "den" / "shot.tif")
    assert out.shape == (64, 48) and out.kind == "image"
    assert abs(float(np.mean(out.data)) - float(grey.mean())) < 0.05 * float(grey.mean())


def test_black_and_white_mask_stored_as_rgb_is_measured_as_labels(tmp_path, capsys):
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[10:30, 10:30] = 255  # white on black, as such masks usually are
    mask[40:60, 35:60] = 255
    tifffile.imwrite(tmp_path / "rgbmask.tif", mask, photometric="rgb")
    assert main(["measure", str(tmp_path / "rgbmask.tif"), "-o", str(tmp_path / "t.csv")]) == 0
    assert "equal channels: read as grey" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "t.csv")
    assert sorted(table["area_px2"]) == [400, 500]


def _expected_plane_shape(name: str) -> tuple[int, ...]:
    variant = VARIANTS[name]
    return variant.shape[:-1] if variant.rgb else variant.shape


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_corpus_tiff_denoises_and_segments(tmp_path, segmenter, name):
    path = tmp_path / f"{name}.tif"
    VARIANTS[name].write(path)
    (image,) = read(path)[:1]
    assert _denoise(path, tmp_path / "den") == 0
    assert _segment(path, segmenter, tmp_path / "seg") == 0
    for out in (tmp_path / "den" / path.name, tmp_path / "seg" / path.name):
        (back,) = read(out)[:1]
        assert back.shape == _expected_plane_shape(name)
        assert back.pixel_size_nm == image.pixel_size_nm or back.pixel_size_nm == pytest.approx(
            image.pixel_size_nm
        )
    measured = main(["measure", str(tmp_path / "seg" / path.name), "-o", str(tmp_path / "t.csv")])
    assert measured == (0 if len(_expected_plane_shape(name)) <= 3 else 1)  # 4D: refused


@pytest.mark.parametrize("frames", [1, 2])
def test_imagej_153_masks_are_measured(tmp_path, frames):
    """8-bit ImageJ masks (0/255) as public segmentation sets ship them, 2 nm pixels."""
    from tiff_corpus import imagej153

    mask = np.zeros((frames, 40, 40), np.uint8)
    mask[:, 5:15, 5:15] = 255
    mask[:, 20:35, 20:30] = 255
    path = tmp_path / "ij.tif"
    imagej153(path, mask, [f"slice {i}" for i in range(frames)], 0.002)
    assert main(["measure", str(path), "-o", str(tmp_path / "t.csv")]) == 0
    areas = sorted(pd.read_csv(tmp_path / "t.csv")["area_nm2"])
    assert areas == pytest.approx([400.0] * frames + [600.0] * frames)


def test_measured_masks_written_by_us_keep_their_nm(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 2
    write_labels(tmp_path / "m.tif", mask, scale=(0.5, 0.5))
    assert main(["measure", str(tmp_path / "m.tif"), "-o", str(tmp_path / "t.csv")]) == 0
    assert pd.read_csv(tmp_path / "t.csv")["area_nm2"].max() == pytest.approx(64 * 0.25)
