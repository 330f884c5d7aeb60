"""Pix2Pix training: a U-Net generator judged by a conditional PatchGAN, plus an L1 term.

Defaults follow Isola et al. 2017 where they are known to be stable (Adam, lr 2e-4,
betas (0.5, 0.999), lambda_L1 = 100) and add three guards that keep small runs from
collapsing: a short L1-only warm-up so the discriminator first meets plausible images, a
least-squares GAN loss (bounded gradients, no saturation) with one-sided label smoothing
(real = 0.9), and gradient clipping. The generator kept is the best by validation L1 on a
fixed validation set, exactly as :func:`engine.train.iter_train` keeps its best model, so
a GAN that drifts late never costs the user the good weights. It runs on the same
skeleton (``engine/loop.py``) with the same events and result as ``iter_train``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_temseg.engine.data import PatchSource
from napari_temseg.engine.device import select_device
from napari_temseg.engine.events import DenoisePreview, TrainEvent
from napari_temseg.engine.loop import Method, StepResult, TrainingLoop, Validation
from napari_temseg.engine.train import (
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    _save,
    evaluate,
    loop_config,
    result_of,
    resume_settings,
)
from napari_temseg.models import PatchGANDiscriminator


@dataclass
class Pix2PixConfig(TrainConfig):
    """:class:`TrainConfig` (``lr`` is the generator's) plus the GAN's own settings."""

    lr: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0
    l1_warmup: int | None = None  # None: 10 % of the steps, at most 200
    gan_loss: str = "lsgan"  # or "bce"
    real_label: float = 0.9
    disc_base: int = 32
    disc_layers: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gan_loss not in ("lsgan", "bce"):
            raise ValueError(f"gan_loss must be 'lsgan' or 'bce', got {self.gan_loss!r}")


def _lr_factor(step: int, steps: int) -> float:
    """Constant for the first half, then linear decay to 5 % (the Pix2Pix schedule)."""
    half = steps // 2
    return 1.0 if step < half else 1.0 - 0.95 * (step - half) / max(1, steps - half)


def _gan(logits: torch.Tensor, target: float, kind: str) -> torch.Tensor:
    t = torch.full_like(logits, target)
    if kind == "lsgan":
        return F.mse_loss(logits, t)
    return F.binary_cross_entropy_with_logits(logits, t)


def _finite(*ts: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)


@dataclass
class HalfLinear:
    """The Pix2Pix schedule: constant for the first half, then linear decay to 5 %."""

    steps: int

    def lr(self, step: int, elapsed_s: float, peak: float) -> float:
        return peak * _lr_factor(step, self.steps)


class Pix2PixTraining(Method):
    """A generator and its PatchGAN: one adversarial step; validation by L1 of the generator.

    A bad step (non-finite loss, gradients or weights) restores both networks from the
    last good copy (taken every 10 good steps).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        source: PatchSource,
        cfg: Pix2PixConfig,
        val: tuple[np.ndarray, np.ndarray],
        dev: torch.device,
        first_step: int,
    ) -> None:
        self.model, self.D, self.source, self.cfg, self.val, self.dev = G, D, source, cfg, val, dev
        self.first_step = first_step
        self.peak_lr = cfg.lr
        betas = (cfg.beta1, 0.999)
        self.opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas)
        self.warm = cfg.l1_warmup if cfg.l1_warmup is not None else min(200, cfg.steps // 10)
        self.rng = np.random.default_rng([cfg.seed, 0])
        self.initial = copy.deepcopy(G.state_dict())
        self.last_good = (copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict()))

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g, self.opt_d]

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.model, "discriminator": self.D}

    def train_step(self, step: int) -> StepResult:
        cfg, G, D, dev = self.cfg, self.model, self.D, self.dev
        x_np, y_np = self.source.sample(cfg.batch_size, self.rng)
        x, y = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
        G.train()
        D.train()
        fake = G(x)
        l1 = F.l1_loss(fake, y)
        adversarial = step >= self.warm
        d_loss = torch.zeros((), device=dev)
        ok = True
        if adversarial:
            d_loss = 0.5 * (
                _gan(D(x, y), cfg.real_label, cfg.gan_loss)
                + _gan(D(x, fake.detach()), 0.0, cfg.gan_loss)
            )
            ok = _finite(d_loss)
            if ok:
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                ok = _finite(nn.utils.clip_grad_norm_(D.parameters(), cfg.grad_clip))
                if ok:
                    self.opt_d.step()
            g_adv = _gan(D(x, fake), 1.0, cfg.gan_loss) if ok else torch.zeros((), device=dev)
        else:
            g_adv = torch.zeros((), device=dev)
        g_loss = g_adv + cfg.lambda_l1 * l1
        if ok and _finite(g_loss):
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            ok = _finite(nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip * cfg.lambda_l1))
            if ok:
                self.opt_g.step()
                ok = all(_finite(p) for p in (*G.parameters(), *D.parameters()))
        else:
            ok = False
        if not ok:
            G.load_state_dict(self.last_good[0])
            D.load_state_dict(self.last_good[1])
            return StepResult(False)
        extras = {"g_loss": float(g_loss.detach())}
        if adversarial:
            extras["d_loss"] = float(d_loss.detach())
        if (step + 1) % 10 == 0:
            self.last_good = (copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict()))
        return StepResult(True, float(l1.detach()), extras)

    def validate(self) -> Validation:
        vloss, vpsnr = evaluate(self.model, self.val, "l1", self.dev)
        return Validation(vloss, -vloss, psnr=vpsnr)

    def on_improved(self, step: int, v: Validation) -> None:
        if self.cfg.checkpoint:
            _save(self.cfg, self.model, self.source, step - self.first_step, v.loss, v.psnr)

    def on_diverged(self) -> None:
        self.model.load_state_dict(self.initial)

    def diverged(self, bad: int, step: int) -> Exception:
        return TrainingDiverged(
            f"{bad} non-finite GAN steps in a row at step {step}; kept the best "
            "generator so far (try a lower learning rate)"
        )

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "last_good": list(self.last_good)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.last_good = tuple(state["last_good"])  # type: ignore[assignment]

    def settings(self) -> dict[str, Any]:
        return resume_settings(self.cfg, self.source)


def iter_pix2pix(
    generator: nn.Module,
    source: PatchSource,
    config: Pix2PixConfig,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    cancel: threading.Event | None = None,
    discriminator: nn.Module | None = None,
    *,
    first_step: int = 0,
    preview: Callable[[nn.Module], DenoisePreview] | None = None,
    preview_every_s: float | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``generator`` adversarially on ``source``; yields step and validation events
    (``loss`` is the L1 term; ``g_loss`` and ``d_loss`` the GAN's). Arguments as
    :func:`engine.train.iter_train`'s."""
    cfg = config
    dev = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    G = generator.to(dev)
    D = (discriminator or PatchGANDiscriminator(base=cfg.disc_base, layers=cfg.disc_layers)).to(dev)
    if val is None:
        val = source.sample(cfg.val_size, np.random.default_rng([cfg.seed, 1]))
    method = Pix2PixTraining(G, D, source, cfg, val, dev, first_step)
    if preview is not None:
        method.preview = lambda ev: preview(G)  # type: ignore[method-assign]
    loop = TrainingLoop(
        method,
        loop_config(cfg, preview_every_s),
        HalfLinear(cfg.steps),
        first_step=first_step,
        cancel=cancel,
    )
    out = yield from loop.run()
    return result_of(out, G, cfg.batch_size)
