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
raises smaller overlaps to it.
"""

from __future__ import annotations

import argparse
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
    for name, img in frames().items():
        rng = float(np.ptp(np.percentile(img, [0.5, 99.5]))) or 1.0
        cells = []
        for o in OVERLAPS:
            # the frame's border is mirrored outward by the overlap, so the whole-frame
            # reference gets the same border, in one tile that holds it all
            whole = denoise(
                img, (model, plain), device="cpu", tile=max(img.shape) + 2 * o, overlap=o
            )
            tiled = denoise(img, (model, plain), device="cpu", tile=256, overlap=o)
            d = 100 * float(np.abs(tiled - whole).max()) / rng
            worst[o] = max(worst[o], d)
            cells.append(f"{d:.3f} %")
        print(f"| {name} {img.shape} | " + " | ".join(cells) + " |", flush=True)
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
