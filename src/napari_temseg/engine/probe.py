"""Fit a new segmentation head to the strokes before training: a linear probe.

A new K-class head starts at zero, so every pixel is 1/K of each class. With Adam's small
steps its logits then grow slowly, and the backbone's features decide nothing for a while.
On the 1024² STEM speed image the zero head predicted "everything particle" for 30-40
steps (15 s on 2 threads), and the first preview was useless (docs/benchmarks.md).

A pretrained denoiser's last features already separate the painted classes: a linear
classifier on them reached 100 % on the stroke pixels there. So before the first gradient
step the head is fitted by class-weighted multinomial logistic regression (L-BFGS, light
L2) on the features of a few stroke-centred patches. That is a 1x1 convolution, exactly the
head's shape, fitted in well under a second, and the first preview is a usable mask.
Training then refines the head and the backbone together.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: stroke pixels used for the fit at most (a random subset beyond this)
MAX_PIXELS = 20_000


@torch.no_grad()
def stroke_features(
    model: nn.Module,
    batches: list[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, C) and classes 0..K-1 (N,) of the painted pixels of ``batches``."""
    model.eval()
    feats, classes = [], []
    for x_np, y_np in batches:
        f = model.features(torch.from_numpy(x_np).to(device)).float()
        y = torch.from_numpy(y_np).to(device)
        painted = y > 0
        feats.append(f.permute(0, 2, 3, 1)[painted])
        classes.append(y[painted] - 1)
    f, y = torch.cat(feats), torch.cat(classes)
    if len(y) > MAX_PIXELS:
        keep = torch.from_numpy(rng.choice(len(y), MAX_PIXELS, replace=False)).to(device)
        f, y = f[keep], y[keep]
    return f, y


def fit_head(
    model: nn.Module,
    batches: list[tuple[np.ndarray, np.ndarray]],
    class_weights: torch.Tensor,
    rng: np.random.Generator,
    l2: float = 1e-3,
    iters: int = 100,
) -> float | None:
    """Set ``model.head`` by logistic regression on the strokes of ``batches``.

    ``batches``: ``(images (n, 1, P, P), targets (n, P, P))`` as ``StrokeSource.sample``
    gives them (0 = unpainted). Returns the fit's accuracy on those pixels, or None when
    nothing was fitted (fewer than two classes painted, or a non-finite result); the head
    is then left as it was.
    """
    device = model.head.weight.device
    f, y = stroke_features(model, batches, device, rng)
    k = model.head.out_channels
    if len(y) == 0 or len(torch.unique(y)) < 2:
        return None
    # standardised features: one L2 strength suits features of any scale
    mu, sd = f.mean(0), f.std(0) + 1e-6
    z = (f - mu) / sd
    w = torch.zeros(k, z.shape[1], device=device, requires_grad=True)
    b = torch.zeros(k, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y, weight=class_weights.to(device))
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        weight, bias = w / sd, b - (w * mu / sd).sum(1)
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            return None
        model.head.weight.copy_(weight[:, :, None, None].to(model.head.weight.dtype))
        model.head.bias.copy_(bias.to(model.head.bias.dtype))
        return float(((z @ w.T + b).argmax(1) == y).float().mean())
