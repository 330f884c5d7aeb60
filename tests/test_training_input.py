"""Training input that cannot make a model is refused before training (issue 14).

Each case used to train and write a model (an all-NaN, constant or inf image; a 0/255 mask
giving a 255-class segmenter; an image given as labels giving a 4095-class one; a complex
image), or to fail with a misleading message (label -1). The checks live in the engine, so
the Train dock gets the same messages; the CLI prints them as one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_temseg.cli import main
from napari_temseg.engine.finetune import FinetuneConfig, Finetuner
from napari_temseg.engine.strokes import StrokeError, scribbles_from_mask
from napari_temseg.io import write_image, write_labels
from napari_temseg.synth import simulate

TINY = FinetuneConfig(steps=2, batch_size=2, patch=32, base=4, depth=2, device="cpu")


@pytest.fixture(scope="module")
def scene():
    s = simulate("stem", 64, pixel_size_nm=0.2, dose=100, seed=3)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=12, seed=0)
    return s.noisy.astype(np.float32), strokes


def _finetune_cli(tmp_path, image, labels, capsys, *extra):
    write_image(tmp_path / "img.tif", image, scale=(0.2, 0.2))
    if labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < 2**16:
        write_labels(tmp_path / "lab.tif", labels, scale=(0.2, 0.2))
    else:
        write_image(tmp_path / "lab.tif", labels, scale=(0.2, 0.2))
    out = tmp_path / "model.safetensors"
    argv = ["finetune", "--image", str(tmp_path / "img.tif"), "--labels"]
    argv += [str(tmp_path / "lab.tif"), "-o", str(out), "--init", "none", "--device", "cpu"]
    code = main([*argv, "--steps", "2", "--patch", "32", *extra])
    err = capsys.readouterr().err
    return code, err, out


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("temseg: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda im: np.full_like(im, np.nan), "no finite pixel"),
        (lambda im: np.full_like(im, np.inf), "no finite pixel"),
        (lambda im: np.full_like(im, 7.0), "constant"),
    ],
    ids=["all-nan", "all-inf", "constant"],
)
def test_finetune_refuses_an_image_with_nothing_to_learn(tmp_path, capsys, scene, make, words):
    image, strokes = scene
    code, err, out = _finetune_cli(tmp_path, make(image), strokes, capsys)
    assert code == 1 and words in _one_line(err)
    assert not out.exists()


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (lambda s: np.where(s == 2, 255, s).astype(np.uint8), "label 255"),
        (lambda s: np.where(s == 1, -1, s.astype(np.int16)), "negative label -1"),
        (lambda s: (np.arange(s.size) % 4095).reshape(s.shape).astype(np.uint16), "image"),
        (lambda s: s.astype(np.float32) + 0.5, "fractional"),
    ],
    ids=["0-255-mask", "minus-one", "image-as-labels", "fractional"],
)
def test_finetune_refuses_labels_that_are_not_strokes(tmp_path, capsys, scene, labels, words):
    image, strokes = scene
    code, err, out = _finetune_cli(tmp_path, image, labels(strokes), capsys)
    line = _one_line(err)
    assert code == 1 and words in line and "0 = not labelled" in line
    assert not out.exists()


def test_the_engine_refuses_the_same_for_the_train_dock(scene):
    image, strokes = scene
    with pytest.raises(StrokeError, match="complex"):
        Finetuner([image.astype(np.complex64)], [strokes], init="none", config=TINY)
    with pytest.raises(StrokeError, match="label 255"):
        Finetuner([image], [np.where(strokes == 2, 255, strokes)], init="none", config=TINY)
    with pytest.raises(StrokeError, match="constant"):
        Finetuner([np.zeros_like(image)], [strokes], init="none", config=TINY)


def test_a_few_non_finite_pixels_are_left_out_not_trained_on(scene):
    image, strokes = scene
    bad = image.copy()
    ys, xs = np.nonzero(strokes)
    bad[ys[:5], xs[:5]] = np.nan
    bad[0, 0] = np.inf
    tuner = Finetuner([bad], [strokes], init="none", config=TINY)
    frame = tuner.source.frames[0]
    assert np.isfinite(frame.image).all()
    assert not (frame.train[ys[:5], xs[:5]] | frame.val[ys[:5], xs[:5]]).any()


def test_a_zero_border_is_trained_on_as_it_is_segmented():
    """The zero border of a drift-corrected frame is filled for the network at inference
    with draws of the frame's own pixels (engine.finite.fill_at). Fine-tuning now sees the
    same values, not the raw zeros. Strokes there are kept: what reads as padding may be
    a class's vacuum (clipped at 0 beyond a straight edge)."""
    from napari_temseg.engine.finite import filled
    from napari_temseg.engine.tiling import predict_tiled

    s = simulate("stem", 256, pixel_size_nm=0.2, dose=100, seed=3)
    image = s.noisy.astype(np.float32)
    image[:, :80] = 0  # a drift-corrected frame's border
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=4, length=20, seed=0)
    assert strokes[:, :80].any()
    tuner = Finetuner([image], [strokes], init="none", config=TINY)
    frame = tuner.source.frames[0]
    kept = frame.train[:, :80] | frame.val[:, :80]
    np.testing.assert_array_equal(kept > 0, strokes[:, :80] > 0)
    border = frame.image[:, :80]
    data = frame.image[:, 80:]
    assert abs(border.mean() - data.mean()) < 0.1 * data.std()  # not a cliff of zeros
    seen = predict_tiled(image, lambda x: x, tile=128, overlap=16)  # what a network reads
    np.testing.assert_allclose(seen, filled(image)[0], rtol=1e-6)  # what training reads


def test_finetune_options_are_one_line_errors(tmp_path, capsys, scene):
    image, strokes = scene
    for extra, words in [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "-5"], "--steps must be at least 1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--patch", "100000"], "at most 256"),
    ]:
        code, err, out = _finetune_cli(tmp_path, image, strokes, capsys, *extra)
        assert code == 1 and words in _one_line(err), extra
        assert not out.exists()
