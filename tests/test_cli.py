"""The ``temseg`` command-line contract (issue 2): help for every subcommand, synth output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_temseg.cli import SUBCOMMANDS, build_parser, main


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"temseg {name}" in capsys.readouterr().out


def test_parser_matches_the_contract():
    p = build_parser()
    a = p.parse_args(["denoise", "a.dm4", "b.ser", "-o", "out", "--device", "cpu", "--tile", "128"])
    assert a.inputs == ["a.dm4", "b.ser"] and a.output == "out" and a.tile == 128
    a = p.parse_args(
        ["finetune", "--image", "i1", "i2", "--labels", "l1", "l2", "-o", "m", "--init", "none"]
    )
    assert a.image == ["i1", "i2"] and a.labels == ["l1", "l2"] and a.init == "none"
    assert a.seconds == 0  # no time budget unless asked
    a = p.parse_args(["finetune", "--image", "i", "--labels", "l", "-o", "m", "--seconds", "60"])
    assert a.seconds == 60
    from napari_temseg.engine.measure import MIN_SIZE_PX

    assert p.parse_args(["measure", "m.tif", "-o", "t.csv"]).min_size == MIN_SIZE_PX
    a = p.parse_args(["pretrain", "x.tif", "-o", "m.pt", "--method", "pix2pix", "--steps", "5"])
    assert a.method == "pix2pix" and a.steps == 5


def test_missing_required_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", "a.tif"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    r = subprocess.run(
        [sys.executable, "-m", "napari_temseg", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "synth" in r.stdout


def test_synth_writes_images_clean_versions_and_masks(tmp_path, capsys):
    rc = main(
        ["synth", "-o", str(tmp_path), "--kind", "stem", "--n", "2", "--size", "96", "--seed", "3"]
    )
    assert rc == 0
    for i in range(2):
        noisy = tifffile.imread(tmp_path / f"stem_{i:04d}_noisy.tif")
        clean = tifffile.imread(tmp_path / f"stem_{i:04d}_clean.tif")
        mask = tifffile.imread(tmp_path / f"stem_{i:04d}_mask.tif")
        assert noisy.shape == clean.shape == mask.shape == (96, 96)
        assert set(np.unique(mask)) <= {1, 2}
        meta = json.loads((tmp_path / f"stem_{i:04d}.json").read_text())
        assert meta["kind"] == "stem" and meta["pixel_size_nm"] > 0
        with tifffile.TiffFile(tmp_path / f"stem_{i:04d}_noisy.tif") as tf:
            assert tf.imagej_metadata["unit"] == "nm"
            xres = tf.pages[0].tags["XResolution"].value
            assert xres[1] / xres[0] == pytest.approx(meta["pixel_size_nm"], rel=1e-4)
    # the same seed gives the same images
    again = tmp_path / "again"
    main(["synth", "-o", str(again), "--n", "1", "--size", "96", "--seed", "3"])
    np.testing.assert_array_equal(
        tifffile.imread(again / "stem_0000_noisy.tif"),
        tifffile.imread(tmp_path / "stem_0000_noisy.tif"),
    )


def test_demo_writes_results_and_summary(tmp_path):
    assert main(["demo", "-o", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("noisy", "clean", "truth", "overview"):
        assert (tmp_path / summary["outputs"][key]).is_file() or Path(
            summary["outputs"][key]
        ).is_file()
    noisy = tifffile.imread(summary["outputs"]["noisy"])
    assert noisy.shape == (512, 512)
    # the bundled STEM denoiser ships with the package, so the demo always denoises
    assert summary["denoise"]["psnr_denoised_db"] > summary["denoise"]["psnr_noisy_db"] + 3
    assert tifffile.imread(summary["outputs"]["denoised"]).shape == (512, 512)
    # ... and segments from strokes and measures, so the first command shows the whole loop
    assert summary["segment"]["dice_vs_truth"]["particle"] > 0.9
    seg = tifffile.imread(summary["outputs"]["segmentation"])
    assert seg.shape == (512, 512) and set(np.unique(seg)) == {1, 2}
    m = summary["measure"]
    assert m["count"] == m["count_truth"] > 0  # the network's specks are not counted
    assert m["mean_equivalent_diameter_nm"] == pytest.approx(
        m["mean_equivalent_diameter_nm_truth"], rel=0.1
    )
    import pandas as pd

    assert len(pd.read_csv(summary["outputs"]["particles"])) == m["count"]


def test_demo_figure_titles_are_inside_the_figure():
    """The overview's titles were cut off at the top (tight_layout with hidden axes)."""
    from types import SimpleNamespace

    from napari_temseg.pipeline.demo import overview_figure

    rng = np.random.default_rng(0)
    img = rng.random((64, 64))
    mask = np.ones((64, 64), np.uint8)
    mask[20:40, 20:40] = 2
    sample = SimpleNamespace(noisy=img, clean=img, recorded_semantic=mask)
    fig = overview_figure(sample, img, mask * (rng.random((64, 64)) > 0.95), mask)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    titles = [ax.title for ax in fig.axes] + [fig._suptitle]
    assert len(titles) == 6 and all(t.get_text() for t in titles)
    for t in titles:
        box = t.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1, t.get_text()
        assert page.y0 <= box.y0 and box.y1 <= page.y1, t.get_text()


def test_measure_writes_calibrated_table(tmp_path, capsys):
    import pandas as pd
    from skimage.draw import disk

    from napari_temseg.io import write_labels

    mask = np.ones((200, 200), np.uint8)
    mask[disk((50, 50), 20)] = 2
    mask[disk((140, 120), 10)] = 2
    mask[5, 150:152] = 2  # a speck, as a network leaves them
    write_labels(tmp_path / "m.tif", mask, scale=(0.5, 0.5))
    rc = main(["measure", str(tmp_path / "m.tif"), "-o", str(tmp_path / "t.csv")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == 2 and set(table["file"]) == {"m.tif"}
    diam = sorted(table["equivalent_diameter_nm"])
    assert diam[0] == pytest.approx(10.0, rel=0.05) and diam[1] == pytest.approx(20.0, rel=0.05)
    assert "2 particle(s)" in capsys.readouterr().out
    argv = ["measure", str(tmp_path / "m.tif"), "-o", str(tmp_path / "all.csv"), "--min-size"]
    assert main([*argv, "0"]) == 0
    assert "3 particle(s)" in capsys.readouterr().out


def test_measure_reports_a_bad_file_and_goes_on(tmp_path, capsys):
    from napari_temseg.io import write_labels

    mask = np.ones((64, 64), np.uint8)
    mask[10:20, 10:20] = 2
    write_labels(tmp_path / "good.tif", mask, scale=(1.0, 1.0))
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    rc = main(
        [
            "measure",
            str(tmp_path / "bad.tif"),
            str(tmp_path / "good.tif"),
            "-o",
            str(tmp_path / "t.csv"),
        ]
    )
    assert rc == 1
    assert "bad.tif" in capsys.readouterr().err
    assert (tmp_path / "t.csv").is_file()


def test_measure_a_mask_from_elsewhere_says_what_it_measured(tmp_path, capsys):
    """A 0/1 mask (skimage, ilastik) measured 0 particles without a word; two folders'
    m.tif shared one name in the table; --instances split a class mask's support into a
    particle; a bad --image was blamed on the mask."""
    import pandas as pd
    import tifffile
    from skimage.draw import disk

    from napari_temseg.io import write_labels

    binary = np.zeros((100, 100), np.uint8)
    binary[disk((30, 30), 10)] = binary[disk((70, 60), 8)] = 1
    tifffile.imwrite(tmp_path / "binary.tif", binary)
    out = str(tmp_path / "t.csv")
    assert main(["measure", str(tmp_path / "binary.tif"), "-o", out]) == 0
    captured = capsys.readouterr()
    assert "0 particle(s)" in captured.out
    assert captured.err.strip() == (
        f"temseg: warning: {tmp_path / 'binary.tif'}: class 1 counts as support/background; "
        "to measure its objects, pass --particle-classes 1"
    )
    argv = ["measure", str(tmp_path / "binary.tif"), "-o", out, "--particle-classes", "1"]
    assert main(argv) == 0 and len(pd.read_csv(out)) == 2
    assert capsys.readouterr().err == ""

    for folder, n in (("s1", 1), ("s2", 2)):
        mask = np.ones((100, 100), np.uint8)
        for k in range(n):
            mask[disk((25 + 50 * k, 50), 10)] = 2
        (tmp_path / folder).mkdir()
        write_labels(tmp_path / folder / "m.tif", mask, class_names=["support", "particle"])
    assert main(["measure", str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", out]) == 0
    assert list(pd.read_csv(out)["file"]) == ["s1/m.tif", "s2/m.tif", "s2/m.tif"]

    semantic = str(tmp_path / "s2" / "m.tif")
    assert main(["measure", semantic, "-o", out, "--instances"]) == 1
    assert "holds classes (a semantic mask), not one id per particle: leave out --instances" in (
        capsys.readouterr().err
    )
    (tmp_path / "spectrum.tif").write_bytes(b"II*\x00garbage")
    assert main(["measure", semantic, "-o", out, "--image", str(tmp_path / "spectrum.tif")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"temseg: error: {tmp_path / 'spectrum.tif'}") and "s2" not in err


def test_pretrain_writes_a_denoiser_that_loads(tmp_path, capsys):
    from napari_temseg.io import write_image
    from napari_temseg.models import load_model
    from napari_temseg.synth import simulate

    s = simulate(kind="stem", size=96, dose=200, seed=1)
    write_image(tmp_path / "own.tif", s.noisy, scale=(s.pixel_size_nm,) * 2)
    out = tmp_path / "mine.safetensors"
    args = ["pretrain", str(tmp_path / "own.tif"), "-o", str(out), "--steps", "3"]
    rc = main([*args, "--init", "scratch", "--patch", "48", "--device", "cpu"])
    assert rc == 0 and out.is_file()
    _model, meta = load_model(out)
    assert meta["task"] == "denoise"
    # an existing output is refused with a one-line message unless --force
    assert main([*args, "--init", "scratch", "--patch", "48"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_finetune_then_segment_from_the_command_line(tmp_path, capsys):
    """`temseg synth` -> strokes written as a label TIFF -> `temseg finetune` -> `segment`."""
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import write_labels
    from napari_temseg.models import load_model

    assert main(["synth", "-o", str(tmp_path), "--n", "1", "--size", "128", "--seed", "2"]) == 0
    noisy = tmp_path / "stem_0000_noisy.tif"
    truth = tifffile.imread(tmp_path / "stem_0000_mask.tif")
    strokes = scribbles_from_mask(truth, per_class=3, length=20, seed=0)
    write_labels(tmp_path / "strokes.tif", strokes, class_names=["carbon", "gold"])
    model = tmp_path / "seg.safetensors"
    argv = ["finetune", "--image", str(noisy), "--labels", str(tmp_path / "strokes.tif")]
    argv += ["-o", str(model), "--init", "none", "--steps", "4", "--patch", "64"]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert model.is_file() and "Dice on held-out strokes: carbon" in out
    assert "(kept the weights of step 4;" in out  # one validation: a mean of one
    # the class balance is reported (corrected or not), and can be left as painted
    assert "class balance not corrected" in out or "classes on the painted frames: carbon" in out
    assert main(argv) == 1  # never overwrites without --force
    assert "already exists" in capsys.readouterr().err
    kept = tmp_path / "kept.safetensors"
    argv_kept = ["finetune", "--image", str(noisy), "--labels", str(tmp_path / "strokes.tif")]
    argv_kept += ["-o", str(kept), "--init", "none", "--steps", "4", "--patch", "64"]
    assert main([*argv_kept, "--device", "cpu", "--keep-stroke-balance"]) == 0
    assert "class" not in capsys.readouterr().out.split("wrote", 1)[1]
    assert "class_balance" not in load_model(kept)[1]

    masks = tmp_path / "masks"
    seg = ["segment", "--model", str(model), "-o", str(masks), "--device", "cpu"]
    rc = main([*seg, str(noisy), str(tmp_path / "nope.tif")])
    assert rc == 1  # one input failed, the other was still written
    err = capsys.readouterr().err
    assert "nope.tif" in err and "Traceback" not in err
    mask = tifffile.imread(masks / "stem_0000_noisy.tif")
    assert mask.shape == truth.shape and set(np.unique(mask)) <= {1, 2}

    rc = main(["segment", str(noisy), "--model", str(tmp_path / "gone.safetensors"), "-o", "x"])
    assert rc == 1 and "gone.safetensors" in capsys.readouterr().err


def test_finetune_time_budget(tmp_path, capsys, monkeypatch):
    """`temseg finetune --seconds S` stops at the budget (a fake clock: no timing here)."""
    from types import SimpleNamespace

    from napari_temseg.engine import loop
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import write_labels
    from napari_temseg.models import load_model

    assert main(["synth", "-o", str(tmp_path), "--n", "1", "--size", "96", "--seed", "2"]) == 0
    truth = tifffile.imread(tmp_path / "stem_0000_mask.tif")
    write_labels(tmp_path / "s.tif", scribbles_from_mask(truth, per_class=3, length=16, seed=0))
    now = [0.0]

    def tick() -> float:
        now[0] += 0.5
        return now[0]

    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=tick))
    argv = ["finetune", "--image", str(tmp_path / "stem_0000_noisy.tif"), "--labels"]
    argv += [str(tmp_path / "s.tif"), "-o", str(tmp_path / "m"), "--init", "none"]
    argv += ["--steps", "1000", "--seconds", "8", "--patch", "48", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "time budget of 8 s reached at step" in out
    _, meta = load_model(tmp_path / "m.safetensors")
    assert meta["training"]["max_seconds"] == 8 and meta["training"]["steps_done"] < 1000
    assert main([*argv, "--seconds", "-1", "--force"]) == 1
    assert "--seconds must be >= 0" in capsys.readouterr().err


def test_segment_warns_per_frame_when_unsure(tmp_path, capsys):
    """`temseg segment` names each frame unlike the painted ones, or segmented degenerately."""
    from napari_temseg.engine.finetune import FinetuneConfig, finetune, save_segmenter
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate

    s = simulate("stem", 96, pixel_size_nm=0.1, dose=200, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=16, seed=0)
    cfg = FinetuneConfig(steps=2, batch_size=2, patch=64, base=8, depth=3, device="cpu")
    result = finetune([s.noisy], [strokes], init="none", config=cfg)
    model = save_segmenter(tmp_path / "seg", result.model, result.meta)
    low = simulate("stem", 96, pixel_size_nm=0.1, dose=10, seed=1).noisy  # another session
    tifffile.imwrite(tmp_path / "series.tif", np.stack([s.noisy, low]).astype(np.float32))
    argv = ["segment", str(tmp_path / "series.tif"), "--model", str(model)]
    assert main([*argv, "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    err = said.err
    lines = [x for x in err.splitlines() if x.startswith("temseg: warning:")]
    assert lines and all("series.tif: frame 1: " in x for x in lines), err
    assert any("unlike the painted frames" in x for x in lines)
    assert all(x.endswith("paint a few strokes on this frame and train again") for x in lines)
    # kept beside the file in the batch's summary: it scrolled past in a long batch
    assert "1 done (1 with warnings), 0 skipped" in said.out
    import csv
    import json

    (row,) = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert row["status"] == "done" and "frame 1: " in row["warnings"]
    (entry,) = json.loads((tmp_path / "out" / "summary.json").read_text())["files"]
    assert len(entry["notes"]) == len(lines)


def test_finetune_can_validate_on_a_whole_painted_frame(tmp_path, capsys):
    """Three painted frames of a stack: one of them, left out, is what the Dice is on."""
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.io import write_image, write_labels
    from napari_temseg.synth import simulate

    sims = [simulate("stem", 96, pixel_size_nm=0.1, dose=200, seed=60 + i) for i in range(3)]
    write_image(tmp_path / "stack.tif", np.stack([s.noisy for s in sims]))
    strokes = [
        scribbles_from_mask(s.recorded_semantic, per_class=3, length=16, seed=i)
        for i, s in enumerate(sims)
    ]
    write_labels(tmp_path / "strokes.tif", np.stack(strokes))
    argv = ["finetune", "--image", str(tmp_path / "stack.tif"), "--labels"]
    argv += [str(tmp_path / "strokes.tif"), "--init", "none", "--steps", "2", "--patch", "48"]
    argv += ["--device", "cpu", "--validate-on-a-frame", "-o", str(tmp_path / "m.safetensors")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Dice on a whole painted frame left out of training (image 1, frame (" in out
