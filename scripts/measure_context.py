"""How much overlap a denoiser's tiles need: tiled against whole-frame inference.

    python scripts/measure_context.py hrtem-denoise            # print the table
    python scripts/measure_context.py hrtem-denoise --write    # and record it in the header

A network that looks far around each pixel answers differently near a tile's inner edge
than inside a whole frame, and the difference shows as a faint grid of seams. The
reference is the whole frame in one tile with the same mirrored border as the tiles (a
reference with another border differs near the frame's edges, which is not a seam). For each
overlap this prints the largest |tiled - whole| (256 px tiles) as a share of the frame's
0.5-99.5 % range, on the real frames in ``../shared/testdata`` (where present) and on
simulated frames of both kinds. The smallest overlap whose largest difference stays
below ``--tolerance`` on every frame is the model's ``context_px``; ``--write`` stores it
in the checkpoint's header (weights untouched), and ``engine.tiling.model_overlap``
raises smaller overlaps to it. ``--orientations 1 2`` also measures the output averaged
over two orientations (the default since 2026-12-07), whose smoothing of the disagreed
detail (a 16 px Gaussian) looks further than one pass; the context must hold for each
count listed. Float32 throughout, so that rounding is not counted as a seam.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from napari_temseg.engine import denoise
from napari_temseg.io import read_images
from napari_temseg.models import load_model, save_checkpoint
from napari_temseg.models.bundled import resolve_model
from napari_temseg.synth import simulate

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
REAL = ("tkrem_hrstem_example.ser", "16_STOimage_1.ser", "velox_camera_ceta_imaging.emd")
OVERLAPS = (32, 48, 64, 96)


def frames() -> dict[str, np.ndarray]:
    """Real frames where present, and one simulated frame of each kind at low dose."""
    out = {}
    for name in REAL:
        if (TESTDATA / name).is_file():
            out[name] = np.asarray(read_images(TESTDATA / name)[0].data, np.float32)
    for kind in ("stem", "hrtem"):
        s = simulate(kind, 512, dose=20.0, seed=7)
        out[f"simulated {kind}, 20 e/px"] = s.noisy.astype(np.float32)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="bundled name or checkpoint path")
    p.add_argument("--tolerance", type=float, default=0.5, help="%% of the frame's range")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="record context_px in the header")
    p.add_argument(
        "--orientations",
        type=int,
        nargs="+",
        choices=(1, 2, 8),
        default=[1],
        help="orientation counts to measure (engine.tta); the context must hold for each",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    model, meta = load_model(path, "cpu")
    plain = {
        k: v for k, v in meta.items() if k not in ("config", "context_px", "context_tolerance_pct")
    }
    worst = dict.fromkeys(OVERLAPS, 0.0)
    print("| frame | " + " | ".join(f"overlap {o}" for o in OVERLAPS) + " |")
    print("|---" * (len(OVERLAPS) + 1) + "|")
    for (name, img), n in itertools.product(frames().items(), args.orientations):
        rng = float(np.ptp(np.percentile(img, [0.5, 99.5]))) or 1.0
        cells = []
        for o in OVERLAPS:
            # the frame's border is mirrored outward by the overlap, so the whole-frame
            # reference gets the same border, in one tile that holds it all
            kw = {"device": "cpu", "overlap": o, "tta": n, "amp": False}
            whole = denoise(img, (model, plain), tile=max(img.shape) + 2 * o, **kw)
            tiled = denoise(img, (model, plain), tile=256, **kw)
            d = 100 * float(np.abs(tiled - whole).max()) / rng
            worst[o] = max(worst[o], d)
            cells.append(f"{d:.3f} %")
        label = f"{name} {img.shape}" + (f", {n} orientations" if n > 1 else "")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    ok = [o for o in OVERLAPS if worst[o] <= args.tolerance]
    if not ok:
        print(
            f"no overlap up to {OVERLAPS[-1]} px keeps the difference under "
            f"{args.tolerance} % of the range: context_px not measured, nothing written"
        )
        return 1
    need = ok[0]
    print(f"context_px = {need} (largest difference {worst[need]:.3f} % of the range)")
    if args.write:
        record = {"context_px": need, "context_tolerance_pct": args.tolerance}
        save_checkpoint(path, model, {**plain, **record})
        print(f"wrote context_px into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
