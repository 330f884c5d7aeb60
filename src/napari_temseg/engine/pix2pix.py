"""Pix2Pix training: a U-Net generator judged by a conditional PatchGAN, plus an L1 term.

Defaults follow Isola et al. 2017 where they are known to be stable (Adam, lr 2e-4,
betas (0.5, 0.999), lambda_L1 = 100) and add three guards that keep small runs from
collapsing: a short L1-only warm-up so the discriminator first meets plausible images, a
least-squares GAN loss (bounded gradients, no saturation) with one-sided label smoothing
(real = 0.9), and gradient clipping. The generator kept is the best by validation L1 on a
fixed validation set, exactly as :func:`engine.train.iter_train` keeps its best model, so
a GAN that drifts late never costs the user the good weights. Events and the result are
the same types as ``iter_train``'s (events carry ``g_loss``, ``d_loss`` and ``l1`` too).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_temseg.engine.data import PatchSource
from napari_temseg.engine.device import select_device
from napari_temseg.engine.train import (
    TrainConfig,
    TrainEvent,
    TrainingDiverged,
    TrainResult,
    _save,
    evaluate,
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


@dataclass
class Pix2PixEvent(TrainEvent):
    g_loss: float | None = None
    d_loss: float | None = None
    l1: float | None = None


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


def iter_pix2pix(
    generator: nn.Module,
    source: PatchSource,
    config: Pix2PixConfig,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    cancel: threading.Event | None = None,
    discriminator: nn.Module | None = None,
) -> Generator[Pix2PixEvent, None, TrainResult]:
    """Train ``generator`` adversarially on ``source``; yields step and validation events."""
    cfg = config
    dev = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    G = generator.to(dev)
    D = (discriminator or PatchGANDiscriminator(base=cfg.disc_base, layers=cfg.disc_layers)).to(dev)
    if val is None:
        val = source.sample(cfg.val_size, np.random.default_rng([cfg.seed, 1]))
    betas = (cfg.beta1, 0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas)
    warm = cfg.l1_warmup if cfg.l1_warmup is not None else min(200, cfg.steps // 10)
    rng = np.random.default_rng([cfg.seed, 0])
    best_state = copy.deepcopy(G.state_dict())
    last_good = (copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict()))
    best_loss, best_psnr, best_step = math.inf, -math.inf, 0
    history: list[TrainEvent] = []
    skipped = bad = step = 0
    ema: dict[str, float] = {}
    t0 = time.perf_counter()
    stopped = False

    def smooth(name: str, value: float) -> float:
        ema[name] = value if name not in ema else 0.95 * ema[name] + 0.05 * value
        return ema[name]

    def event(kind: str, **kw: Any) -> Pix2PixEvent:
        elapsed = time.perf_counter() - t0
        return Pix2PixEvent(
            kind=kind,
            step=step,
            steps=cfg.steps,
            loss=ema.get("l1", math.nan),
            lr=cfg.lr * _lr_factor(max(step - 1, 0), cfg.steps),
            examples_per_s=step * cfg.batch_size / elapsed if elapsed > 0 else 0.0,
            elapsed_s=elapsed,
            best_val_loss=best_loss,
            best_step=best_step,
            skipped_steps=skipped,
            g_loss=ema.get("g"),
            d_loss=ema.get("d"),
            l1=ema.get("l1"),
            **kw,
        )

    def validate() -> Pix2PixEvent:
        nonlocal best_loss, best_psnr, best_step, best_state
        vloss, vpsnr = evaluate(G, val, "l1", dev)
        if vloss < best_loss:
            best_loss, best_psnr, best_step = vloss, vpsnr, step
            best_state = copy.deepcopy(G.state_dict())
            if cfg.checkpoint:
                _save(cfg, G, source, best_step, vloss, vpsnr)
        ev = event("val", val_loss=vloss, val_psnr=vpsnr)
        history.append(ev)
        return ev

    while step < cfg.steps:
        if cancel is not None and cancel.is_set():
            stopped = True
            break
        x_np, y_np = source.sample(cfg.batch_size, rng)
        x, y = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
        f = _lr_factor(step, cfg.steps)
        for g in opt_g.param_groups:
            g["lr"] = cfg.lr * f
        for g in opt_d.param_groups:
            g["lr"] = cfg.lr_d * f
        G.train()
        D.train()
        fake = G(x)
        l1 = F.l1_loss(fake, y)
        adversarial = step >= warm
        d_loss = torch.zeros((), device=dev)
        ok = True
        if adversarial:
            d_loss = 0.5 * (
                _gan(D(x, y), cfg.real_label, cfg.gan_loss)
                + _gan(D(x, fake.detach()), 0.0, cfg.gan_loss)
            )
            ok = _finite(d_loss)
            if ok:
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                ok = _finite(nn.utils.clip_grad_norm_(D.parameters(), cfg.grad_clip))
                if ok:
                    opt_d.step()
            g_adv = _gan(D(x, fake), 1.0, cfg.gan_loss) if ok else torch.zeros((), device=dev)
        else:
            g_adv = torch.zeros((), device=dev)
        g_loss = g_adv + cfg.lambda_l1 * l1
        if ok and _finite(g_loss):
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            ok = _finite(nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip * cfg.lambda_l1))
            if ok:
                opt_g.step()
                ok = all(_finite(p) for p in (*G.parameters(), *D.parameters()))
        else:
            ok = False
        step += 1
        if ok:
            bad = 0
            smooth("l1", float(l1.detach()))
            smooth("g", float(g_loss.detach()))
            if adversarial:
                smooth("d", float(d_loss.detach()))
            if step % 10 == 0:
                last_good = (copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict()))
        else:
            skipped += 1
            bad += 1
            G.load_state_dict(last_good[0])
            D.load_state_dict(last_good[1])
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            if bad > cfg.max_bad_steps:
                G.load_state_dict(best_state)
                raise TrainingDiverged(
                    f"{bad} non-finite GAN steps in a row at step {step}; kept the best "
                    "generator so far (try a lower learning rate)"
                )
        yield event("step")
        if step % cfg.val_every == 0 or step == cfg.steps:
            yield validate()
    if stopped and step > 0 and (not history or history[-1].step != step):
        yield validate()
    if history:
        G.load_state_dict(best_state)
    elapsed = time.perf_counter() - t0
    return TrainResult(
        model=G,
        steps_done=step,
        best_step=best_step,
        best_val_loss=best_loss,
        best_val_psnr=best_psnr,
        elapsed_s=elapsed,
        examples_per_s=step * cfg.batch_size / elapsed if elapsed > 0 else 0.0,
        skipped_steps=skipped,
        stopped=stopped,
        history=history,
    )
