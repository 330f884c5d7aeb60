"""Model files from strangers must not exhaust the machine nor run silently wrong (issue 14).

Every hostile file here is built small and fast: sizes are *declared* (a zip's directory,
a checkpoint's architecture) rather than allocated, and the checks must act on the
declaration before reading or building anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from napari_temseg.cli import main
from napari_temseg.io import write_image
from napari_temseg.models import CheckpointError, UNet, load_checkpoint, save_checkpoint
from napari_temseg.models import bioimageio as bio
from napari_temseg.models.bioimageio import BioimageioError, import_bioimageio
from napari_temseg.models.checkpoint import FORMAT

TINY = {"arch": "unet", "in_channels": 1, "out_channels": 1, "base": 4, "depth": 2}
META = {"task": "denoise", "name": "tiny"}


def _tiny() -> UNet:
    torch.manual_seed(0)
    return UNet(1, 1, base=4, depth=2)


def _package(folder: Path, rdf: bytes | None = None, weights: bytes | None = None) -> Path:
    """A minimal napari-temseg package zip (no bioimageio needed to build it)."""
    buf = io.BytesIO()
    torch.save({f"{bio.PREFIX}{k}": v for k, v in _tiny().state_dict().items()}, buf)
    weights = buf.getvalue() if weights is None else weights
    native = {
        "format": bio.EXPORT_FORMAT,
        "format_version": bio.EXPORT_FORMAT_VERSION,
        "architecture": TINY,
        "meta": META,
    }
    content = {
        "type": "model",
        "config": {bio.CONFIG_KEY: native},
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt",
                "sha256": hashlib.sha256(weights).hexdigest(),
            }
        },
    }
    path = folder / "package.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rdf.yaml", yaml.safe_dump(content) if rdf is None else rdf)
        z.writestr("weights.pt", weights)
    return path


def _declare(path: Path, member: str, size: int) -> Path:
    """Rewrite ``path`` so its directory declares ``member`` to be ``size`` bytes: what a
    zip holding a 3 GiB stream of zeros (a few MB on disk) says about it."""
    out = path.with_name("declared.zip")
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as b:
        for item in a.infolist():
            b.writestr(item.filename, a.read(item))
        b.getinfo(member).file_size = size
    return out


def test_the_package_builder_makes_an_importable_package(tmp_path):
    model, meta = import_bioimageio(_package(tmp_path))
    assert meta["task"] == "denoise" and model.config["base"] == 4


@pytest.mark.parametrize("member", ["weights.pt", "rdf.yaml"])
def test_a_member_declared_huge_is_never_inflated(tmp_path, member):
    big = _declare(_package(tmp_path), member, 3 << 30)
    assert big.stat().st_size < 100_000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BioimageioError, match="3072 MiB, more than"):
        import_bioimageio(big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # kB


def test_inflating_stops_at_the_cap_whatever_the_zip_declares(tmp_path, monkeypatch):
    monkeypatch.setattr(bio, "MAX_MEMBER_BYTES", 1 << 20)
    bomb = _package(tmp_path, weights=bytes(8 << 20))  # 8 MiB of zeros, a few kB zipped
    with zipfile.ZipFile(bomb) as z:  # declares less than it holds
        assert z.getinfo("weights.pt").compress_size < 100_000
    lying = tmp_path / "lying.zip"
    size, small = ((8 << 20).to_bytes(4, "little"), (1000).to_bytes(4, "little"))
    data = bomb.read_bytes().replace(size, small)
    lying.write_bytes(data)
    with pytest.raises(BioimageioError, match="more than the 1 MiB"):
        import_bioimageio(bomb)
    with pytest.raises(BioimageioError, match="damaged zip"):  # inflated up to the 1000
        import_bioimageio(lying)  # bytes it declares, then its checksum tells the lie


def test_a_huge_rdf_in_a_folder_is_not_read(tmp_path):
    (tmp_path / "rdf.yaml").write_bytes(b"# padding\n" * 200_000)  # 2 MB
    with pytest.raises(BioimageioError, match=r"rdf\.yaml is 2 MiB"):
        import_bioimageio(tmp_path)


def test_yaml_aliases_are_refused(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = _package(tmp_path, rdf="\n".join(lines).encode())
    with pytest.raises(BioimageioError, match="aliases"):
        import_bioimageio(bomb)


def _raw_checkpoint(path: Path, config, meta, tensors=None) -> Path:
    tensors = tensors if tensors is not None else _tiny().state_dict()
    header = {"format": FORMAT, "format_version": "1"}
    header["config"] = config if isinstance(config, str) else json.dumps(config)
    header["meta"] = meta if isinstance(meta, str) else json.dumps(meta)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=header)
    return path


def test_a_checkpoint_asking_for_a_huge_network_is_refused_unbuilt(tmp_path):
    huge = _raw_checkpoint(tmp_path / "huge.safetensors", {**TINY, "base": 256, "depth": 6}, META)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="parameters"):
        load_checkpoint(huge)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # kB
    wider = _raw_checkpoint(tmp_path / "wider.safetensors", {**TINY, "base": 8}, META)
    with pytest.raises(CheckpointError, match="do not match its architecture"):
        load_checkpoint(wider)
    absurd = _raw_checkpoint(tmp_path / "absurd.safetensors", {**TINY, "depth": 10**9}, META)
    with pytest.raises(CheckpointError, match="out of range"):
        load_checkpoint(absurd)


@pytest.fixture
def image(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "img.tif"
    write_image(path, rng.poisson(20, (48, 48)).astype(np.float32), scale=(0.1, 0.1))
    return path


def _denoise_with(model: Path, image: Path, capsys) -> str:
    argv = ["denoise", str(image), "--model", str(model), "-o", str(image.parent / "out")]
    assert main([*argv, "--device", "cpu", "--tile", "48", "--overlap", "8"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("temseg: error: "), err
    return lines[0]


def test_nan_weights_are_refused_when_loaded(tmp_path, image, capsys):
    net = _tiny()
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    bad = save_checkpoint(tmp_path / "nan.safetensors", net, META)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(bad)
    assert "NaN or infinite" in _denoise_with(bad, image, capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("config", "meta", "words"),
    [
        (TINY, "[1, 2]", "must be dicts"),
        (TINY, '"a string"', "must be dicts"),
        ("[1]", META, "must be dicts"),
        (TINY, {**META, "normalization": "percentile"}, "normalization must be a dict"),
        (TINY, {**META, "normalization": {"low": "x"}}, "normalization.low must be a number"),
        (TINY, {**META, "class_names": "support"}, "class_names must be a list"),
        (TINY, {**META, "class_names": [1, 2]}, "class_names must be a list"),
        (TINY, {**META, "task": ["denoise"]}, "task must be one of"),
    ],
    ids=[
        "meta-list",
        "meta-string",
        "config-list",
        "norm-string",
        "norm-low",
        "names-str",
        "names-int",
        "task-list",
    ],
)
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, image, capsys, config, meta, words):
    bad = _raw_checkpoint(tmp_path / "bad.safetensors", config, meta)
    assert words in _denoise_with(bad, image, capsys)


def test_import_checks_its_output_before_reading_the_package(tmp_path):
    from napari_temseg.io.outputs import OutputError

    (tmp_path / "afile").write_text("not a folder")
    missing = tmp_path / "missing.zip"  # not even read: the output is refused first
    with pytest.raises(OutputError, match="afile is a file"):
        import_bioimageio(missing, tmp_path / "afile" / "m.safetensors")
    out = tmp_path / "m.safetensors"
    import_bioimageio(_package(tmp_path), out)
    assert load_checkpoint(out)[1]["task"] == "denoise"
