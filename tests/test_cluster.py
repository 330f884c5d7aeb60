"""Batches on a dask.distributed cluster: a real LocalCluster of two worker processes.

The cluster must give the same files, the same numbers and the same failure isolation as
the batch run in one process; only where the work happens changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_temseg import cli
from napari_temseg.io import read, write_image
from napari_temseg.pipeline import cluster as cluster_mod
from napari_temseg.pipeline.files import FileJob
from napari_temseg.synth import simulate

distributed = pytest.importorskip("distributed")

ARGS = ["--tile", "128", "--overlap", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("in")
    paths = []
    for i in range(4):
        s = simulate("stem", 160, pixel_size_nm=0.1, dose=50, seed=10 + i)
        paths.append(Path(write_image(folder / f"img{i}.tif", s.noisy, scale=(0.1, 0.1))[0]))
    stack = np.stack([simulate("stem", 128, dose=80, seed=20 + k).noisy for k in range(3)])
    paths.append(Path(write_image(folder / "stack.tif", stack, scale=(1, 0.1, 0.1))[0]))
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    return paths


@pytest.fixture(scope="module")
def local_cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(read(p)[0].data) for p in sorted(folder.glob("*.tif"))}


def test_a_batch_on_two_workers_matches_the_batch_in_one_process(
    inputs, local_cluster, tmp_path, capsys
):
    holed = simulate("stem", 128, pixel_size_nm=0.1, dose=50, seed=30).noisy
    holed[:10, :10] = np.nan  # a note (DataWarning) from the reader and engine
    nan_file = write_image(tmp_path / "holed.tif", holed, scale=(0.1, 0.1))[0]
    files = [str(p) for p in inputs] + [str(inputs[0].parent / "broken.tif"), nan_file]
    here, there = tmp_path / "here", tmp_path / "there"
    assert cli.main(["denoise", *files, "-o", str(here), *ARGS]) == 1
    address = local_cluster.scheduler_address
    rc = cli.main(["denoise", *files, "-o", str(there), *ARGS, "--scheduler", address])
    assert rc == 1, "the broken file fails the batch on the cluster too"
    err = capsys.readouterr().err
    assert "broken.tif" in err and err.count("temseg: error:") == 2  # once per run
    # the workers' notes come back to be shown here, one line each, as in one process
    noted = [line for line in err.splitlines() if line.startswith("temseg: note: holed.tif:")]
    assert len(noted) == 2 and noted[0] == noted[1], err
    a, b = _outputs(here), _outputs(there)
    assert sorted(a) == sorted(b) == sorted([f"{p.stem}.tif" for p in inputs] + ["holed.tif"])
    for name in a:
        assert a[name].shape == b[name].shape
        spread = np.nanmax(a[name]) - np.nanmin(a[name])
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-4 * spread)
    assert read(there / "stack.tif")[0].pixel_size_nm == pytest.approx(0.1)
    summary = json.loads((there / "summary.json").read_text())
    assert summary["counts"] == {"done": 6, "skipped": 0, "failed": 1}
    assert [Path(f["input"]).name for f in summary["files"]] == [Path(f).name for f in files]
    # resume on the cluster: the complete outputs are skipped, nothing is recomputed
    rc = cli.main(["denoise", *files, "-o", str(there), *ARGS, "--scheduler", address])
    again = json.loads((there / "summary.json").read_text())
    assert again["counts"] == {"done": 0, "skipped": 6, "failed": 1} and rc == 1


def test_file_jobs_spread_over_both_workers(inputs, local_cluster, tmp_path):
    from napari_temseg.pipeline.batch import run_batch

    job = FileJob("denoise", "stem-denoise", str(tmp_path), device="cpu", tile=128, overlap=16)
    with distributed.Client(local_cluster) as client:
        report = run_batch(
            [str(p) for p in inputs], tmp_path, job, outputs=job.outputs_for, client=client
        )
        assert report.counts()["done"] == len(inputs)
        # one task per file spreads over both workers; each loaded the model just once
        cached = client.run(
            lambda: __import__("napari_temseg.models.resolve").models.resolve.loaded_count()
        )
    assert sorted(cached.values()) == [1, 1], cached


def test_scheduler_local_starts_and_stops_its_own_cluster(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    files = [str(p) for p in inputs[:2]]
    rc = cli.main(
        ["denoise", *files, "-o", str(out), *ARGS, "--scheduler", "local", "--workers", "2"]
    )
    assert rc == 0
    assert "running on 2 dask worker(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.tif")) == ["img0.tif", "img1.tif"]


def test_an_unreachable_scheduler_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT_S", 2)
    rc = cli.main(["denoise", "x.tif", "-o", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not reach the dask scheduler at tcp://127.0.0.1:9" in err[0]


def test_worker_device_keeps_explicit_devices():
    assert cluster_mod.worker_device("cpu") == "cpu"
    assert cluster_mod.worker_device("cuda:1") == "cuda:1"
    assert cluster_mod.worker_device("auto") == "auto"  # not on a multi-GPU worker


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "2"], "--scheduler local only"),
        (["--scheduler", "local", "--workers", "0"], "--scheduler local only"),
        (["--band-above", "0"], "positive number of megapixels"),
    ],
)
def test_cluster_and_band_options_are_checked_before_anything_runs(
    tmp_path, capsys, extra, message
):
    assert cli.main(["denoise", "x.tif", "-o", str(tmp_path / "o"), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
