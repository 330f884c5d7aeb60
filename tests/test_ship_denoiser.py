"""scripts/ship_denoiser.py: a new bundled denoiser keeps the old weights as its segmenters'
start, and a lost stage of its training record can be put back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from napari_temseg.models import FINETUNE_START, UNet, load_model, save_checkpoint
from napari_temseg.models.checkpoint import read_checkpoint_meta

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ship_denoiser.py"


def _ship():
    spec = importlib.util.spec_from_file_location("ship_denoiser", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _net(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(base=4, depth=2)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shipping_keeps_the_old_weights_as_the_finetuning_start(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    old, new = _net(0), _net(1)
    lost = {"command": "train --seed 21 --device cuda", "seed": 21, "snapshots": ["s.pt"]}
    first = {"command": "train --seed 0", "seed": 0}
    save_checkpoint(
        weights / "stem-denoise.safetensors", old, {"task": "denoise", "training": first}
    )
    kept_record = {"command": "train --seed 93", "seed": 93, "previous_training": first}
    save_checkpoint(
        tmp_path / "record.safetensors", _net(2), {"task": "denoise", "training": kept_record}
    )
    cand_meta = {
        "task": "denoise",
        "name": "stem-denoise",
        "training": {"command": "train --seed 94", "seed": 94, "previous_training": lost},
    }
    cand = save_checkpoint(tmp_path / "cand.safetensors", new, cand_meta)
    ship = _ship()
    args = ["--weights-dir", str(weights), "--keep-start", "stem-start"]
    fix = ["--stage-fix", f"--seed 21={tmp_path / 'record.safetensors'}", "--note", "final weights"]
    assert ship([str(cand), *args, *fix]) == 0

    start_model, start_meta = load_model(weights / "stem-start.safetensors")
    assert _same(start_model, old) and start_meta["name"] == "stem-start"
    shipped, meta = load_model(weights / "stem-denoise.safetensors")
    assert _same(shipped, new) and meta[FINETUNE_START] == "stem-start"
    stages = []
    stage = meta["training"]
    while stage:
        stages.append((stage["seed"], stage.get("note")))
        stage = stage.get("previous_training")
    assert stages == [(94, None), (93, "final weights"), (0, None)]  # the lost stage replaced

    # shipping again keeps the start that is there; a start the bundled file does not name
    # is never overwritten
    assert ship([str(cand), *args]) == 0
    assert _same(load_model(weights / "stem-start.safetensors")[0], old)
    with pytest.raises(SystemExit, match="refusing"):
        ship([str(cand), "--weights-dir", str(weights), "--keep-start", "other"])
    assert not (weights / "other.safetensors").exists()
    assert (
        read_checkpoint_meta(weights / "stem-denoise.safetensors")[FINETUNE_START] == "stem-start"
    )
    # a fresh bundle whose start name is taken by another file
    save_checkpoint(weights / "hrtem-denoise.safetensors", old, {"task": "denoise"})
    with pytest.raises(SystemExit, match="refusing"):
        ship([str(cand), "--weights-dir", str(weights), "--name", "hrtem-denoise", *args[2:]])
    assert "stem-start" not in str(read_checkpoint_meta(weights / "hrtem-denoise.safetensors"))
