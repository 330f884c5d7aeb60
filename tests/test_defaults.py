"""Each default is typed once (napari_temseg.defaults): the engine's configs, ``temseg``'s
options and the docks' controls all start from the same values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_temseg import defaults
from napari_temseg.cli import build_parser
from napari_temseg.engine.finetune import FinetuneConfig
from napari_temseg.engine.measure import MIN_SIZE_PX
from napari_temseg.engine.pretrain import PretrainConfig
from napari_temseg.pipeline.files import FileJob


def test_the_engine_configs_start_from_the_table():
    p, f = PretrainConfig(), FinetuneConfig()
    assert (p.method, p.steps, p.patch, p.batch_size, p.seed, p.device) == (
        defaults.PRETRAIN_METHOD,
        defaults.PRETRAIN_STEPS,
        defaults.PRETRAIN_PATCH,
        defaults.PRETRAIN_BATCH,
        defaults.SEED,
        defaults.DEVICE,
    )
    assert (f.steps, f.max_seconds, f.patch, f.batch_size, f.lr) == (
        defaults.FINETUNE_STEPS,
        defaults.FINETUNE_SECONDS,
        defaults.FINETUNE_PATCH,
        defaults.FINETUNE_BATCH,
        defaults.FINETUNE_LR,
    )
    job = FileJob("denoise", None, ".")
    assert (job.tile, job.overlap, job.device) == (defaults.TILE, defaults.OVERLAP, "auto")
    assert MIN_SIZE_PX == defaults.MIN_SIZE_PX


def test_the_file_runners_behind_temseg_share_them():
    import inspect

    from napari_temseg.pipeline.training import finetune_files, pretrain_files

    assert inspect.signature(pretrain_files).parameters["steps"].default == PretrainConfig().steps
    assert inspect.signature(finetune_files).parameters["steps"].default == FinetuneConfig().steps


def test_temseg_options_match_the_engine_configs():
    parse = build_parser().parse_args
    pre = parse(["pretrain", "a.tif", "-o", "m.safetensors"])
    cfg = PretrainConfig()
    assert (pre.steps, pre.patch, pre.method, pre.seed) == (
        cfg.steps,
        cfg.patch,
        cfg.method,
        cfg.seed,
    )
    assert pre.steps == 1000  # one value: the dock's (the CLI used to say 2000)
    fin = parse(["finetune", "--image", "a", "--labels", "b", "-o", "m"])
    ft = FinetuneConfig()
    assert (fin.steps, fin.seconds, fin.patch, fin.lr, fin.seed) == (
        ft.steps,
        ft.max_seconds,
        ft.patch,
        ft.lr,
        ft.seed,
    )
    for command in (["denoise", "a", "-o", "o"], ["segment", "a", "--model", "m", "-o", "o"]):
        args = parse(command)
        assert (args.tile, args.overlap, args.device) == (defaults.TILE, defaults.OVERLAP, "auto")
    assert parse(["measure", "m.tif", "-o", "t.csv"]).min_size == MIN_SIZE_PX
    assert parse(["measure", "i.tif", "--atoms", "s.tif", "-o", "t.csv"]).atom_class == 2
    assert defaults.ATOM_CLASS == 2  # class 1 is support by the project's convention


def test_the_defaults_table_does_not_load_torch():
    """``temseg --help`` reads the table; it must stay quick (no torch import)."""
    code = "import sys, napari_temseg.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_docks_show_the_same_defaults(open_dock, controls):
    from napari_temseg.widgets.denoise import DenoiseWidget
    from napari_temseg.widgets.pretrain import PretrainWidget
    from napari_temseg.widgets.train import TrainWidget

    pre, cfg = controls(open_dock(PretrainWidget)[1]), PretrainConfig()
    shown = (pre["Steps"].value, pre["Patch size"].value, pre["Batch"].value)
    assert shown == (cfg.steps, cfg.patch, cfg.batch_size)
    train, ft = controls(open_dock(TrainWidget)[1]), FinetuneConfig()
    shown = (train["Steps"].value, train["Patch size"].value, train["or stop after"].value)
    assert shown == (ft.steps, ft.patch, ft.max_seconds)
    assert train["Learning rate"].value == pytest.approx(ft.lr)
    assert controls(open_dock(DenoiseWidget)[1])["Tile size"].value == defaults.TILE
    from napari_temseg.widgets.measure import MeasureWidget

    assert open_dock(MeasureWidget)[1].atoms.atom_class.value == defaults.ATOM_CLASS
