"""Adapting a denoiser to the frames at hand (``engine.adapt``): before and after, side by side.

    python benchmarks/bench_adapt.py --set pair --seconds 60 --threads 1
    python benchmarks/bench_adapt.py --set standard --kind hrtem --doses 1 10 --n 2 --seconds 60
    python benchmarks/bench_adapt.py --set figure --figure docs/images/adapt_real.png
    # the share of each batch cut from the frames themselves (AdaptConfig.own_share)
    python benchmarks/bench_adapt.py --set pair --models hrtem-denoise --own-share 0 0.25 --tta

``pair``: ``../shared/realdata/lowdose_pair``, scored as ``bench_denoise_pair.py`` does (the
error against the other, independent frame above the noise floor; lower is better): each
frame is adapted to on its own and denoised, for both bundled models, against the oracle
Gaussian (best sigma on this very score) and BM3D.

``standard``: images of ``bench_denoise_quality.py``'s standard set (same seeds), each
adapted to on its own (calibrated with its true pixel size, as a real file is), PSNR and
SSIM against the clean image, beside the oracle Gaussian and BM3D.

``figure``: real frames before and after adapting, to look at (artefacts?): frame a of the
pair (``hrtem-denoise``), a real acstem HAADF frame and the tk_r_em HRSTEM test file
(``stem-denoise``), each denoised without and with adaptation.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_denoise_pair import PAIR, SIGMAS, bm3d_denoise, excess, load_pair
from bench_denoise_quality import add_orientations, baselines, image_seed, psnr, ssim
from scipy import ndimage

from napari_temseg.engine import denoise
from napari_temseg.engine.adapt import AdaptConfig, run_adapt
from napari_temseg.models import load_model
from napari_temseg.synth import simulate


def pair(args) -> None:
    a, b, floor = load_pair()
    rows = {}
    gauss = {s: excess(lambda x, s=s: ndimage.gaussian_filter(x, s), a, b, floor) for s in SIGMAS}
    best = min(gauss, key=lambda s: sum(gauss[s]))
    rows[f"Gaussian sigma {best} (oracle)"] = gauss[best]
    if not args.no_bm3d:
        rows["BM3D"] = excess(bm3d_denoise, a, b, floor)
    for name in args.models:
        for k in args.bins:
            model = load_model(name, "cpu")
            tag = f"{name}" + (f", binned {k}x{k}" if k > 1 else "")
            rows[tag] = excess(
                lambda x, m=model, k=k: denoise(x.astype(np.float32), m, device="cpu", bin=k),
                a,
                b,
                floor,
            )
            for n in args.orientations:
                rows[f"{tag}, {n} orientations"] = excess(
                    lambda x, m=model, k=k, n=n: denoise(
                        x.astype(np.float32), m, device="cpu", bin=k, tta=n
                    ),
                    a,
                    b,
                    floor,
                )
            for share in args.own_share:
                scores, notes = [], []
                averaged: dict[int, list[float]] = {n: [] for n in args.orientations}
                for x, other in ((a, b), (b, a)):
                    cfg = AdaptConfig(
                        seconds=args.seconds,
                        bin=k,
                        device="cpu",
                        lr=args.lr,
                        own_share=share,
                        seed=args.adapt_seed,
                        orientations=args.fit_orientations,
                    )
                    r = run_adapt([x.astype(np.float32)], model, cfg)
                    d = denoise(x.astype(np.float32), r.spec, device="cpu", bin=k)
                    scores.append(float(np.mean((d - other) ** 2)) - floor)
                    for n in args.orientations:
                        d = denoise(x.astype(np.float32), r.spec, device="cpu", bin=k, tta=n)
                        averaged[n].append(float(np.mean((d - other) ** 2)) - floor)
                    checked = r.meta["adapted"]["postfilter_checked"]
                    notes.append(f"{r.message} (checked: {checked})")
                head = f"{tag}, adapted {args.seconds:.0f} s" + (
                    f", own share {share:g}" if share else ""
                )
                rows[head] = tuple(scores)
                for n, v in averaged.items():
                    rows[f"{head}, {n} orientations"] = tuple(v)
                print(f"  {head}: " + " | ".join(notes), flush=True)
    print("\n| method | excess a->b | excess b->a |\n| --- | --- | --- |")
    for k, (ab, ba) in rows.items():
        print(f"| {k} | {ab:.0f} | {ba:.0f} |")


def standard(args) -> None:
    name = f"{args.kind}-denoise"
    model = load_model(name, "cpu")
    heads = [f"adapted, own share {v:g}" if v else "adapted" for v in args.own_share]
    print(f"\n{name}, standard set, adapted {args.seconds:.0f} s per image (PSNR dB / SSIM)")
    print(
        "| dose e/px | Gaussian (oracle) | BM3D | model | "
        + " | ".join(heads)
        + " | validation before -> after |"
    )
    print("| --- " * (5 + len(heads)) + "|")
    for dose in args.doses:
        di = list(DOSES_ALL).index(dose) if dose in DOSES_ALL else 100 + int(dose)
        cols: dict[str, list] = {}
        vals = []
        for i in range(args.n):
            seed = image_seed(args.seed, False, di, i)
            s = simulate(args.kind, 256, dose=dose, seed=seed)
            noisy, clean = s.noisy, s.clean
            ests = baselines(noisy, clean, not args.no_bm3d)
            ests["model"] = denoise(noisy, model, device="cpu")
            for head, share in zip(heads, args.own_share, strict=True):
                cfg = AdaptConfig(
                    seconds=args.seconds,
                    device="cpu",
                    lr=args.lr,
                    own_share=share,
                    seed=args.adapt_seed,
                )
                r = run_adapt([noisy], model, cfg, pixel_size_nm=float(s.params["pixel_size_nm"]))
                ests[head] = denoise(noisy, r.spec, device="cpu")
                vals.append(f"{r.val_psnr_before:.1f} -> {r.val_psnr_after:.1f}")
            for k, e in ests.items():
                cols.setdefault(k, []).append((psnr(clean, e), ssim(clean, e)))

        def cell(k: str, cols: dict = cols) -> str:
            if k not in cols:
                return "-"
            p, q = np.mean(cols[k], axis=0)
            return f"{p:.2f} / {q:.3f}"

        print(
            f"| {dose:g} | {cell('gaussian (oracle sigma)')} | {cell('BM3D')} | "
            f"{cell('model')} | " + " | ".join(cell(h) for h in heads) + f" | {', '.join(vals)} |",
            flush=True,
        )


DOSES_ALL = (1.0, 10.0, 100.0, 1000.0, 5000.0)  # bench_denoise_quality.DOSES: same seeds


def figure(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile

    from napari_temseg.display import display_limits
    from napari_temseg.io import read_images

    shared = PAIR.parents[1]
    frames = []
    if PAIR.is_dir():
        frames.append(("low-dose pair, frame a", load_pair()[0], "hrtem-denoise", None))
    acstem = sorted((shared / "realdata" / "acstem" / "images").glob("*.tif"))
    if acstem:
        frames.append(
            ("acstem HAADF (test frame)", tifffile.imread(acstem[-1]), "stem-denoise", 0.0293)
        )
    ser = shared / "testdata" / "tkrem_hrstem_example.ser"
    if ser.is_file():
        im = read_images(ser)[0]
        frames.append(("tk_r_em HRSTEM", np.asarray(im.data), "stem-denoise", im.pixel_size_nm))
    fig, axes = plt.subplots(len(frames), 3, figsize=(12, 4 * len(frames)), squeeze=False)
    for row, (title, x, name, pixel) in zip(axes, frames, strict=True):
        x = np.asarray(x, np.float32)
        model = load_model(name, "cpu")
        r = run_adapt([x], model, AdaptConfig(seconds=args.seconds, device="cpu"), pixel)
        outs = [x, denoise(x, model, device="cpu"), denoise(x, r.spec, device="cpu")]
        heads = ["raw", name, f"adapted {args.seconds:.0f} s"]
        crop = tuple(slice(0, min(256, n)) for n in x.shape)
        lo, hi = display_limits(outs[1][crop])
        for ax, im, head in zip(row, outs, heads, strict=True):
            ax.imshow(im[crop], cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{title}: {head}", fontsize=9)
            ax.axis("off")
        print(f"  {title}: {r.message}", flush=True)
    fig.tight_layout()
    fig.savefig(args.figure, dpi=80)
    print(f"wrote {args.figure}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=("pair", "standard", "figure"), default="pair")
    p.add_argument("--figure", default="docs/images/adapt_real.png")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--lr", type=float, default=AdaptConfig.lr)
    p.add_argument("--models", nargs="+", default=["hrtem-denoise", "stem-denoise"])
    p.add_argument("--bins", type=int, nargs="+", default=[1])
    p.add_argument(
        "--own-share",
        type=float,
        nargs="+",
        default=[AdaptConfig.own_share],
        help="AdaptConfig.own_share, each in turn (the frames' own patches, taught by "
        "the starting model's average)",
    )
    p.add_argument("--kind", choices=("stem", "hrtem"), default="hrtem")
    p.add_argument("--doses", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--seed", type=int, default=2024, help="as bench_denoise_quality.py")
    p.add_argument("--adapt-seed", type=int, default=AdaptConfig.seed, help="AdaptConfig.seed")
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    add_orientations(p, "pair: each model")
    p.add_argument(
        "--fit-orientations",
        type=int,
        choices=(1, 2, 8),
        default=1,
        help="pair: the adapted model's final smoothing is fitted on its output averaged "
        "over this many orientations (AdaptConfig.orientations; the dock and temseg use "
        "the output's own)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.set == "figure":
        figure(args)
    elif args.set == "pair":
        if not PAIR.is_dir():
            print(f"no real pair at {PAIR}: nothing to measure")
            return 0
        pair(args)
    else:
        standard(args)
    print(f"\n({time.perf_counter() - t0:.0f} s, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
