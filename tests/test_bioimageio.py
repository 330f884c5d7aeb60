"""Model exchange through bioimage.io model packages: export, bioimageio.core's test, import."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

pytest.importorskip("bioimageio.core")

from napari_temseg.cli import main
from napari_temseg.defaults import OVERLAP, TILE
from napari_temseg.engine.denoise import denoise
from napari_temseg.engine.segment import segment
from napari_temseg.engine.tiling import border_margin, model_overlap
from napari_temseg.models import build_model, load_model, save_checkpoint
from napari_temseg.models.bioimageio import (
    BioimageioError,
    _require_bioimageio,
    declared_preprocessing,
    export_bioimageio,
    import_bioimageio,
    validate_bioimageio,
)
from napari_temseg.models.normalize import Normalization
from napari_temseg.synth import simulate

torch.set_num_threads(1)  # small networks on a shared 2-core box
# torch 2.13 deprecates TorchScript, which is what tools without napari-temseg can run
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

SEG_META = {
    "task": "segment",
    "description": "tiny test segmenter",
    "class_names": ["support", "particle"],
    "class_colors": ["#1f77b4", "#ff7f0e"],
    "pixel_size_nm": 0.1,
    "normalization": Normalization().to_dict(),
    # values a YAML 1.1 reader would change: they must come back exactly
    "training": {"lr": 1e-05, "flag": "yes", "ratio": "1:20", "code": "010", "big": 1e20},
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bioimageio")


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    net = build_model({"arch": "unet", "out_channels": 2, "base": 8, "depth": 3}).eval()
    return net, dict(SEG_META)


@pytest.fixture(scope="module")
def denoiser_zip(tmp) -> Path:
    return export_bioimageio("stem-denoise", tmp / "stem-denoise.zip")


@pytest.fixture(scope="module")
def segmenter_zip(tmp, segmenter) -> Path:
    return export_bioimageio(segmenter, tmp / "segmenter", name="tiny segmenter")


def _rdf(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def _npy(path: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(path) as z:
        return np.load(io.BytesIO(z.read(name)))


def _rewrite(src: Path, dst: Path, name: str | None = None, data: bytes = b"") -> Path:
    """A copy of package ``src`` with file ``name`` replaced by ``data`` (and its sha256 in
    rdf.yaml updated, so that only the content differs)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        rdf = data if name == "rdf.yaml" else a.read("rdf.yaml")
        if name not in (None, "rdf.yaml"):
            old, new = (hashlib.sha256(x).hexdigest().encode() for x in (a.read(name), data))
            rdf = rdf.replace(old, new)
        for item in a.infolist():
            content = data if item.filename == name else a.read(item)
            b.writestr(item, rdf if item.filename == "rdf.yaml" else content)
    return dst


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- the package


def test_denoiser_package_holds_what_the_spec_and_other_tools_need(denoiser_zip):
    with zipfile.ZipFile(denoiser_zip) as z:
        names = set(z.namelist())
    assert {
        "rdf.yaml",
        "weights.pt",
        "weights_torchscript.pt",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
    } <= names
    rdf = _rdf(denoiser_zip)
    assert rdf["type"] == "model" and str(rdf["format_version"]).startswith("0.5.")
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert [a.get("id", a["type"]) for a in out["axes"]] == ["batch", "channel", "y", "x"]
    steps = {p["id"]: p["kwargs"] for p in inp["preprocessing"]}
    assert steps["scale_range"]["min_percentile"] == 0.5
    assert steps["scale_range"]["max_percentile"] == 99.5
    assert steps["scale_range"]["axes"] == ["y", "x"]  # per frame, like ours
    assert (steps["clip"]["min"], steps["clip"]["max"]) == (-20.0, 20.0)
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "napari_temseg.models.bioimageio"
    native = rdf["config"]["napari-temseg"]
    assert native["meta"]["task"] == "denoise" and native["architecture"]["arch"] == "unet"
    assert _npy(denoiser_zip, "test_input.npy").shape[:2] == (1, 1)


def test_segmenter_outputs_class_probabilities(segmenter_zip):
    rdf = _rdf(segmenter_zip)
    (out,) = rdf["outputs"]
    assert out["id"] == "probabilities"
    assert out["axes"][1]["channel_names"] == ["support", "particle"]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["softmax"] is True
    y = _npy(segmenter_zip, "test_output.npy")
    assert y.shape[:2] == (1, 2) and y.min() >= 0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("which", ["denoiser_zip", "segmenter_zip"])
def test_bioimageio_core_model_test_passes(which, request):
    ok, summary = validate_bioimageio(request.getfixturevalue(which))
    assert ok, summary
    assert "passed" in summary and "torchscript" in summary and "pytorch_state_dict" in summary


def test_a_wrong_test_output_fails_the_model_test(denoiser_zip, tmp):
    """The check is real: a package whose test output is off (checksum updated) fails."""
    buf = io.BytesIO()
    np.save(buf, _npy(denoiser_zip, "test_output.npy") + 0.5)
    bad = _rewrite(denoiser_zip, tmp / "bad.zip", "test_output.npy", buf.getvalue())
    ok, summary = validate_bioimageio(bad)
    assert not ok and "disagree" in summary


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("which", ["denoiser_zip", "segmenter_zip"])
def test_torchscript_weights_reproduce_the_test_output(which, request):
    path = request.getfixturevalue(which)
    with zipfile.ZipFile(path) as z:
        ts = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")), map_location="cpu")
    x, y = _npy(path, "test_input.npy"), _npy(path, "test_output.npy")
    pre = torch.from_numpy(declared_preprocessing(x[0, 0], Normalization()))[None, None]
    with torch.no_grad():
        np.testing.assert_allclose(ts(pre).numpy(), y, atol=1e-5)
        # any other size too (not only the one it was traced at), as the native network
        native, meta = import_bioimageio(path)
        odd = pre[..., 5:66, 3:86].contiguous()  # 61 x 83: no multiple of anything
        expected = native(odd)
        expected = expected.softmax(1) if meta["task"] == "segment" else expected
        got = ts(odd)
    assert got.shape == expected.shape == (1, y.shape[1], 61, 83)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_declared_preprocessing_matches_our_normalisation():
    image = simulate("stem", 128, pixel_size_nm=0.1, dose=20, seed=5).noisy
    norm = Normalization()
    ours = norm.apply(image.astype(np.float64), norm.stats(image))
    np.testing.assert_allclose(declared_preprocessing(image, norm), ours, atol=1e-5)


def test_reimported_denoiser_is_the_original(denoiser_zip, tmp):
    model, meta = import_bioimageio(denoiser_zip)
    original, original_meta = load_model("stem-denoise")
    assert _same_weights(model, original)
    assert meta == original_meta
    image = simulate("stem", 96, pixel_size_nm=0.05, dose=30, seed=2).noisy
    a = denoise(image, (original, original_meta), device="cpu")
    b = denoise(image, (model, meta), device="cpu")
    np.testing.assert_array_equal(a, b)
    # the package's output is in normalised units: our engine maps it back the same way
    x, y = _npy(denoiser_zip, "test_input.npy")[0, 0], _npy(denoiser_zip, "test_output.npy")
    lo, hi = np.percentile(x.astype(np.float64), [0.5, 99.5])
    engine = denoise(x, "stem-denoise", device="cpu", amp=False)  # the package's float32
    inner = _inner(x.shape, meta)
    np.testing.assert_allclose(
        y[0, 0][inner] * (hi - lo) + lo, engine[inner], atol=1e-5 * (hi - lo)
    )
    # on the border the engine is the package's network on the frame mirrored outward
    mirrored = _on_mirrored(denoiser_zip, x, meta)[0] * (hi - lo) + lo
    np.testing.assert_allclose(mirrored, engine, atol=1e-5 * (hi - lo))
    assert np.abs(y[0, 0] * (hi - lo) + lo - engine).max() > 1e-3 * (hi - lo)  # it matters


def test_an_adapted_denoiser_package_carries_its_final_smoothing(tmp):
    """An adapted model's blend with its smoothed output ran in napari-temseg only: the
    package gave other tools another image (up to a third of the output's spread)."""
    model, meta = load_model("stem-denoise")
    meta = {**meta, "postfilter": {"sigma": 3.0, "weight": 0.25}}
    sample = simulate("stem", 256, pixel_size_nm=0.05, dose=30, seed=4).noisy
    path = export_bioimageio((model, meta), tmp / "adapted.zip", sample=sample)
    x, y = _npy(path, "test_input.npy")[0, 0], _npy(path, "test_output.npy")
    lo, hi = np.percentile(x.astype(np.float64), [0.5, 99.5])
    engine = denoise(x, (model, meta), device="cpu", amp=False)
    m = 2 * border_margin(model_overlap(meta, TILE, OVERLAP), *x.shape) + 13  # + the blur's
    inner = slice(m, x.shape[0] - m), slice(m, x.shape[1] - m)
    assert x.shape[0] > 2 * m + 20
    package = y[0, 0] * (hi - lo) + lo
    np.testing.assert_allclose(package[inner], engine[inner], atol=1e-5 * (hi - lo))
    plain = denoise(
        x, (model, {k: v for k, v in meta.items() if k != "postfilter"}), device="cpu", amp=False
    )
    assert np.abs(plain[inner] - engine[inner]).max() > 1e-2 * (hi - lo)  # it matters
    with zipfile.ZipFile(path) as z:
        assert "Gaussian smoothing (sigma 3 px, weight" in z.read("README.md").decode()
        ts = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")), map_location="cpu")
    pre = torch.from_numpy(declared_preprocessing(x, Normalization()))[None, None]
    with torch.no_grad():
        np.testing.assert_allclose(ts(pre).numpy(), y, atol=1e-5)
    assert import_bioimageio(path)[1]["postfilter"] == meta["postfilter"]
    passed, summary = validate_bioimageio(path)  # both weight formats, as other tools run them
    assert passed, summary


def test_a_package_given_as_a_model_says_how_to_use_it(denoiser_zip, tmp, capsys):
    """Given as --model (or in a dock's checkpoint field), a package named torch's archive
    internals ("file in archive is not in a subdirectory: cover.png")."""
    from napari_temseg.models import CheckpointError

    with pytest.raises(CheckpointError) as caught:
        load_model(str(denoiser_zip))
    assert str(caught.value) == (
        "stem-denoise.zip is a bioimage.io model package, not a checkpoint: import it once "
        "with `temseg import-bioimageio stem-denoise.zip OUT.safetensors` (or Load it in "
        "the Train dock) and use that file"
    )
    image = tmp / "frame.tif"
    from napari_temseg.io import write_image

    write_image(image, simulate("stem", 64, pixel_size_nm=0.1, dose=30, seed=2).noisy)
    assert main(["denoise", str(image), "-o", str(tmp / "o"), "--model", str(denoiser_zip)]) == 1
    assert "is a bioimage.io model package, not a checkpoint" in capsys.readouterr().err


def test_reimported_segmenter_is_the_original(segmenter_zip, segmenter, tmp):
    net, meta0 = segmenter
    model, meta = import_bioimageio(segmenter_zip, tmp / "imported.safetensors")
    assert _same_weights(model, net)
    assert meta == {**meta0, "config": net.config}  # YAML 1.1 look-alikes included
    saved, saved_meta = load_model(tmp / "imported.safetensors")
    assert _same_weights(saved, net) and saved_meta == meta
    x = _npy(segmenter_zip, "test_input.npy")[0, 0]
    la, pa = segment(x, (net, meta0), device="cpu", probabilities=True)
    lb, pb = segment(x, (model, meta), device="cpu", probabilities=True)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(pa, pb)
    # our engine (softmax outside the net, our normalisation) agrees with the package,
    # away from the border, and on it with the package's network on the mirrored frame
    inner = (slice(None), *_inner(x.shape, meta))
    np.testing.assert_allclose(
        pa[inner], _npy(segmenter_zip, "test_output.npy")[0][inner], atol=1e-4
    )
    np.testing.assert_allclose(pa, _on_mirrored(segmenter_zip, x, meta), atol=1e-4)


def _inner(shape: tuple[int, ...], meta: dict) -> tuple[slice, slice]:
    """The frame without the border the engine mirrors (its overlap) twice over."""
    m = 2 * border_margin(model_overlap(meta, TILE, OVERLAP), *shape)
    return slice(m, shape[0] - m), slice(m, shape[1] - m)


def _on_mirrored(package: Path, x: np.ndarray, meta: dict) -> np.ndarray:
    """The package's TorchScript network on ``x`` extended by the engine's mirrored border
    (one tile: the test inputs are smaller than a tile), cropped back: (C, Y, X)."""
    m = border_margin(model_overlap(meta, TILE, OVERLAP), *x.shape)
    with zipfile.ZipFile(package) as z:
        ts = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")), map_location="cpu")
    pre = np.pad(declared_preprocessing(x, Normalization()), m, mode="reflect")
    with torch.no_grad():
        out = ts(torch.from_numpy(np.ascontiguousarray(pre, np.float32))[None, None])[0]
    return out.numpy()[:, m : m + x.shape[0], m : m + x.shape[1]]


def test_import_from_unpacked_folder_and_rdf(segmenter_zip, segmenter, tmp):
    folder = tmp / "unpacked"
    with zipfile.ZipFile(segmenter_zip) as z:
        z.extractall(folder)
    for source in (folder, folder / "rdf.yaml"):
        model, meta = import_bioimageio(source)
        assert _same_weights(model, segmenter[0]) and meta["class_names"] == ["support", "particle"]


def test_import_needs_no_bioimageio(segmenter_zip, monkeypatch):
    for mod in [m for m in sys.modules if m == "bioimageio" or m.startswith("bioimageio.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    _, meta = import_bioimageio(segmenter_zip)
    assert meta["task"] == "segment"
    with pytest.raises(ImportError, match=r"pip install napari-temseg\[bioimageio\]"):
        _require_bioimageio()


# --------------------------------------------------------------------------- refusals


def test_foreign_package_is_refused_clearly(denoiser_zip, tmp):
    rdf = _rdf(denoiser_zip)
    del rdf["config"]["napari-temseg"]
    foreign = _rewrite(denoiser_zip, tmp / "foreign.zip", "rdf.yaml", yaml.safe_dump(rdf).encode())
    with pytest.raises(BioimageioError, match="not a napari-temseg model package") as exc:
        import_bioimageio(foreign)
    assert "export-bioimageio" in str(exc.value) and "bioimageio.core" in str(exc.value)
    dataset = tmp / "dataset.yaml"
    dataset.write_text("type: dataset\nformat_version: 0.3.0\nname: images\n")
    with pytest.raises(BioimageioError, match="not a napari-temseg model package"):
        import_bioimageio(dataset)


def test_corrupt_packages_are_refused(denoiser_zip, tmp):
    garbage = tmp / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BioimageioError, match=r"not a bioimage\.io package|damaged"):
        import_bioimageio(garbage)
    truncated = tmp / "truncated.zip"
    truncated.write_bytes(denoiser_zip.read_bytes()[:-2000])
    with pytest.raises(BioimageioError):
        import_bioimageio(truncated)
    with zipfile.ZipFile(denoiser_zip) as z:
        weights = bytearray(z.read("weights.pt"))
    weights[-100] ^= 0xFF
    flipped = tmp / "flipped.zip"
    with zipfile.ZipFile(denoiser_zip) as a, zipfile.ZipFile(flipped, "w") as b:
        for item in a.infolist():  # the checksum in rdf.yaml left as it was
            b.writestr(item, bytes(weights) if item.filename == "weights.pt" else a.read(item))
    with pytest.raises(BioimageioError, match="sha256"):
        import_bioimageio(flipped)
    with pytest.raises(BioimageioError, match="not found"):
        import_bioimageio(tmp / "missing.zip")


class _Payload:
    """Pickles into a call of ``open(path, "w")``: what a hostile weights file could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_weights_with_code_are_never_unpickled(denoiser_zip, tmp):
    marker = tmp / "pwned"
    buf = io.BytesIO()
    torch.save({"net.head.weight": _Payload(marker)}, buf)
    evil = _rewrite(denoiser_zip, tmp / "evil.zip", "weights.pt", buf.getvalue())
    with pytest.raises(BioimageioError, match="plain-tensor"):
        import_bioimageio(evil)
    assert not marker.exists()


# --------------------------------------------------------------------------- CLI


def test_cli_round_trip_denoiser(tmp, capsys):
    d = tmp / "cli-denoise"
    d.mkdir()
    image = simulate("stem", 96, pixel_size_nm=0.05, dose=30, seed=7).noisy
    tifffile.imwrite(d / "img.tif", image)
    pkg = d / "stem"
    assert main(["export-bioimageio", "stem-denoise", str(pkg), "--no-validate"]) == 0
    assert (d / "stem.zip").is_file()
    assert main(["export-bioimageio", "stem-denoise", str(pkg), "--no-validate"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["import-bioimageio", str(d / "stem.zip"), str(d / "m.safetensors")]) == 0
    out = d / "out"
    args = ["denoise", str(d / "img.tif"), "--model", str(d / "m.safetensors"), "-o", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    expected = denoise(image, "stem-denoise", device="cpu", tta=2)  # the command's default
    np.testing.assert_array_equal(tifffile.imread(out / "img.tif"), expected)


def test_cli_round_trip_segmenter_with_sample_and_validation(tmp, segmenter, capsys):
    d = tmp / "cli-segment"
    d.mkdir()
    net, meta = segmenter
    save_checkpoint(d / "seg.safetensors", net, meta)
    image = simulate("stem", 112, pixel_size_nm=0.1, dose=40, seed=8).noisy
    tifffile.imwrite(d / "img.tif", image)
    argv = ["export-bioimageio", str(d / "seg.safetensors"), str(d / "seg.zip")]
    assert main([*argv, "--sample", str(d / "img.tif"), "--author", "A. Tester"]) == 0
    assert "model test: passed" in capsys.readouterr().out
    np.testing.assert_array_equal(_npy(d / "seg.zip", "test_input.npy")[0, 0], image)
    assert _rdf(d / "seg.zip")["authors"] == [{"name": "A. Tester"}]
    assert main(["import-bioimageio", str(d / "seg.zip"), str(d / "back")]) == 0
    out = d / "out"
    args = ["segment", str(d / "img.tif"), "--model", str(d / "back.safetensors")]
    assert main([*args, "-o", str(out), "--device", "cpu"]) == 0
    expected = segment(image, (net, meta), device="cpu")
    np.testing.assert_array_equal(tifffile.imread(out / "img.tif"), expected)


def test_cli_refuses_a_foreign_package_without_traceback(tmp, capsys):
    (tmp / "other").mkdir()
    (tmp / "other" / "rdf.yaml").write_text("type: model\nformat_version: 0.5.3\nname: x\n")
    assert main(["import-bioimageio", str(tmp / "other"), str(tmp / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "not a napari-temseg model package" in err and "Traceback" not in err
    assert not (tmp / "o.safetensors").exists()
