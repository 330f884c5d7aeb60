"""A microscopist's session, end to end, in one real napari viewer and then through `temseg`.

Open a real instrument file and the simulated sample; denoise; paint strokes through the
Labels layer API (as a brush would); train from the bundled denoiser; apply to a stack;
measure; export. Every step goes through the dock widgets a user clicks, and the test
checks what lands on disk and the numbers, not just that nothing crashed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_temseg.engine.strokes import scribbles_from_mask
from napari_temseg.io import read
from napari_temseg.synth import simulate
from napari_temseg.widgets.denoise import DenoiseWidget
from napari_temseg.widgets.export import ExportWidget
from napari_temseg.widgets.measure import MeasureWidget
from napari_temseg.widgets.train import TrainWidget

torch.set_num_threads(2)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _noise_sigma(image: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: a Laplacian-difference mask blind to smooth signal."""
    from scipy import ndimage

    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    residual = np.abs(ndimage.convolve(image, mask))[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * residual.mean() / 6)


def _paint(layer, strokes: np.ndarray, frame: int) -> None:
    layer.brush_size = 1
    for value in np.unique(strokes[strokes > 0]):
        for yx in np.argwhere(strokes == value):
            layer.paint((frame, *yx), int(value), refresh=False)
    layer.refresh()


def test_open_denoise_paint_train_apply_measure_export(
    make_napari_viewer, testdata, qtbot, tmp_path
):
    viewer = make_napari_viewer()

    # 1. a real HAADF-STEM file opens at its calibrated scale
    (real,) = viewer.open(str(testdata / "16_STOimage_1.ser"), plugin="napari-temseg")
    assert real.data.shape == (1024, 1024)
    assert real.scale[-1] == pytest.approx(0.01001, rel=1e-3)

    # 2. denoise it (bundled STEM model) in the background
    den = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(den)
    den._image.value = real
    den._device.value = "cpu"
    den.run()
    qtbot.waitUntil(lambda: not den._task.running, timeout=120_000)
    out = viewer.layers[f"{real.name} denoised"]
    assert tuple(out.scale) == tuple(real.scale)
    raw = np.asarray(real.data, np.float64)
    clean = np.asarray(out.data, np.float64)
    assert abs(clean.mean() - raw.mean()) < 0.02 * np.ptp(raw)  # intensities kept
    # far less noise (Immerkaer's estimate, measured 330 -> 43 ADU), same image
    assert _noise_sigma(clean) < 0.3 * _noise_sigma(raw)
    assert np.corrcoef(clean.ravel(), raw.ravel())[0, 1] > 0.9

    # 3. a stack of two simulated STEM frames with strokes on the first frame only
    frames = [simulate("stem", 192, pixel_size_nm=0.1, dose=200, seed=s) for s in (12, 5)]
    stack = np.stack([f.noisy for f in frames])
    truth = np.stack([f.recorded_semantic for f in frames])
    image = viewer.add_image(
        stack, name="particles", scale=(1, 0.1, 0.1), units=("pixel", "nm", "nm")
    )
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    train._image.value = image
    strokes = train.add_strokes_layer()
    _paint(strokes, scribbles_from_mask(truth[0], per_class=4, length=30, width=2, seed=0), 0)
    assert set(np.unique(strokes.data[1])) == {0}  # frame 2 stays unpainted
    train._device.value = "cpu"
    train._patch.value = 96
    train._steps.value = 150  # measured: particle Dice 0.91 painted, 0.74 unpainted frame
    train.train()
    qtbot.waitUntil(lambda: not train._task.running, timeout=240_000)
    assert train.segmenter is not None, train._status.value
    assert train.segmenter[1]["source_model"] == "stem-denoise"

    # 4. apply to the whole stack: both frames segmented, the unpainted one too
    train._scope.value = "whole stack"
    train.apply()
    qtbot.waitUntil(lambda: not train._apply_task.running, timeout=120_000)
    seg = viewer.layers["particles segmentation"]
    assert seg.data.shape == stack.shape and tuple(seg.scale) == (1, 0.1, 0.1)
    for f, least in ((0, 0.8), (1, 0.6)):
        d = _dice(np.asarray(seg.data[f]) == 2, truth[f] == 2)
        assert d > least, f"frame {f}: particle Dice {d:.2f}"

    # 5. measure the first frame: particle count and sizes near the ground truth's
    meas = MeasureWidget(viewer)
    viewer.window.add_dock_widget(meas)
    meas._mask.value = seg
    viewer.dims.set_point(0, 0)
    meas.run()
    qtbot.waitUntil(lambda: not meas._task.running, timeout=60_000)
    table = meas.result.table
    from skimage.measure import label

    n_true = int(label(truth[0] == 2).max())
    assert 0.5 * n_true <= len(table) <= 2 * n_true
    assert (table["equivalent_diameter_nm"] > 0).all()
    meas._csv.value = tmp_path / "particles.csv"
    csv = meas.export_csv()
    assert csv == tmp_path / "particles.csv"
    assert csv is not None and csv.is_file() and csv.read_text().count("\n") == len(table) + 1

    # 6. export the segmentation: calibrated TIFF + sidecar with the class names
    exp = ExportWidget(viewer)
    viewer.window.add_dock_widget(exp)
    exp._layers.value = ["particles segmentation"]
    exp._format.value = "tiff"
    exp._folder.value = tmp_path
    result = exp.export()
    assert result is not None
    written = sorted(Path(w) for w in result.written if str(w).endswith(".tif"))
    assert written and all(w.parent == tmp_path for w in written), result.written
    (back,) = read(written[0])
    np.testing.assert_array_equal(np.asarray(back.data), np.asarray(seg.data))
    assert back.scale[-1] == pytest.approx(0.1)
    sidecar = json.loads(Path(f"{written[0]}.json").read_text())
    assert "particle" in json.dumps(sidecar)


def test_the_same_session_through_temseg_only(testdata, tmp_path, capsys):
    from napari_temseg.cli import main

    # info and denoise on the real file
    assert main(["info", str(testdata / "16_STOimage_1.ser"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pixel_size_nm"] == pytest.approx(0.01001, rel=1e-3)
    assert main(["denoise", str(testdata / "16_STOimage_1.ser"), "-o", str(tmp_path / "den")]) == 0
    assert tifffile.imread(tmp_path / "den" / "16_STOimage_1.tif").shape == (1024, 1024)

    # simulated images -> strokes -> finetune from the bundled denoiser -> segment -> measure
    main(["synth", "-o", str(tmp_path / "sim"), "--n", "2", "--size", "160", "--seed", "5"])
    truth = tifffile.imread(tmp_path / "sim" / "stem_0000_mask.tif")
    from napari_temseg.io import write_labels

    strokes = scribbles_from_mask(truth, per_class=4, length=30, width=2, seed=0)
    write_labels(
        tmp_path / "strokes.tif", strokes, scale=(0.1, 0.1), class_names=["support", "gold"]
    )
    model = tmp_path / "seg.safetensors"
    argv = ["finetune", "--image", str(tmp_path / "sim" / "stem_0000_noisy.tif")]
    argv += ["--labels", str(tmp_path / "strokes.tif"), "-o", str(model)]
    argv += ["--init", "stem-denoise", "--steps", "150", "--patch", "96", "--device", "cpu"]
    assert main(argv) == 0
    pattern = str(tmp_path / "sim" / "*_noisy.tif")
    assert main(["segment", pattern, "--model", str(model), "-o", str(tmp_path / "masks")]) == 0
    masks = sorted((tmp_path / "masks").glob("*.tif"))
    assert [m.name for m in masks] == ["stem_0000_noisy.tif", "stem_0001_noisy.tif"]
    assert _dice(tifffile.imread(masks[0]) == 2, truth == 2) > 0.6
    table = tmp_path / "particles.csv"
    assert main(["measure", str(tmp_path / "masks"), "-o", str(table)]) == 0
    import pandas as pd

    df = pd.read_csv(table)
    assert set(df["file"]) == {"stem_0000_noisy.tif", "stem_0001_noisy.tif"}
    assert (df["equivalent_diameter_nm"] > 0).all()
