"""How wide and how strong the shrinking of disagreed detail should be (engine.tta).

    python benchmarks/bench_tta_shrink.py --kind hrtem
    python benchmarks/bench_tta_shrink.py --kind stem --sigmas 2 4 6 --weights 0.5 1 2
    python benchmarks/bench_tta_shrink.py --kind hrtem --bands --sigmas 8 16 32 \
        --weights 1 2 3 5 10 20 --pair
    python benchmarks/bench_tta_shrink.py --kind hrtem --pairs --scales 1 2 3

On simulated images that no other benchmark uses (seeds 31000 and up: ``--n`` per dose at
1-5000 e/px, and two low-magnification frames at 2 e/px for each of 0.12, 0.3 and
0.8 nm/px), each frame is denoised by the bundled model in its eight orientations; the
plain mean and :func:`engine.tta.shrink_disagreement` at each width and weight are scored
against the clean image, as the margin in dB over the Gaussian with the best sigma per
image (an oracle). This chose the shipped ``SHRINK_SIGMA`` and ``SHRINK_WEIGHT``.

``--bands``: the shipped fine band stays, and a second, coarser band is tried at each
width and weight (``engine.tta.shrink_bands``); this chose the second entry of
``SHRINK_BANDS``. ``--pair`` adds the real low-dose pair's added error, a->b / b->a
(``bench_denoise_pair.py``; needs ``../shared``), for each setting.

``--pairs``: instead, means of fewer orientations, shrunk in the shipped bands with their
spread counted ``--scales`` times (the plain variance of the passes times each): the tile
with itself turned by 90 degrees, transposed, turned by 180 degrees or mirrored, and the
four rotations; one pass and all eight as shipped beside them. This chose
``engine.tta.ORIENTATIONS[2]`` and ``SPREAD_SCALE[2]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_denoise_quality import DOSES, oracle_gaussian, psnr, test_image

from napari_temseg.engine import denoise
from napari_temseg.engine.tta import SHRINK_BANDS, _blur, shrink_bands, shrink_disagreement
from napari_temseg.models import load_model
from napari_temseg.synth import simulate

LOW_MAG_NM = (0.12, 0.3, 0.8)


def passes(noisy: np.ndarray, model: tuple) -> np.ndarray:
    """The eight orientations' outputs, turned back: (8, H, W)."""
    out = []
    for turns in range(4):
        for mirror in (False, True):
            x = np.rot90(noisy, turns)
            x = x[:, ::-1] if mirror else x
            y = denoise(np.ascontiguousarray(x), model, device="cpu", tile=256)
            out.append(np.rot90(y[:, ::-1] if mirror else y, -turns))
    return np.stack(out).astype(np.float64)


def averaged(stack: torch.Tensor, cfg: tuple[float, float] | None, bands: bool) -> torch.Tensor:
    """The eight passes (8, 1, 1, H, W) averaged: plain (``cfg`` None), shrunk in one band
    of ``cfg`` = (width, weight), or (``bands``) in the shipped fine band and ``cfg``."""
    mean, spread = stack.mean(0), stack.var(0, unbiased=False)
    if cfg is None:
        return mean
    if not bands:
        return shrink_disagreement(mean, spread, *cfg)
    fine = SHRINK_BANDS[0]
    coarse = _blur(stack.reshape(-1, 1, *stack.shape[-2:]), fine[0]).reshape(stack.shape)
    return shrink_bands(mean, [spread, coarse.var(0, unbiased=False)], (fine, cfg))


#: subsets of :func:`passes` (index ``2 * turns + mirrored``) that ``--pairs`` compares
SUBSETS = {
    "turned 90 degrees": [0, 2],
    "transposed": [0, 3],
    "turned 180 degrees": [0, 4],
    "mirrored": [0, 1],
    "four rotations": [0, 2, 4, 6],
}


def subset_shrunk(stack: torch.Tensor, idx: list[int], scale: float) -> torch.Tensor:
    """The passes ``idx`` of ``stack`` (8, 1, 1, H, W) averaged and shrunk in the shipped
    bands, their plain variance counted ``scale`` times (``engine.tta.DihedralMean``)."""
    s = stack[idx]
    coarse = _blur(s.reshape(-1, 1, *s.shape[-2:]), SHRINK_BANDS[0][0]).reshape(s.shape)
    spreads = [scale * s.var(0, unbiased=False), scale * coarse.var(0, unbiased=False)]
    return shrink_bands(s.mean(0), spreads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--n", type=int, default=3, help="images per dose")
    p.add_argument("--sigmas", type=float, nargs="+", default=[1.5, 2, 3, 4])
    p.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bands", action="store_true", help="try a second, coarser band")
    p.add_argument("--pair", action="store_true", help="also the real low-dose pair")
    p.add_argument("--pairs", action="store_true", help="fewer orientations (see above)")
    p.add_argument("--scales", type=float, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(f"{args.kind}-denoise", "cpu")
    cases = [
        (f"{d:g} e/px", lambda d=d, i=i: test_image(args.kind, d, 31000 + 97 * i + int(d), False))
        for d in DOSES
        for i in range(args.n)
    ]
    cases += [
        (
            f"{px} nm, 2 e/px",
            lambda px=px, i=i: (lambda s: (s.noisy, s.clean))(
                simulate(args.kind, 256, dose=2, pixel_size_nm=px, seed=31500 + i)
            ),
        )
        for px in LOW_MAG_NM
        for i in range(2)
    ]
    fine = "fine band only, " if args.bands else ""
    if args.pairs:
        return fewer(args, model, cases)
    configs = (
        [("mean", None)]
        + [(f"{fine}shipped", SHRINK_BANDS[0])] * args.bands
        + [(f"sigma {s:g}, weight {w:g}", (s, w)) for s in args.sigmas for w in args.weights]
    )
    margins: dict[str, dict[str, list[float]]] = {}
    for tag, make in cases:
        noisy, clean = make()
        best = psnr(clean, oracle_gaussian(noisy, clean))
        stack = torch.from_numpy(passes(noisy, model))[:, None, None]
        for name, cfg in configs:
            out = averaged(stack, cfg, args.bands and name.startswith("sigma"))
            margins.setdefault(name, {}).setdefault(tag, []).append(
                psnr(clean, out[0, 0].numpy()) - best
            )
    pair: dict[str, str] = {}
    if args.pair:
        from bench_denoise_pair import load_pair

        a, b, floor = load_pair()
        sa, sb = (
            torch.from_numpy(passes(f.astype(np.float32), model))[:, None, None] for f in (a, b)
        )
        for name, cfg in configs:
            bands = args.bands and name.startswith("sigma")
            ab = float(np.mean((averaged(sa, cfg, bands)[0, 0].numpy() - b) ** 2)) - floor
            ba = float(np.mean((averaged(sb, cfg, bands)[0, 0].numpy() - a) ** 2)) - floor
            pair[name] = f" {ab:.0f} / {ba:.0f} |"
    tags = list(margins["mean"])
    print(f"{args.kind}-denoise, margin over the oracle Gaussian (dB), eight orientations\n")
    head = " | ".join(tags) + " | mean over doses | mean low-mag |"
    print(f"| averaging | {head}" + " real pair |" * args.pair)
    print("|---" * (len(tags) + 3 + args.pair) + "|")
    for name, _ in configs:
        vals = [float(np.mean(margins[name][t])) for t in tags]
        n_dose = len(DOSES)
        print(
            f"| {name} | "
            + " | ".join(f"{v:+.2f}" for v in vals)
            + f" | {np.mean(vals[:n_dose]):+.2f} | {np.mean(vals[n_dose:]):+.2f} |"
            + pair.get(name, "")
        )
    return 0


def fewer(args: argparse.Namespace, model: tuple, cases: list) -> int:
    """``--pairs``: one pass, fewer orientations at each scale, and all eight as shipped."""
    configs = [("one pass", None, 0.0)]
    configs += [(f"{k}, x{sc:g}", idx, sc) for k, idx in SUBSETS.items() for sc in args.scales]
    configs += [("all eight (shipped)", list(range(8)), 1.0)]
    margins: dict[str, dict[str, list[float]]] = {}
    for tag, make in cases:
        noisy, clean = make()
        best = psnr(clean, oracle_gaussian(noisy, clean))
        stack = torch.from_numpy(passes(noisy, model))[:, None, None]
        for name, idx, sc in configs:
            out = stack[0] if idx is None else subset_shrunk(stack, idx, sc)
            margins.setdefault(name, {}).setdefault(tag, []).append(
                psnr(clean, out[0, 0].numpy()) - best
            )
    tags = list(margins["one pass"])
    n_dose = len(DOSES)
    print(f"{args.kind}-denoise, margin over the oracle Gaussian (dB)\n")
    print(
        "| orientations (spread counted) | " + " | ".join(tags) + " | mean over doses | "
        "mean low-mag |"
    )
    print("|---" * (len(tags) + 3) + "|")
    for name, _, _ in configs:
        vals = [float(np.mean(margins[name][t])) for t in tags]
        print(
            f"| {name} | "
            + " | ".join(f"{v:+.2f}" for v in vals)
            + f" | {np.mean(vals[:n_dose]):+.2f} | {np.mean(vals[n_dose:]):+.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
