"""Train the denoisers bundled with napari-temseg, on the project's own simulator.

    python scripts/train_bundled_denoisers.py --kind stem --steps 3000 --seed 0
    python scripts/train_bundled_denoisers.py --kind hrtem --steps 3000 --seed 0
    # a second stage, continuing from the first one's weights with another loss:
    python scripts/train_bundled_denoisers.py --kind stem --init stem-denoise --loss l2 ...
    # on a GPU: 14 simulator processes feed it, and the run stops after 6 minutes
    python scripts/train_bundled_denoisers.py --kind stem --device cuda --workers 14 \
        --batch 64 --steps 100000 --minutes 6 --curve /tmp/stem-curve.json
    # a long run in pieces: write the training state every 500 steps, continue it later
    python scripts/train_bundled_denoisers.py --kind stem --steps 20000 --checkpoint-every 500
    python scripts/train_bundled_denoisers.py --kind stem --steps 20000 --checkpoint-every 500 \
        --resume

Writes ``src/napari_temseg/models/weights/<kind>-denoise.safetensors`` (the best model by
validation loss on a fixed simulated validation set), with the command, seed, data, steps
and training time in its header. Progress goes to stdout (one line per validation).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_temseg.engine import (
    TrainConfig,
    describe_device,
    select_device,
    simulated_source,
    train,
)
from napari_temseg.engine.data import TARGETS, ParallelSource
from napari_temseg.engine.device import bf16_is_native
from napari_temseg.engine.loop import ResumeRefused
from napari_temseg.engine.losses import TERMS, check_terms
from napari_temseg.engine.tta import with_tta
from napari_temseg.models import UNet, count_parameters, load_model, save_checkpoint
from napari_temseg.models.bundled import WEIGHTS_DIR
from napari_temseg.synth import DistortionConfig

DESCRIPTIONS = {
    "stem": "HAADF-STEM denoiser (U-Net, simulated nanoparticles, 0.5-5000 e/px, full distortion set)",
    "hrtem": "HRTEM denoiser (U-Net, simulated nanoparticles, 0.5-5000 e/px, full distortion set)",
}


class DistilledSource:
    """Patches whose targets lean toward a teacher: ``(1 - alpha) * clean + alpha *`` the
    teacher's output averaged over eight orientations (``engine.tta.with_tta``).

    Why: averaged, with the detail the orientations disagree on shrunk, the shipped HRTEM
    model is far closer to the truth at low dose than its own single pass (the real
    low-dose pair: 158 / 305 against 300 / 425), but costs eight passes. A clean target
    holds what the frame cannot show as well as what it can; the teacher's average is
    closer to what the frame can show, so the one pass learns that from it.
    """

    def __init__(self, source, teacher: tuple, alpha: float) -> None:
        self.source, self.alpha = source, alpha
        self.teacher = with_tta(teacher, probabilities=False)[0].eval()
        self.device = next(self.teacher.parameters()).device
        self.bf16 = bf16_is_native(self.device)  # where training uses it too

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = self.source.sample(n, rng)
        dev = self.device
        with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=self.bf16):
            t = self.teacher(torch.from_numpy(xs).to(dev)).float().cpu().numpy()
        return xs, ((1 - self.alpha) * ys + self.alpha * t).astype(np.float32)

    def describe(self) -> dict:
        return {**self.source.describe(), "distill": self.alpha}

    def __getattr__(self, name: str):  # normalization, close: the source's
        if name.startswith("__") or name == "source":  # copy/pickle before __init__
            raise AttributeError(name)
        return getattr(self.source, name)


def parse_term(text: str) -> tuple[str, float]:
    """``"local_std=0.05"`` -> ``("local_std", 0.05)``."""
    name, sep, weight = text.partition("=")
    try:
        return name.strip(), float(weight) if sep else float("nan")
    except ValueError:
        return name.strip(), float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loss", default="l1")
    p.add_argument(
        "--term",
        action="append",
        default=[],
        metavar="NAME=WEIGHT",
        help=f"add a loss term (repeatable): {', '.join(TERMS)}; e.g. --term local_std=0.05",
    )
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--norm", default="none", choices=("none", "channel", "group"))
    p.add_argument("--residual", type=int, default=1, help="1: predict a correction to the input")
    p.add_argument("--clean-fraction", type=float, default=0.1)
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="recorded",
        help="recorded: the clean scene in the scan's recorded geometry (keeps columns sharp); "
        "scene: the undistorted scene (the network must guess row jitter, so it blurs)",
    )
    p.add_argument("--patches-per-image", type=int, default=4)
    p.add_argument(
        "--workers", type=int, default=0, help="simulator processes (0: simulate in-process)"
    )
    p.add_argument("--minutes", type=float, default=None, help="time budget; stops then")
    p.add_argument("--val-size", type=int, default=64)
    p.add_argument("--curve", type=Path, help="write the validation curve here (JSON)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init",
        default=None,
        help="continue from this model's weights (bundled name or checkpoint); its own "
        "training record is kept in the new header under 'previous_training'",
    )
    p.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--work", type=Path, default=Path("/tmp/temseg-train"))
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="write the resumable training state to WORK/<kind>-denoise.state.pt every N steps",
    )
    p.add_argument(
        "--counting-fraction",
        type=float,
        default=0.0,
        help="share of images from an ideal counting detector (shot noise only)",
    )
    p.add_argument(
        "--average-late",
        type=float,
        default=0.0,
        help="keep the mean of the weights validated in this last share of the run "
        "(0: the best validated)",
    )
    p.add_argument(
        "--detector-decay",
        type=float,
        default=0.0,
        help="share of STEM images whose detector signal decays along the fast scan "
        "(synth.DetectorDecay; off in the full set)",
    )
    p.add_argument(
        "--pixel-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="pixel sizes drawn log-uniformly, nm (default: the simulator's range for the "
        "kind); recorded in the header, where adaptation and the docks read it",
    )
    p.add_argument(
        "--low-dose",
        type=float,
        nargs=2,
        metavar=("SHARE", "MAX"),
        default=None,
        help="that share of the images draws its dose from the bottom of the range up to MAX "
        "e/px (engine.data.simulated_source's low_dose)",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="with --init: each target is (1 - ALPHA) * clean + ALPHA * the --init model's "
        "own output averaged over eight orientations (engine.tta, disagreed detail shrunk), "
        "so that one pass learns what the average knows; validation stays on clean targets",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose state --checkpoint-every wrote (steps count on; exact "
        "without --workers, whose simulator processes keep their own random state)",
    )
    args = p.parse_args(argv)
    try:
        terms = check_terms(dict(parse_term(t) for t in args.term))
    except ValueError as exc:
        p.error(str(exc))
    if args.pixel_range and not 0 < args.pixel_range[0] <= args.pixel_range[1] <= 100:
        p.error(f"--pixel-range must be 0 < LO <= HI <= 100 nm, got {args.pixel_range}")
    if args.low_dose and not (0 <= args.low_dose[0] <= 1 and args.low_dose[1] > 0):
        p.error(f"--low-dose must be a share in [0, 1] and a dose above 0, got {args.low_dose}")
    if not 0 <= args.distill <= 1 or (args.distill and not args.init):
        p.error(f"--distill must be in [0, 1] and needs --init, got {args.distill}")
    if not 0 <= args.detector_decay <= 1:
        p.error(f"--detector-decay must be in [0, 1], got {args.detector_decay}")
    torch.set_num_threads(args.threads)
    name = f"{args.kind}-denoise"
    distortions = None
    if args.detector_decay:
        distortions = DistortionConfig.full()
        distortions.detector_decay.enabled = True
        distortions.detector_decay.probability = args.detector_decay
    state = args.work / f"{name}.state.pt"
    source = simulated_source(
        args.kind,
        size=args.image_size,
        patch=args.patch,
        clean_fraction=args.clean_fraction,
        patches_per_image=args.patches_per_image,
        target=args.target,
        counting_fraction=args.counting_fraction,
        distortions=distortions,
        pixel_size_range_nm=tuple(args.pixel_range) if args.pixel_range else None,
        low_dose=tuple(args.low_dose) if args.low_dose else None,
    )
    # the validation set comes from the in-process source, so it is the same with or
    # without workers
    val = source.sample(args.val_size, np.random.default_rng([args.seed, 1]))
    torch.manual_seed(args.seed)  # the initial weights are part of the seeded run
    previous = None
    if args.init:
        model, init_meta = load_model(args.init, device="cpu")
        model.train()
        previous = init_meta.get("training")
    else:
        model = UNet(base=args.base, depth=args.depth, norm=args.norm, residual=bool(args.residual))
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        loss=args.loss,
        terms=terms,
        warmup=args.warmup,
        val_every=args.val_every,
        val_size=args.val_size,
        seed=args.seed,
        device=args.device,
        max_seconds=args.minutes * 60 if args.minutes else None,
        average_late=args.average_late,
        checkpoint=str(args.work / f"{name}.best.safetensors"),
        checkpoint_every=args.checkpoint_every,
        state_path=str(state) if args.checkpoint_every else None,
        resume=str(state) if args.resume else None,
    )
    print(f"training {name}: {count_parameters(model)} parameters, {cfg}", flush=True)

    def log(ev) -> None:
        if ev.kind == "val":
            print(
                f"step {ev.step:5d}/{ev.steps}  loss {ev.loss:.4f}  val {ev.val_loss:.4f} "
                f"({ev.val_psnr:.2f} dB)  best@{ev.best_step}  {ev.examples_per_s:.1f} ex/s  "
                f"{ev.elapsed_s / 60:.1f} min  skipped {ev.skipped_steps}",
                flush=True,
            )

    t0 = time.perf_counter()
    feed = ParallelSource(source, args.workers, seed=args.seed) if args.workers else source
    try:
        if args.distill:  # inside the try: a teacher that fails to load closes the pool
            teacher = load_model(args.init, device=str(select_device(cfg.device)))
            feed = DistilledSource(feed, teacher, args.distill)
        result = train(model, feed, cfg, val=val, progress=log)
    except ResumeRefused as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if hasattr(feed, "close"):
            feed.close()
    minutes = (time.perf_counter() - t0) / 60
    curve = [
        {
            "step": e.step,
            "minutes": round(e.elapsed_s / 60, 3),
            "val_loss": e.val_loss,
            "val_psnr_db": e.val_psnr,
            "train_loss": e.loss,
        }
        for e in result.history
    ]
    if args.curve:
        args.curve.parent.mkdir(parents=True, exist_ok=True)
        args.curve.write_text(json.dumps(curve, indent=1))
    desc = source.describe()
    if args.detector_decay:
        desc["distortions"] = f"full, with detector_decay in {args.detector_decay:g} of the images"
        # read back by engine.adapt, which must simulate the noise the model was trained on
        desc["detector_decay_fraction"] = args.detector_decay
    meta = {
        "task": "denoise",
        "name": name,
        "description": DESCRIPTIONS[args.kind],
        "modality": args.kind,
        "normalization": source.normalization.to_dict(),
        "training_data": desc,
        "pixel_size_nm_range": desc["pixel_size_range_nm"],
        "dose_range_e_per_px": desc["dose_range_e_per_px"],
        "training": {
            "command": "python scripts/train_bundled_denoisers.py "
            + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "seed": args.seed,
            "steps": result.steps_done,
            "batch_size": args.batch,
            "patch": args.patch,
            "loss": args.loss,
            **({"terms": terms} if terms else {}),
            "lr": args.lr,
            "best_step": result.best_step,
            **({"averaged_from_step": result.averaged_from} if result.averaged_from else {}),
            "val_loss": result.best_val_loss,
            "val_psnr_db": result.best_val_psnr,
            "minutes": round(minutes, 2),
            "examples_per_s": round(result.examples_per_s, 2),
            "device": str(cfg.device),
            "device_name": describe_device(select_device(cfg.device)),
            "threads": args.threads,
            "workers": args.workers,
            "target": args.target,
            **({"distill": args.distill} if args.distill else {}),
            **({"detector_decay": args.detector_decay} if args.detector_decay else {}),
            "curve": [[c["step"], c["val_loss"], c["val_psnr_db"]] for c in curve],
            "torch": torch.__version__,
            **({"previous_training": previous} if previous else {}),
        },
    }
    path = save_checkpoint(args.out / f"{name}.safetensors", result.model, meta)
    kept = (
        f"the mean of steps {result.averaged_from}-{result.best_step}"
        if result.averaged_from is not None
        else f"best step {result.best_step}"
    )
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {kept}, "
        f"val {result.best_val_loss:.4f} ({result.best_val_psnr:.2f} dB), {minutes:.1f} min",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
