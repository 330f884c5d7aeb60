"""One rule for what "auto" and "scratch" mean, one cache for loaded models."""

from __future__ import annotations

import pytest
import torch

from napari_temseg.engine.finetune import init_segmenter
from napari_temseg.models import DEFAULT_DENOISER, list_models
from napari_temseg.models import resolve as resolve_mod
from napari_temseg.models.bundled import ModelInfo
from napari_temseg.models.resolve import (
    auto_denoiser,
    cached_model,
    loaded_count,
    resolve_init,
    start_denoiser,
)


def _answers(kind: str | None) -> dict[str, str | None]:
    """What "auto" became at each entry point that starts a training run."""
    _, pre_meta = start_denoiser("auto", kind, base=4, depth=2)
    _, seg_meta, _ = init_segmenter("auto", ["support", "particle"], base=4, depth=2)
    source = seg_meta["source_model"]
    return {
        "rule": auto_denoiser(kind),
        "pretrain": pre_meta.get("init"),
        "finetune": None if source == "none" else source,
    }


def test_auto_is_the_same_model_at_every_entry_point():
    installed = {m.name for m in list_models("denoise")}
    assert DEFAULT_DENOISER in installed
    answers = _answers(None)
    assert set(answers.values()) == {DEFAULT_DENOISER}, answers
    kinds = [m for m in list_models("denoise") if m.name.endswith("-denoise")]
    assert len(kinds) >= 2  # stem and hrtem; other bundled denoisers are not a kind's own
    for info in kinds:  # a kind with its own bundled model takes it
        kind = info.name.removesuffix("-denoise")
        assert auto_denoiser(kind) == info.name
        _, meta = start_denoiser("auto", kind, base=4, depth=2)
        assert meta["init"] == info.name
    assert auto_denoiser("no-such-kind") == DEFAULT_DENOISER


def test_auto_without_bundled_models_is_scratch_everywhere(monkeypatch):
    monkeypatch.setattr(resolve_mod, "list_models", lambda task=None: [])
    answers = _answers("stem")
    assert set(answers.values()) == {None}, answers
    model, meta = start_denoiser("auto", "stem", base=4, depth=2)
    assert meta == {} and model.config["base"] == 4


def test_auto_falls_back_to_the_default_when_the_kinds_model_is_missing(monkeypatch, tmp_path):
    only_default = [ModelInfo(DEFAULT_DENOISER, "", "denoise", tmp_path / "x.safetensors")]
    monkeypatch.setattr(resolve_mod, "list_models", lambda task=None: only_default)
    assert auto_denoiser("hrtem") == DEFAULT_DENOISER
    assert auto_denoiser(None) == DEFAULT_DENOISER


@pytest.mark.parametrize("word", ["none", "scratch", "From Scratch", " ", ""])
def test_scratch_words_mean_a_fresh_network(word):
    assert resolve_init(word) is None
    model, meta = start_denoiser(word, "stem", base=4, depth=2)
    assert meta == {} and model.config["depth"] == 2


def test_a_name_is_loaded_once_per_device():
    first = cached_model(DEFAULT_DENOISER, torch.device("cpu"))
    held = loaded_count()
    again = cached_model(None, "cpu")  # None is the default denoiser, the same entry
    assert again[0] is first[0] and loaded_count() == held
    assert first[1]["task"] == "denoise"


def test_a_segmenter_cannot_start_a_denoiser(tiny_segmenter):
    with pytest.raises(ValueError, match="cannot start a denoiser"):
        start_denoiser(tiny_segmenter, "stem", base=4, depth=2)
