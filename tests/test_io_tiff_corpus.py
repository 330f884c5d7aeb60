"""TIFFs from the wild (tests/tiff_corpus.py) open through every entry point.

The rule: reading calibration or descriptive metadata never makes a readable image
unreadable. tifffile is the reference: whatever it reads, we read, with the same pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_temseg.cli import main
from napari_temseg.io import info_dict, read, read_images
from napari_temseg.io.napari_hooks import get_reader
from tiff_corpus import variants

VARIANTS = variants()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, variant in VARIANTS.items():
        paths[name] = folder / f"{name}.tif"
        variant.write(paths[name])
    return paths


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reads_the_pixels_tifffile_reads_with_calibration(corpus, name):
    variant, path = VARIANTS[name], corpus[name]
    (image, *_) = read(path)
    assert image.shape == variant.shape
    reference = tifffile.imread(path)
    if variant.rgb and reference.shape != image.shape:  # planar colour: moved last
        reference = np.moveaxis(reference, 0, -1)
    assert np.array_equal(np.asarray(image.data).reshape(reference.shape), reference)
    if variant.pixel_size_nm is None:
        assert image.pixel_size_nm is None
    else:
        assert image.pixel_size_nm == pytest.approx(variant.pixel_size_nm)
    assert (image.axes[-1].name == "rgb") == variant.rgb
    assert info_dict(path)["shape"] == list(variant.shape)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_napari_reader_opens_one_layer(corpus, name):
    reader = get_reader(str(corpus[name]))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(corpus[name]))
    assert kind == "image" and kwargs["rgb"] == VARIANTS[name].rgb
    assert tuple(data.shape) == VARIANTS[name].shape


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_temseg_info_describes_it(corpus, name, capsys):
    assert main(["info", str(corpus[name]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == list(VARIANTS[name].shape)


def test_imagej_153_stack_with_labels_keeps_its_calibration(corpus):
    """The files of issue 14: no Compression tag, so tifffile gives compression as an int."""
    with tifffile.TiffFile(corpus["imagej153_labels_8bit"]) as tf:
        assert type(tf.pages[0].compression) is int  # what broke us
        assert tf.imagej_metadata["Labels"] == ["a", "b", "c"]
    (image,) = read_images(corpus["imagej153_labels_8bit"])
    assert image.kind == "stack" and image.dtype == np.uint8
    assert image.metadata["compression"] == "NONE"
    assert image.scale == pytest.approx((250.0, 250.0, 250.0))  # spacing 0.25 micron


@pytest.mark.parametrize("name", ["temseg_json_wrong"])
def test_unreadable_metadata_is_a_note_not_a_refusal(corpus, name):
    (image,) = read(corpus[name])
    assert image.pixel_size_nm is None
    notes = image.metadata["metadata_notes"]
    assert len(notes) == 1 and "ignored" in notes[0]


def test_a_failing_calibration_parser_degrades_to_uncalibrated(corpus, monkeypatch):
    """Whatever goes wrong in a calibration parser, the image still opens, uncalibrated."""
    from napari_temseg.io import tiff

    def broken(*_args):
        raise KeyError("a vendor quirk nobody has seen yet")

    monkeypatch.setattr(tiff, "_imagej_calibration", broken)
    (image,) = read(corpus["imagej_hyperstack_labels"])
    assert image.shape == (5, 32, 40) and image.pixel_size_nm is None
    assert image.metadata["calibration_source"] == "none in file"
    assert "calibration ignored (KeyError" in image.metadata["metadata_notes"][0]


def test_velox_like_tiff_brings_its_acquisition_facts_to_info(corpus, capsys):
    info = info_dict(corpus["fei_velox_like"])
    assert info["acquisition"] == {
        "microscope": "Talos F200X",
        "voltage_kV": pytest.approx(200.0),
        "dwell_time_us": pytest.approx(1.0),
        "acquisition_time": "2023-12-01T10:11:12",
    }
    assert main(["info", str(corpus["fei_velox_like"])]) == 0
    out = capsys.readouterr().out
    assert "microscope: Talos F200X" in out and "voltage: 200 kV" in out
    assert "dwell time: 1 µs" in out


def test_info_lists_what_metadata_was_ignored(corpus, capsys):
    assert main(["info", str(corpus["temseg_json_wrong"])]) == 0
    out = capsys.readouterr().out
    assert "pixel size: not calibrated" in out
    assert "note: napari-temseg metadata ignored" in out or "note: calibrated axes ignored" in out
