"""Ship a trained denoiser as a bundled model, keeping the old weights as the segmenters' start.

    python scripts/ship_denoiser.py CANDIDATE.safetensors --name stem-denoise \\
        --keep-start stem-finetune-start

A denoiser trained longer restores better, but its features can fit a new segmentation
head worse, and the fine-tuning benchmarks were measured from the old weights. So the old
file is kept under ``--keep-start`` (still a denoiser a user may choose) and the new one's
header names it as ``models.FINETUNE_START``: segmenters fine-tuned "from" the bundled
denoiser start where they did before. A start that is already kept stays as it is.

``--stage-fix OLD=RECORD`` replaces a stage of the candidate's training record whose
``command`` contains OLD by the stage recorded in RECORD's header (a checkpoint), for a
candidate continued from weights whose own record was lost (a snapshot turned into a
checkpoint by hand); ``--note`` is added to that stage. Nothing else in the header changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_temseg.models import FINETUNE_START, load_model, save_checkpoint
from napari_temseg.models.bundled import SUFFIX, WEIGHTS_DIR
from napari_temseg.models.checkpoint import read_checkpoint_meta


def replace_stage(training: dict, marker: str, record: dict, note: str | None) -> dict:
    """The training record with the stage whose command contains ``marker`` replaced by
    ``record`` (its own earlier stages kept); raises if no stage matches."""
    if marker in str(training.get("command", "")):
        stage = {k: v for k, v in record.items() if k != "previous_training"}
        if note:
            stage["note"] = note
        stage["previous_training"] = record.get("previous_training")
        return stage
    prev = training.get("previous_training")
    if not prev:
        raise SystemExit(f"no training stage's command contains {marker!r}")
    return {**training, "previous_training": replace_stage(prev, marker, record, note)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidate", type=Path)
    p.add_argument("--name", default="stem-denoise")
    p.add_argument("--keep-start", required=True, metavar="NAME")
    p.add_argument("--start-description", default=None)
    p.add_argument("--stage-fix", default=None, metavar="OLD=RECORD")
    p.add_argument("--note", default=None)
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)

    bundled = args.weights_dir / f"{args.name}{SUFFIX}"
    start = args.weights_dir / f"{args.keep_start}{SUFFIX}"
    old_model, old_meta = load_model(bundled)
    named = old_meta.get(FINETUNE_START)
    if named and named != args.keep_start:
        raise SystemExit(f"{bundled} already starts segmenters from {named!r}: refusing")
    if not named:
        if start.is_file():
            raise SystemExit(f"{start} exists and {bundled} does not name it: refusing")
        meta = {k: v for k, v in old_meta.items() if k != FINETUNE_START}
        meta["name"] = args.keep_start
        if args.start_description:
            meta["description"] = args.start_description
        save_checkpoint(start, old_model, meta)
        print(f"kept the old weights as {start}")

    model, meta = load_model(args.candidate)
    meta = {**meta, "name": args.name, FINETUNE_START: args.keep_start}
    if args.stage_fix:
        marker, record_path = args.stage_fix.split("=", 1)
        record = read_checkpoint_meta(record_path)["training"]
        meta["training"] = replace_stage(meta["training"], marker, record, args.note)
    save_checkpoint(bundled, model, meta)
    print(f"wrote {bundled}; its fine-tuning start is {args.keep_start}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
