"""The restoration loss terms (engine/losses.py): what each one sees, and a run with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_temseg.engine import TrainConfig, train
from napari_temseg.engine.losses import TERMS, restoration_loss, term
from napari_temseg.models import UNet, load_checkpoint
from test_engine_train import tiny_config, tiny_source


def lattice(size: int = 64, period: float = 8.0) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = (np.cos(2 * np.pi * yy / period) * np.cos(2 * np.pi * xx / period)) ** 4
    return torch.from_numpy(img)[None, None]


def blurred(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """A Gaussian blur with periodic borders: the lattice tiles the image, so its mean stays."""
    r = int(3 * sigma) + 1
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), g.view(1, 1, -1, 1))


@pytest.mark.parametrize("name", TERMS)
def test_each_term_is_zero_on_the_clean_image_and_grows_with_blur(name):
    clean = lattice()
    assert float(term(clean, clean, name)) < 1e-3
    mild, strong = (
        float(term(blurred(clean, 1.0), clean, name)),
        float(term(blurred(clean, 2.0), clean, name)),
    )
    assert 0 < mild < strong


def test_the_contrast_terms_see_a_blur_that_keeps_the_mean():
    """A blurred lattice keeps its mean but loses its contrast: the local-std and gradient
    terms must weigh that loss well above the local-mean term."""
    clean = lattice()
    blur = blurred(clean)
    assert abs(float(blur.mean() - clean.mean())) < 1e-3
    mean_term = float(term(blur, clean, "local_mean"))
    for name in ("local_std", "gradient"):
        assert float(term(blur, clean, name)) > 4 * mean_term, name


def test_the_local_mean_term_sees_an_intensity_bias():
    clean = lattice()
    assert float(term(clean * 1.1, clean, "local_mean")) == pytest.approx(
        0.1 * float(clean.mean()), rel=0.05
    )


def test_terms_add_to_the_pixel_loss_by_weight():
    clean, blur = lattice(), blurred(lattice())
    base = float(restoration_loss(blur, clean, "l2"))
    both = float(restoration_loss(blur, clean, "l2", {"local_std": 0.5, "fourier": 0.0}))
    assert both == pytest.approx(base + 0.5 * float(term(blur, clean, "local_std")), rel=1e-5)


def test_bad_terms_are_refused():
    with pytest.raises(ValueError, match="unknown loss term"):
        TrainConfig(terms={"perceptual": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(terms={"fourier": -1.0})
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(terms={"fourier": float("nan")})


def test_a_run_with_terms_learns_and_records_them(tmp_path):
    torch.manual_seed(0)
    model = UNet(base=8, depth=2, residual=True)
    val = tiny_source().sample(16, np.random.default_rng(99))
    cfg = tiny_config(
        steps=60,
        val_every=20,
        loss="l2",
        terms={"local_std": 0.05, "gradient": 0.05},
        checkpoint=str(tmp_path / "best.safetensors"),
    )
    events = []
    result = train(model, tiny_source(), cfg, val=val, progress=events.append)
    vals = [e.val_loss for e in events if e.kind == "val"]
    assert vals[-1] < vals[0]
    _, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["training"]["terms"] == {"local_std": 0.05, "gradient": 0.05}
    assert result.steps_done == 60


def test_the_decibel_loss_moves_a_quiet_patch_as_much_in_db_as_a_loud_one():
    """A patch with 30 times less error (a low-dose patch in normalised units) gets the
    same relative push as a high-dose one under "l2db", and 30 times less under "l2"."""
    from napari_temseg.engine.losses import pixel_loss

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 32, 32, generator=gen)
    noise = torch.randn(2, 1, 32, 32, generator=gen)
    scale = torch.tensor([0.3, 0.3 / 30**0.5])  # squared errors about 0.09 and 0.003

    def relative_push(kind: str) -> torch.Tensor:
        a = scale.clone().requires_grad_(True)
        pixel_loss(target + a.view(2, 1, 1, 1) * noise, target, kind).backward()
        return a.grad * a.detach()  # d loss / d log(error), per patch

    l2, db = relative_push("l2"), relative_push("l2db")
    assert float(l2[0] / l2[1]) == pytest.approx(30, rel=0.15)
    assert float(db[0] / db[1]) == pytest.approx(1, rel=0.15)
    # the value is about the harmonic mean of the patches' errors: ruled by the quiet one
    pred = target + scale.view(2, 1, 1, 1) * noise
    err = (pred - target).pow(2).flatten(1).mean(1)
    assert float(pixel_loss(pred, target, "l2db")) == pytest.approx(
        float(2 / (1 / err).sum()), rel=0.1
    )


def test_a_run_with_the_decibel_loss_learns_and_validates_on_the_whole_set(tmp_path):
    """Training with "l2db" lowers its validation value, and that value weighs the whole
    validation set at once: the same whatever order its patches come in."""
    from napari_temseg.engine.losses import weighted_error
    from napari_temseg.engine.train import evaluate

    torch.manual_seed(0)
    model = UNet(base=8, depth=2, residual=True)
    val = tiny_source().sample(40, np.random.default_rng(98))
    cfg = tiny_config(steps=60, val_every=20, loss="l2db")
    events = []
    train(model, tiny_source(), cfg, val=val, progress=events.append)
    vals = [e.val_loss for e in events if e.kind == "val"]
    assert vals[-1] < vals[0]

    dev = torch.device("cpu")
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(val[0])).float()
    err = (pred - torch.from_numpy(val[1])).pow(2).flatten(1).mean(1)
    order = np.random.default_rng(1).permutation(len(val[0]))
    whole = float(weighted_error(err))
    assert evaluate(model, val, "l2db", dev)[0] == pytest.approx(whole, rel=1e-4)
    shuffled = (val[0][order], val[1][order])
    assert evaluate(model, shuffled, "l2db", dev)[0] == pytest.approx(whole, rel=1e-4)
