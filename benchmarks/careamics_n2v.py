"""Noise2Void by careamics, trained on each image itself: a baseline for the denoisers.

    PYTHON_WITH_CAREAMICS benchmarks/careamics_n2v.py IN.npy OUT.npy [--epochs 20]

Runs under any interpreter that has ``careamics`` (its torch pin differs from the
project's, so it usually lives in its own environment; ``bench_n2v.py`` calls this file
with ``--careamics-python``). IN holds a stack (N, H, W) of noisy images; each gets its own
network, trained from scratch with careamics' N2V defaults (U-Net of depth 2, 64x64 patches,
flips and 90-degree rotations), as a user of careamics or napari-n2v would. OUT gets the
predictions, float32, same shape. One line of timing per image goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import torch
    from careamics import CAREamist
    from careamics.config import create_n2v_config

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    stack = np.load(args.inp).astype(np.float32)
    out = np.empty_like(stack)
    for i, img in enumerate(stack):
        torch.manual_seed(args.seed + i)
        t0 = time.perf_counter()
        cfg = create_n2v_config(
            experiment_name=f"n2v{i}",
            data_type="array",
            axes="YX",
            patch_size=[args.patch, args.patch],
            batch_size=args.batch,
            num_epochs=args.epochs,
        )
        with tempfile.TemporaryDirectory() as work:
            cam = CAREamist(cfg, work_dir=work, enable_progress_bar=False)
            cam.train(train_data=img)
            pred, _ = cam.predict(img, tile_size=(128, 128), tile_overlap=(48, 48))
        out[i] = np.asarray(pred[0] if isinstance(pred, list) else pred).reshape(img.shape)
        print(f"image {i}: {img.shape}, {time.perf_counter() - t0:.0f} s", flush=True)
    np.save(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
