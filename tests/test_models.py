"""Networks, the checkpoint format and the bundled model registry."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_temseg.models import (
    RDN,
    CheckpointError,
    PatchGANDiscriminator,
    UNet,
    build_model,
    count_parameters,
    list_models,
    load_checkpoint,
    load_model,
    read_checkpoint_meta,
    resolve_model,
    save_checkpoint,
)

torch.set_num_threads(2)


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("shape", [(37, 51), (16, 16), (1, 9), (65, 8)])
def test_unet_keeps_any_size(shape):
    net = UNet(base=4, depth=4).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        assert net(x).shape == (2, 1, *shape)


def test_unet_default_size_and_parts():
    net = UNet()
    assert 0.4e6 < count_parameters(net) < 0.6e6  # small and CPU-friendly
    feats = net.encoder(torch.randn(1, 1, 32, 32))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_unet_replace_head_keeps_backbone():
    net = UNet(base=4, depth=3, residual=True)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    head = net.replace_head(5)
    assert head is net.head and net.config["out_channels"] == 5 and not net.config["residual"]
    assert net(torch.randn(1, 1, 24, 24)).shape == (1, 5, 24, 24)
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, before[k])
    rebuilt = build_model(net.config)  # the config describes the new head
    rebuilt.load_state_dict(net.state_dict())


def test_unet_output_does_not_depend_on_batch_companions():
    """No batch statistics (BatchNorm): a tile's result is the same alone or in a batch."""
    net = UNet(base=4, depth=3).eval()
    a, b = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32) * 10
    with torch.no_grad():
        alone = net(a)
        batched = net(torch.cat([a, b]))[:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(33, 47), (8, 8)])
def test_rdn_shape_and_identity_start(shape):
    net = RDN(features=8, growth=4, groups=1, blocks=1, layers=2).eval()
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)  # zero-initialised correction: starts as identity


def test_patchgan_is_conditional_and_patchwise():
    d = PatchGANDiscriminator(base=8, layers=3)
    noisy, cand = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    out = d(noisy, cand)
    assert out.shape[:2] == (2, 1) and out.shape[-1] > 1  # a grid of patch logits
    assert not torch.allclose(out, d(torch.zeros_like(noisy), cand))  # sees the condition


def test_build_model_errors_are_clear():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build_model({"arch": "vgg"})
    with pytest.raises(ValueError, match="bad config for 'unet'"):
        build_model({"arch": "unet", "widht": 3})
    with pytest.raises(ValueError, match="'arch'"):
        build_model({"base": 3})
    with pytest.raises(ValueError, match="norm"):
        build_model({"arch": "unet", "norm": "batch"})


# ----------------------------------------------------------------------------- checkpoints


def _meta() -> dict:
    return {
        "task": "denoise",
        "normalization": {"method": "percentile", "low": 0.5, "high": 99.5},
        "training_data": {"source": "test"},
        "pixel_size_nm_range": [0.01, 0.2],
        "class_names": ["support", "particle"],
        "score": np.float32(1.5),
    }


@pytest.mark.parametrize(
    "config",
    [
        {"arch": "unet", "base": 4, "depth": 3},
        {"arch": "rdn", "features": 8, "growth": 4},
        {"arch": "patchgan", "base": 4},
    ],
)
def test_checkpoint_round_trip(tmp_path, config):
    net = build_model(config)
    for p in net.parameters():  # make the weights distinguishable from a fresh init
        p.data.normal_()
    path = save_checkpoint(tmp_path / "m.safetensors", net, _meta())
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(net) and not loaded.training
    for (k, v), (k2, v2) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert meta["task"] == "denoise" and meta["class_names"] == ["support", "particle"]
    assert meta["score"] == 1.5 and meta["config"] == net.config
    assert read_checkpoint_meta(path)["pixel_size_nm_range"] == [0.01, 0.2]


def test_checkpoint_needs_task_and_json_meta(tmp_path):
    net = UNet(base=2, depth=2)
    with pytest.raises(ValueError, match="task"):
        save_checkpoint(tmp_path / "a.safetensors", net, {})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "b.safetensors", net, {"task": "denoise", "x": object()})
    assert not list(tmp_path.iterdir())


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_payload_cannot_run_code(tmp_path):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-temseg-checkpoint", "payload": _Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(evil)
    whole = tmp_path / "whole.pt"  # a whole pickled model, as torch.save(model) writes
    torch.save(UNet(base=2, depth=2), whole)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(whole)
    text = str(caught.value)  # torch's own text was terminal codes and half a sentence
    assert text == (
        "whole.pt holds pickled Python objects (a whole model, or code), which are never "
        "loaded: only plain-tensor checkpoints are"
    )
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_weights_only_torch_file_in_our_layout_loads(tmp_path):
    net = UNet(base=2, depth=2)
    path = tmp_path / "m.pt"
    torch.save(
        {
            "format": "napari-temseg-checkpoint",
            "config": net.config,
            "meta": {"task": "denoise"},
            "state_dict": net.state_dict(),
        },
        path,
    )
    loaded, meta = load_checkpoint(path)
    assert meta["task"] == "denoise"
    assert torch.equal(loaded.head.weight, net.head.weight)


def test_broken_and_foreign_files_fail_cleanly(tmp_path):
    good = save_checkpoint(
        tmp_path / "good.safetensors", UNet(base=2, depth=2), {"task": "denoise"}
    )
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a model at all" * 10)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    for path, pattern in [
        (truncated, "not a napari-temseg checkpoint"),
        (junk, "not a napari-temseg checkpoint"),
        (foreign, "not a napari-temseg checkpoint"),
        (tmp_path / "missing.safetensors", "not found"),
    ]:
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(path)


def test_mismatched_weights_are_reported(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(tmp_path / "m.safetensors", UNet(base=2, depth=2), {"task": "denoise"})
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors.pop("head.bias")
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- bundled


def test_bundled_denoisers_are_listed_and_load_offline():
    infos = {m.name: m for m in list_models()}
    assert {"stem-denoise", "hrtem-denoise"} <= set(infos)
    for name in ("stem-denoise", "hrtem-denoise"):
        info = infos[name]
        assert info.task == "denoise" and info.description and "\n" not in info.description
        assert info.path.stat().st_size < 5e6  # a few MB at most
        model, meta = load_model(name)
        assert meta["normalization"]["method"] == "percentile"
        assert meta["training"]["seed"] is not None and meta["pixel_size_nm_range"]
        assert all(math.isfinite(float(p.abs().sum())) for p in model.parameters())
    assert list_models(task="segment") == [m for m in list_models() if m.task == "segment"]


@pytest.mark.parametrize("name", ["stem-denoise", "hrtem-denoise"])
def test_a_bundled_denoiser_keeps_its_predecessor_as_the_finetuning_start(name):
    """Both denoisers were replaced by weights that restore better; segmenters still start
    from the weights the fine-tuning benchmarks measured, which ship beside them."""
    from napari_temseg.models import FINETUNE_START

    model, meta = load_model(name)
    start = meta[FINETUNE_START]
    start_model, start_meta = load_model(start)
    assert start in {m.name for m in list_models("denoise")} and start != name
    assert FINETUNE_START not in start_meta  # a start does not point further
    assert start_model.config == model.config
    differ = [
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), start_model.state_dict().values(), strict=True)
    ]
    assert any(differ)
    assert start_meta["normalization"] == meta["normalization"]  # same input units


def test_resolve_model_names_and_paths(tmp_path):
    assert resolve_model("stem-denoise").is_file()
    path = save_checkpoint(tmp_path / "own.safetensors", UNet(base=2, depth=2), {"task": "denoise"})
    assert resolve_model(str(path)) == path
    with pytest.raises(CheckpointError, match=r"bundled models: .*stem-denoise"):
        resolve_model("no-such-model")
