"""Fine-tuning a segmenter from painted strokes, and applying it: engine only, no Qt."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_temseg.engine.finetune import (
    PHASE_BALANCE,
    FinetuneConfig,
    Finetuner,
    dice_per_class,
    finetune,
    kept_weights,
    save_segmenter,
    stroke_loss,
)
from napari_temseg.engine.segment import load_segmenter, segment
from napari_temseg.engine.strokes import (
    SegmentError,
    StrokeError,
    StrokeSource,
    scribbles_from_mask,
)
from napari_temseg.models import UNet, save_checkpoint
from napari_temseg.pipeline.predict_files import segment_files
from napari_temseg.pipeline.training import finetune_files
from napari_temseg.synth import simulate

torch.set_num_threads(1)  # tiny networks: one thread is fastest on a shared 2-core box


def tiny(steps: int = 40, **kw) -> FinetuneConfig:
    base = dict(steps=steps, batch_size=4, patch=64, base=8, depth=3, device="cpu", val_every=20)
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def stem():
    s = simulate("stem", 160, pixel_size_nm=0.1, dose=200, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=4, length=24, seed=0)
    return s, strokes


def run(tuner: Finetuner, cancel=None):
    events = []
    gen = tuner.run(cancel=cancel)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, events


def test_scribbles_are_sparse_and_inside_their_class(stem):
    s, strokes = stem
    labelled = strokes > 0
    assert 0 < labelled.mean() < 0.05  # strokes, not a full mask
    assert set(np.unique(strokes)) == {0, 1, 2}
    assert np.array_equal(strokes[labelled], s.recorded_semantic[labelled])


def test_training_from_strokes_segments_the_whole_image(stem):
    s, strokes = stem
    # 100 steps: at 60 the plain U-Net from scratch reached particle Dice 0.74-0.91
    # depending on the seed and thread count; at 100, 0.92 for every seed tried
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(100))
    before = segment(s.noisy, (tuner.model, {**tuner.segmenter_meta()}), device="cpu", tile=96)
    result, events = run(tuner)
    after = segment(s.noisy, (result.model, result.meta), device="cpu", tile=96, overlap=16)
    d0 = dice_per_class(before, s.recorded_semantic, 2)[1]
    d1 = dice_per_class(after, s.recorded_semantic, 2)[1]
    assert after.dtype == np.uint8 and set(np.unique(after)) <= {1, 2}
    assert d0 < 0.5 < 0.8 < d1, (d0, d1)
    vals = [e for e in events if e.kind == "val"]
    assert vals and all(len(e.val_dice) == 2 for e in vals)
    assert result.steps_done == 100 and result.best_step in [e.step for e in vals]
    assert events[-1].examples_per_s > 0


def test_a_scratch_segmenter_starts_from_its_seed(stem):
    s, strokes = stem
    torch.manual_seed(123)  # the global RNG must neither decide the start nor be consumed
    a = Finetuner([s.noisy], [strokes], init="none", config=tiny(10, seed=3))
    state = torch.random.get_rng_state()
    b = Finetuner([s.noisy], [strokes], init="none", config=tiny(10, seed=3))
    c = Finetuner([s.noisy], [strokes], init="none", config=tiny(10, seed=4))
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (dict(t.model.named_parameters()) for t in (a, b, c))
    name = next(n for n in wa if n.endswith("weight") and not n.startswith("head"))
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert not torch.equal(wa[name], wc[name])


def test_the_model_is_corrected_to_the_painted_frames_class_balance(stem, tmp_path):
    """Strokes teach the painter's proportions; the model returned is corrected to the
    painted frames' own (engine/prior.py), and a model trained on from it is not."""
    s, strokes = stem
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(100))
    result, _ = run(tuner)
    b = result.meta["class_balance"]
    truth = float((s.recorded_semantic == 2).mean())
    assert b["in_head_bias"] and min(b["stroke_recall_balanced"]) >= 0.85 * min(b["stroke_recall"])
    assert abs(b["painted_frames"][1] - truth) < 0.05, (b, truth)
    plain = tuner.best_state["head.bias"].cpu()
    corrected = plain + torch.log(torch.tensor(b["ratio"], dtype=torch.float32))
    assert torch.allclose(result.model.head.bias.detach().cpu(), corrected)
    path = save_segmenter(tmp_path / "seg", result.model, result.meta)
    again = Finetuner([s.noisy], [strokes], init=str(path), config=tiny(1))
    assert torch.allclose(again.model.head.bias.detach().cpu(), plain, atol=1e-6)
    assert "class_balance" not in again.meta  # estimated anew for the new weights
    off = Finetuner([s.noisy], [strokes], init="none", config=tiny(20, class_balance=False))
    result, _ = run(off)
    assert "class_balance" not in result.meta
    assert torch.equal(result.model.head.bias.cpu(), off.best_state["head.bias"].cpu())


def test_a_network_that_misses_a_class_is_not_corrected(stem):
    """EM trusts the probabilities: an untrained head's (uniform) are not trusted."""
    s, strokes = stem
    cancel = threading.Event()
    cancel.set()  # stop before the head fit and the first step: the head is still zero
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(10))
    result, _ = run(tuner, cancel=cancel)
    b = result.meta["class_balance"]
    assert not b["in_head_bias"] and min(b["stroke_recall"]) < 0.8
    assert torch.equal(result.model.head.bias.cpu(), tuner.best_state["head.bias"].cpu())


def test_loss_ignores_unlabelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:6, 2:12] = 1
    target[:, 10:12, 2:12] = 3
    loss = stroke_loss(logits, target, dice_weight=0.5)
    loss.backward()
    unlabelled = (target == 0)[:, None].expand_as(logits)
    assert torch.all(logits.grad[unlabelled] == 0)
    changed = logits.detach().clone()
    changed[unlabelled] = torch.randn(int(unlabelled.sum())) * 10
    assert torch.isclose(stroke_loss(changed, target, dice_weight=0.5), loss.detach())
    flipped = target.clone()
    flipped[:, 10:12, 2:12] = 2  # changing a *labelled* pixel's class does change it
    assert not torch.isclose(stroke_loss(logits.detach(), flipped), loss.detach())


def test_rare_class_gets_weight_and_patches():
    img = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    lab = np.zeros((256, 256), np.uint8)
    lab[10:250, 20:30] = 1
    lab[100:240, 200:210] = 1
    lab[50:53, 150:152] = 2  # 6 pixels of a rare class
    src = StrokeSource([img], [lab], 2, patch=64, val_fraction=0.0)
    w = src.class_weights()
    assert w[1] > 5 * w[0]
    _, ys = src.sample(64, np.random.default_rng(1))
    with_rare = np.mean([(y == 2).any() for y in ys])
    assert with_rare > 0.3, with_rare


def test_clear_errors(stem):
    s, strokes = stem
    with pytest.raises(StrokeError, match="no strokes"):
        Finetuner([s.noisy], [np.zeros_like(strokes)], init="none", config=tiny())
    with pytest.raises(StrokeError, match="only class 1"):
        Finetuner([s.noisy], [(strokes == 1).astype(np.uint8)], init="none", config=tiny())
    with pytest.raises(StrokeError, match="differ in shape"):
        Finetuner([s.noisy], [strokes[:100]], init="none", config=tiny())
    three = strokes.copy()
    three[0:3, 0:3] = 3
    with pytest.raises(StrokeError, match="label 3"):
        Finetuner([s.noisy], [three], init="none", config=tiny())
    with pytest.raises(SegmentError, match="two classes"):
        Finetuner([s.noisy], [strokes], ["only"], init="none", config=tiny())


def test_image_smaller_than_a_patch_is_padded(stem):
    s, strokes = stem
    small, lab = s.noisy[:40, :48], strokes[:40, :48].copy()
    lab[2:5, 2:20], lab[30:33, 10:40] = 1, 2
    result, _ = run(Finetuner([small], [lab], init="none", config=tiny(5, patch=64)))
    assert segment(small, (result.model, result.meta), device="cpu").shape == small.shape


def test_checkpoint_round_trip_and_other_classes(stem, tmp_path):
    s, strokes = stem
    names = ["carbon", "gold"]
    result = finetune([s.noisy], [strokes], names, init="none", config=tiny(10))
    path = save_segmenter(tmp_path / "seg", result.model, result.meta)
    assert path.suffix == ".safetensors"
    with pytest.raises(FileExistsError):
        save_segmenter(path, result.model, result.meta)
    _model, meta = load_segmenter(path)
    assert meta["class_names"] == names and len(meta["class_colors"]) == 2
    assert meta["source_model"] == "none" and meta["normalization"]["method"] == "percentile"
    assert meta["training"]["steps_done"] == 10 and meta["pixel_size_nm"] is None
    a = segment(s.noisy, path, device="cpu")
    b = segment(s.noisy, (result.model, result.meta), device="cpu")
    assert np.array_equal(a, b)
    with pytest.raises(SegmentError, match="trained for 2 classes"):
        Finetuner([s.noisy], [strokes], ["a", "b", "c"], init=str(path), config=tiny())
    denoiser = save_checkpoint(
        tmp_path / "den.safetensors", UNet(base=8, depth=3), {"task": "denoise"}
    )
    with pytest.raises(SegmentError, match="not a segmenter"):
        load_segmenter(denoiser)
    with pytest.raises(SegmentError, match="not a segmenter"):
        segment(s.noisy, denoiser, device="cpu")


def test_continue_from_current_model(stem):
    s, strokes = stem
    first, _ = run(Finetuner([s.noisy], [strokes], init="none", config=tiny(20)))
    w_head = first.model.head.weight.detach().clone()
    more = strokes.copy()
    more[:, :4][s.recorded_semantic[:, :4] == 1] = 1  # paint more, press Train again
    tuner = Finetuner([s.noisy], [more], init=(first.model, first.meta), config=tiny(10))
    assert not tuner.head_is_new and torch.equal(tuner.model.head.weight, w_head)
    second, events = run(tuner)
    steps = [e.step for e in events if e.kind == "step"]
    assert steps[0] == 21 and second.steps_done == 30
    assert events[0].kind == "val" and events[0].step == 20  # the model to beat
    assert second.meta["training"]["steps_done"] == 30


def test_cancel_keeps_the_best(stem):
    s, strokes = stem
    cancel = threading.Event()
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(200))
    gen = tuner.run(cancel=cancel)
    for ev in gen:
        if ev.kind == "val" and ev.step > 0:  # step 0: the fitted head, before training
            cancel.set()
    result = tuner  # generator finished; its state holds the best
    assert result.steps_done == 10 and result.best_step in (0, 10)
    assert result.best_score > -1  # validated, so there is a best to keep
    assert torch.equal(tuner.model.state_dict()["head.weight"], tuner.best_state["head.weight"])


def test_the_kept_model_is_the_mean_of_the_late_half_or_the_best_validated(stem):
    s, strokes = stem
    seen: list[dict[str, torch.Tensor]] = []
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(40, val_every=5))
    gen = tuner.run()
    for ev in gen:
        if ev.kind == "step" and ev.step in (20, 25, 30, 35, 40):
            seen.append({k: t.clone() for k, t in tuner.model.state_dict().items()})
    assert tuner.best_step == 40  # the average, validated at the run's end
    meta = tuner.segmenter_meta()["training"]
    assert (meta["averaged_from_step"], meta["best_step"]) == (20, 40)
    mean = {k: sum(w[k] for w in seen) / len(seen) for k in seen[0]}
    state = tuner.best_state
    assert all(torch.allclose(state[k], mean[k], atol=1e-5) for k in mean)
    assert not torch.allclose(state["head.weight"], seen[-1]["head.weight"])
    # average_late=0: the best by held-out strokes, as before
    best = Finetuner(
        [s.noisy], [strokes], init="none", config=tiny(40, val_every=5, average_late=0)
    )
    result, events = run(best)
    vals = [e for e in events if e.kind == "val"]
    top = max(vals, key=lambda e: (np.mean([d for d in e.val_dice if d is not None]), -e.val_loss))
    assert result.best_step == top.step and result.averaged_from is None
    assert result.kept == f"the weights of step {top.step}"
    assert kept_weights(40, 20) == "the mean of the weights of steps 20-40"
    with pytest.raises(ValueError, match="average_late"):
        tiny(average_late=2)


def test_stack_uses_labelled_frames_only_and_segments_all(stem):
    s, strokes = stem
    other = simulate("stem", 160, pixel_size_nm=0.1, dose=200, seed=2)
    stack = np.stack([other.noisy, s.noisy, other.noisy])
    labels = np.zeros(stack.shape, np.uint8)
    labels[1] = strokes
    tuner = Finetuner([stack], [labels], init="none", config=tiny(30))
    assert [f.origin for f in tuner.source.frames] == [(0, 1)]
    result, _ = run(tuner)
    seen = []
    out, probs = segment(
        stack,
        (result.model, result.meta),
        device="cpu",
        tile=96,
        overlap=16,
        probabilities=True,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert out.shape == stack.shape and probs.shape == (3, 2, 160, 160)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert np.array_equal(
        out[1], segment(s.noisy, (result.model, result.meta), device="cpu", tile=96, overlap=16)
    )
    assert np.array_equal(out, probs.argmax(1) + 1)
    assert seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1


def test_pixel_sizes_are_brought_to_one_scale(stem):
    s, strokes = stem
    big = simulate("stem", 160, pixel_size_nm=0.3, dose=200, seed=3)
    big_strokes = scribbles_from_mask(big.recorded_semantic, per_class=3, seed=1)
    tuner = Finetuner(
        [s.noisy, big.noisy],
        [strokes, big_strokes],
        init="none",
        config=tiny(5),
        pixel_sizes=[0.05, 0.3],
    )
    assert tuner.source.pixel_size_nm == pytest.approx(0.175)
    shapes = [f.image.shape for f in tuner.source.frames]
    assert shapes == [(46, 46), (160, 160)]  # > x2 off: resampled; within x2: as is
    result, _ = run(tuner)
    assert result.meta["pixel_size_nm"] == pytest.approx(0.175)
    seg = (result.model, result.meta)
    for px in (0.3, 1.0):  # as is, and resampled (x5.7) and back to the input's shape
        assert segment(big.noisy, seg, device="cpu", pixel_size_nm=px).shape == big.noisy.shape


def test_init_from_denoiser_copies_encoder_and_warms_up_head(stem, tmp_path):
    s, strokes = stem
    torch.manual_seed(3)
    den = UNet(base=8, depth=3)
    norm = {"method": "percentile", "low": 1.0, "high": 99.0, "clip": 10.0}
    path = save_checkpoint(
        tmp_path / "den.safetensors", den, {"task": "denoise", "normalization": norm}
    )
    cfg = tiny(6, head_warmup=6, head_fit=False)  # a head left at zero warms up alone
    tuner = Finetuner([s.noisy], [strokes], init=str(path), config=cfg)
    assert tuner.head_is_new and tuner.model.head.out_channels == 2
    for name, value in den.encoder.state_dict().items():
        assert torch.equal(tuner.model.encoder.state_dict()[name], value), name
    assert tuner.normalization.low == 1.0 and tuner.normalization.clip == 10.0
    head0 = tuner.model.head.weight.detach().clone()
    _, events = run(tuner)
    assert events[0].phase == "head warm-up" and events[0].kind == "step"
    for name, value in den.encoder.state_dict().items():  # frozen during warm-up
        assert torch.equal(tuner.model.encoder.state_dict()[name].cpu(), value), name
    assert not torch.equal(tuner.model.head.weight.detach().cpu(), head0)
    meta = tuner.segmenter_meta()
    assert meta["source_model"] == str(path) and meta["normalization"]["low"] == 1.0


def test_files_round_trip(stem, tmp_path):
    from napari_temseg.io import write_image, write_labels

    s, strokes = stem
    write_image(tmp_path / "a.tif", s.noisy, scale=(0.1, 0.1))
    write_labels(
        tmp_path / "a_strokes.tif", strokes, scale=(0.1, 0.1), class_names=["carbon", "gold"]
    )
    out, result = finetune_files(
        [tmp_path / "a.tif"],
        [tmp_path / "a_strokes.tif"],
        tmp_path / "seg",
        init="none",
        steps=10,
        device="cpu",
        config=tiny(10),
    )
    assert out.is_file() and result.meta["class_names"] == ["carbon", "gold"]
    assert result.meta["pixel_size_nm"] == pytest.approx(0.1)
    with pytest.raises(FileExistsError):
        finetune_files([tmp_path / "a.tif"], [tmp_path / "a_strokes.tif"], out, init="none")
    written = segment_files([tmp_path / "a.tif"], out, tmp_path / "masks", device="cpu")
    assert [p.name for p in written] == ["a.tif"]
    from napari_temseg.io import read

    mask = read(written[0])[0]
    assert mask.shape == s.noisy.shape and set(np.unique(np.asarray(mask.data))) <= {1, 2}


def test_a_class_without_strokes_is_said(stem, tmp_path, capsys):
    """Strokes 1 and 3 only trained a "particle" class nobody painted, and said nothing."""
    from napari_temseg.cli import main
    from napari_temseg.io import write_image, write_labels

    s, strokes = stem
    skipped = np.where(strokes == 2, 3, strokes).astype(np.uint8)
    names = ["support", "particle", "defect"]
    tuner = Finetuner([s.noisy], [skipped], names, init="none", config=tiny())
    assert tuner.notes == [
        "class 2 'particle' has no strokes: it is not learned, nor ever predicted, until "
        "some are painted"
    ]
    assert Finetuner([s.noisy], [strokes], init="none", config=tiny()).notes == []
    write_image(tmp_path / "a.tif", s.noisy, scale=(0.1, 0.1))
    write_labels(tmp_path / "a_strokes.tif", skipped, scale=(0.1, 0.1))  # no class names
    argv = ["finetune", "--image", str(tmp_path / "a.tif"), "--labels"]
    argv += [str(tmp_path / "a_strokes.tif"), "-o", str(tmp_path / "m.safetensors")]
    assert main([*argv, "--steps", "2", "--device", "cpu", "--init", "none"]) == 0
    assert "note: class 2 'particle' has no strokes" in capsys.readouterr().err


def test_strokes_that_cannot_teach_are_refused_with_their_reason(stem, tmp_path, capsys):
    """Colour strokes were told to relabel 255; strokes on NaN only "only class 1"."""
    import imagecodecs

    from napari_temseg.cli import main
    from napari_temseg.io import write_image

    s, strokes = stem
    nan = s.noisy.astype(np.float32)
    nan[strokes == 2] = np.nan  # every particle stroke where the image holds no data
    with pytest.raises(StrokeError, match="strokes of class 2 lie only on NaN or infinite"):
        Finetuner([nan], [strokes], init="none", config=tiny())
    write_image(tmp_path / "a.tif", s.noisy)
    rgb = np.zeros((*strokes.shape, 3), np.uint8)
    rgb[strokes == 1, 0] = 255  # red: support, green: particle
    rgb[strokes == 2, 1] = 255
    (tmp_path / "strokes.png").write_bytes(imagecodecs.png_encode(rgb))
    argv = ["finetune", "--image", str(tmp_path / "a.tif"), "--labels"]
    argv += [str(tmp_path / "strokes.png"), "-o", str(tmp_path / "m.safetensors")]
    assert main([*argv, "--steps", "1", "--init", "none"]) != 0
    err = capsys.readouterr().err
    assert "strokes.png is a colour (RGB) picture, not labels" in err and "255" not in err


def test_auto_init_uses_the_bundled_denoiser_when_installed(stem):
    from napari_temseg.models import FINETUNE_START, list_models, load_model

    if "stem-denoise" not in {m.name for m in list_models("denoise")}:
        pytest.skip("bundled stem-denoise weights not installed")
    s, strokes = stem
    tuner = Finetuner([s.noisy], [strokes], init="auto", config=tiny(1, base=16, depth=4))
    start = load_model("stem-denoise")[1].get(FINETUNE_START)
    den, meta = load_model(start or "stem-denoise")  # the denoiser's fine-tuning start
    assert tuner.meta["source_model"] == "stem-denoise" and tuner.head_is_new
    assert tuner.meta.get("start_weights") == start
    for name, value in den.decoder.state_dict().items():
        assert torch.equal(tuner.model.decoder.state_dict()[name], value), name
    assert tuner.normalization.to_dict() == {
        **tuner.normalization.to_dict(),
        **(meta.get("normalization") or {}),
    }


def test_a_denoiser_that_names_its_finetuning_start_gives_that_network(stem, tmp_path):
    from napari_temseg.models import FINETUNE_START, load_model
    from napari_temseg.models.resolve import start_denoiser

    s, strokes = stem
    torch.manual_seed(0)
    start = save_checkpoint(
        tmp_path / "start.safetensors", UNet(base=4, depth=2), {"task": "denoise"}
    )
    meta = {"task": "denoise", FINETUNE_START: str(start)}
    den = save_checkpoint(tmp_path / "den.safetensors", UNet(base=4, depth=2), meta)

    def encoder_is(tuner, path) -> bool:
        want = load_model(path)[0].encoder.state_dict()
        return all(torch.equal(tuner.model.encoder.state_dict()[k], v) for k, v in want.items())

    tuner = Finetuner([s.noisy], [strokes], init=str(den), config=tiny(1, base=4, depth=2))
    assert encoder_is(tuner, start) and not encoder_is(tuner, den)
    assert tuner.meta["source_model"] == str(den) and tuner.meta["start_weights"] == str(start)
    # a denoiser pretrained from it has other weights, so it does not name that start
    assert FINETUNE_START not in start_denoiser(str(den), None, 4, 2)[1]
    start.unlink()  # a start that is gone: the denoiser itself, not an error
    tuner = Finetuner([s.noisy], [strokes], init=str(den), config=tiny(1, base=4, depth=2))
    assert encoder_is(tuner, den) and "start_weights" not in tuner.meta


def test_new_head_is_fitted_to_the_strokes_before_training(stem):
    """The linear probe: a usable mask before the first gradient step (engine/probe.py)."""
    from napari_temseg.models import list_models

    if "stem-denoise" not in {m.name for m in list_models("denoise")}:
        pytest.skip("bundled stem-denoise weights not installed")
    s, strokes = stem
    truth = s.recorded_semantic
    cfg = tiny(1, base=16, batch_size=8, patch=128)
    tuner = Finetuner([s.noisy], [strokes], init="stem-denoise", config=cfg)
    zero = segment(s.noisy, (tuner.model, tuner.segmenter_meta()), device="cpu")
    backbone = {k: v.clone() for k, v in tuner.model.state_dict().items() if "head" not in k}
    cancel = threading.Event()
    gen = tuner.run(cancel=cancel)
    first = next(gen)
    cancel.set()  # stop before any training step
    for _ in gen:
        pass
    assert first.kind == "val" and first.step == 0 and tuner.steps_done == 0
    assert first.phase == "head fitted"
    assert tuner.head_fit_accuracy is not None and tuner.head_fit_accuracy > 0.85
    for k, v in tuner.model.state_dict().items():  # only the head changed
        if "head" not in k:
            assert torch.equal(v.cpu(), backbone[k]), k
    fitted = segment(s.noisy, (tuner.model, tuner.segmenter_meta()), device="cpu")
    assert dice_per_class(zero, truth, 2)[1] < 0.3  # a zero head: one class everywhere
    assert dice_per_class(fitted, truth, 2)[1] > 0.75, dice_per_class(fitted, truth, 2)
    assert first.val_dice[1] > 0.75 and tuner.best_step == 0
    assert tuner.segmenter_meta()["training"]["head_fit_accuracy"] == tuner.head_fit_accuracy


def test_head_fit_needs_two_painted_classes():
    from napari_temseg.engine.probe import fit_head

    torch.manual_seed(0)
    model = UNet(1, 2, base=8, depth=3)
    x = 0.2 * np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    y = np.zeros((2, 32, 32), np.int64)
    y[:, 4:8, 4:8] = 1  # one class only
    before = model.head.weight.detach().clone()
    w = torch.ones(2)
    assert fit_head(model, [(x, y)], w, np.random.default_rng(0)) is None
    assert torch.equal(model.head.weight, before)
    y[:, 20:24, 20:24] = 2
    x[:, :, 20:24, 20:24] += 3.0  # class 2 is brighter: linearly separable
    acc = fit_head(model, [(x, y)], w, np.random.default_rng(0))
    assert acc is not None and acc > 0.7 and not torch.equal(model.head.weight, before)
    with torch.no_grad():  # the head written into the model is the one that was fitted
        pred = model(torch.from_numpy(x)).argmax(1).numpy() + 1
    assert (pred[y > 0] == y[y > 0]).mean() == pytest.approx(acc, abs=1e-6)


def test_a_fit_that_fails_on_held_out_strokes_falls_back_to_warm_up(stem):
    s, strokes = stem
    cfg = tiny(6, head_warmup=3, head_fit_min_dice=1.01)  # no fit can pass this
    tuner = Finetuner([s.noisy], [strokes], init="none", config=cfg)
    tuner.meta["source_model"] = "a denoiser"  # warm-up applies to pretrained inits
    _, events = run(tuner)
    assert tuner.head_fit_accuracy is None and tuner.head_fit_val_dice is not None
    assert events[0].kind == "step" and events[0].phase == "head warm-up"
    meta = tuner.segmenter_meta()["training"]
    assert meta["head_fit_accuracy"] is None and meta["head_fit_val_dice"] < 1.01


class FakeClock:
    """``time.perf_counter`` that advances a fixed amount per call: budgets without timing."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_ends_the_run_and_decays_the_rate(stem, monkeypatch):
    from types import SimpleNamespace

    from napari_temseg.engine import loop

    s, strokes = stem
    clock = FakeClock(0.25)
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    cfg = tiny(500, max_seconds=30.0, val_every=10)
    result, events = run(Finetuner([s.noisy], [strokes], init="none", config=cfg))
    assert result.timed_out and not result.stopped
    assert 10 < result.steps_done < 500
    assert events[-1].kind == "val" and events[-1].step == result.steps_done  # validated at end
    steps = [e for e in events if e.kind == "step"]
    assert all(e.eta_s is not None and 0 <= e.eta_s <= 30.0 for e in steps)
    assert steps[-1].eta_s < steps[0].eta_s
    assert steps[-1].lr < 0.5 * cfg.lr  # the decay followed the budget, not the 500 steps


def test_time_left_without_a_budget_counts_the_steps(stem, monkeypatch):
    from types import SimpleNamespace

    from napari_temseg.engine import loop

    s, strokes = stem
    clock = FakeClock(0.25)
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    result, events = run(Finetuner([s.noisy], [strokes], init="none", config=tiny(12)))
    steps = [e for e in events if e.kind == "step"]
    assert not result.timed_out and result.steps_done == 12
    assert steps[0].eta_s > steps[5].eta_s > steps[-1].eta_s == 0.0
    with pytest.raises(ValueError, match="max_seconds"):
        FinetuneConfig(max_seconds=-1)


def test_previews_come_from_the_engine_with_each_new_best(stem):
    """The dock only displays: the fine-tuner segments the shown window itself."""
    from napari_temseg.engine.events import SegmentPreview

    s, strokes = stem
    window = s.noisy[:96, :80]
    tuner = Finetuner([s.noisy], [strokes], init="none", config=tiny(40, val_every=10))
    events = list(tuner.run(preview=window, preview_every_s=0.0))
    kinds = [e.kind for e in events]
    previews = [e for e in events if e.kind == "preview"]
    improved = [e for e in events if e.kind == "val" and e.improved]
    # one after each new best, and the last one as the returned model segments the window
    assert len(previews) == len(improved) + 1 >= 2
    assert events[-1] is previews[-1] and previews[-1].phase == PHASE_BALANCE
    for i, k in enumerate(kinds[:-1]):  # right after the validation that found the new best
        if k == "preview":
            assert events[i - 1].kind == "val" and events[i - 1].improved
    shown = previews[-1].preview
    assert isinstance(shown, SegmentPreview) and shown.labels.shape == window.shape
    assert shown.uncertainty.shape == window.shape and shown.uncertainty.dtype == np.uint8
    best = segment(window, (tuner.best_model(), tuner.segmenter_meta()), device="cpu")
    np.testing.assert_array_equal(shown.labels, best)  # the best model's, not the last one's
    assert "preview" not in [
        e.kind for e in Finetuner([s.noisy], [strokes], init="none", config=tiny(10)).run()
    ]  # no window, no previews


def _painted_series(n: int):
    sims = [simulate("stem", 128, pixel_size_nm=0.1, dose=200, seed=40 + i) for i in range(n)]
    images = np.stack([s.noisy for s in sims])
    labels = np.stack(
        [
            scribbles_from_mask(s.recorded_semantic, per_class=3, length=20, seed=i)
            for i, s in enumerate(sims)
        ]
    )
    return images, labels


def test_three_painted_frames_validate_on_one_left_out_whole():
    images, labels = _painted_series(3)
    assert StrokeSource([images], [labels], 2, patch=64).held_out_frame is None, "off by default"
    src = StrokeSource([images], [labels], 2, patch=64, holdout_frames=3)
    held = [f for f in src.frames if not f.train.any()]
    assert len(held) == 1 and src.held_out_frame == held[0].origin
    k = held[0].origin[1]
    np.testing.assert_array_equal(held[0].val, labels[k], "all of its strokes validate")
    for f in src.frames:
        if f is not held[0]:  # the others train on every stroke they have
            assert not f.val.any()
            np.testing.assert_array_equal(f.train, labels[f.origin[1]])
    assert src.describe()["held_out_frame"] == [0, k]
    tuner = Finetuner([images], [labels], init="none", config=tiny(steps=2, holdout_frames=3))
    assert tuner.val_on == f"a whole painted frame left out of training (image 1, frame ({k},))"


def test_two_painted_frames_or_a_frame_with_the_only_strokes_of_a_class_stay_split():
    images, labels = _painted_series(3)
    two = StrokeSource([images[:2]], [labels[:2]], 2, patch=64, holdout_frames=3)
    assert two.held_out_frame is None and all(f.val.any() and f.train.any() for f in two.frames)
    only = labels.copy()
    rest = only[1:]
    rest[rest == 2] = 0  # frame 0 alone has class 2; frames 1, 2 only class 1
    src = StrokeSource([images], [only], 2, patch=64, holdout_frames=3)
    assert src.held_out_frame is None, "no frame holds two classes the others also hold"


def test_contrast_inversion_shows_that_share_of_patches_with_the_classes_polarity_swapped():
    """``invert_contrast``: HRTEM particles can turn from brighter to darker than the support
    between frames; that share of training patches shows the painted bright class dark."""
    rng = np.random.default_rng(0)
    img = np.zeros((128, 128), np.float32)
    img[:, 64:] = 100.0
    img += rng.normal(0, 1, img.shape).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[20:108, 20:40] = 1  # dark support
    lab[20:108, 88:108] = 2  # bright particle

    def dark_share(invert: float) -> float:
        src = StrokeSource([img], [lab], 2, patch=32, val_fraction=0.0, invert=invert, seed=1)
        xs, ys = src.sample(400, np.random.default_rng(2))
        bright = [x[0][y == 2].mean() for x, y in zip(xs, ys, strict=True) if (y == 2).any()]
        return float(np.mean(np.array(bright) < 0.5))

    assert dark_share(0.0) == 0.0
    assert dark_share(1.0) == 1.0
    assert 0.15 < dark_share(0.25) < 0.35
    tuner = Finetuner([img], [lab], init="none", config=tiny(steps=1, invert_contrast=0.25))
    assert tuner.source.describe()["invert"] == 0.25  # recorded with the segmenter


def test_gamma_and_blur_augmentations_keep_the_range_and_the_order_of_intensities():
    """Measured and not on by default (docs/segment.md), but they must do what they say."""
    rng = np.random.default_rng(0)
    img = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    img[:, ::2] += 0.05  # fine detail a blur smooths away
    lab = np.zeros(img.shape, np.uint8)
    lab[10:20, 10:20], lab[40:50, 40:50] = 1, 2
    src = StrokeSource([img], [lab], 2, patch=32, gamma_jitter=0.5, blur_jitter=1.5)
    changed = blurred = 0
    for _ in range(200):
        out = src._imaging(img.copy(), rng)
        assert np.all(np.diff(out[32, 1::2]) >= -1e-6)  # a gamma keeps the order
        changed += not np.allclose(out, img)
        blurred += np.abs(np.diff(out[32])).mean() < 0.5 * np.abs(np.diff(img[32])).mean()
    assert 100 < changed < 200 and 20 < blurred < 100
