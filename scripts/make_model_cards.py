"""Write the model cards in docs/models/ from the bundled checkpoints and measured quality.

    python benchmarks/bench_denoise_quality.py --n 4 --out /tmp/quality.json
    python scripts/make_model_cards.py --quality /tmp/quality.json

Everything a card says about training comes from the checkpoint's own header (command,
seed, steps, time, validation), so a card cannot drift from the weights it describes; the
quality tables come from ``bench_denoise_quality.py``'s JSON. Hand-written notes per model
(what it is for) live in ``NOTES`` below; measured findings in ``docs/models/<name>.notes.md``,
which is appended to the card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_temseg.models import count_parameters, list_models, load_model

ROOT = Path(__file__).resolve().parents[1]

NOTES = {
    "stem-denoise": (
        "For HAADF/ADF-STEM images of particles and crystals (bright atomic columns on a "
        "dark or amorphous background), pixel sizes 0.01-0.25 nm. It restores the frame "
        "as the scan recorded it (row jitter and drift are kept, not undone), and it was "
        "trained with the detector's decay along the fast scan on 90 % of its last "
        "stage's images, as real STEM detectors smear their noise."
    ),
    "hrtem-denoise": (
        "For camera images (HRTEM/TEM) with lattice fringes, pixel sizes 0.01-0.12 nm. "
        "Its last stage weighted each training patch by the inverse of its own error, "
        "so that low-dose patches count in decibels like the others; the stage before "
        "drew half of its images at 0.5-10 e/px."
    ),
    "hrtem-denoise-stage7": (
        "The `hrtem-denoise` weights of 2026-12-04 (seven training stages), kept when "
        "newer ones replaced them on 2026-12-06. Segmenters fine-tuned from "
        "`hrtem-denoise` start from these weights (its header's `finetune_start` names "
        "this file): the fine-tuning benchmarks were measured from them."
    ),
    "stem-denoise-smooth": (
        "The `stem-denoise` weights of 2026-12-05, kept when newer ones replaced them: "
        "trained to restore the undistorted scene, they give a smoother, blurrier result "
        "(less texture on noisy real frames, atoms and fine lattice softened). Segmenters "
        "fine-tuned from `stem-denoise` start from these weights (its header's "
        "`finetune_start` names this file): the fine-tuning benchmarks were measured from "
        "them, and a denoiser trained longer is not a better start by that fact alone."
    ),
}


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def quality_table(rows: dict) -> list[str]:
    methods = list(next(iter(rows.values())))
    base = [m for m in methods if m not in ("model", "noisy")]
    lines = [
        "| dose (e/px) | " + " | ".join(methods) + " | model - best baseline |",
        "|" + "---|" * (len(methods) + 2),
    ]
    mean = {m: np.mean([r[m] for r in rows.values()], axis=0).tolist() for m in methods}
    for dose, r in [*rows.items(), ("**mean**", mean)]:
        bp = max(r[m][0] for m in base)
        bs = max(r[m][1] for m in base)
        cells = " | ".join(f"{r[m][0]:.2f} / {r[m][1]:.3f}" for m in methods)
        label = dose if dose == "**mean**" else f"{float(dose):g}"
        gain = f"{r['model'][0] - bp:+.2f} dB / {r['model'][1] - bs:+.3f}"
        lines.append(f"| {label} | {cells} | {gain} |")
    return lines


def card(name: str, quality: dict) -> str:
    model, meta = load_model(name)
    # the stages, oldest first: each continued run keeps its predecessor's record
    stages: list[dict] = []
    stage = meta.get("training")
    while stage:
        stage = dict(stage)
        prev = stage.pop("previous_training", None)
        stages.insert(0, stage)
        stage = prev
    data = meta.get("training_data", {})
    lines = [
        f"# Model card: `{name}`",
        "",
        meta.get("description", ""),
        "",
        NOTES.get(name, ""),
        "",
        "## Network",
        "",
        f"- architecture: `{json.dumps(model.config)}`",
        f"- parameters: {count_parameters(model):,}; file: "
        f"`src/napari_temseg/models/weights/{name}.safetensors` (safetensors, loads offline, "
        "runs no code)",
        f"- input normalisation: `{json.dumps(meta.get('normalization'))}`; the output is "
        "mapped back to the input's intensity units",
        *(
            [
                f"- tiles overlap by at least {meta['context_px']} px (`context_px`: where "
                "tiled and whole-frame results agree within "
                f"{meta.get('context_tolerance_pct', 0.5):g} % of the range; "
                f"`python scripts/measure_context.py {name}`)"
            ]
            if meta.get("context_px")
            else []
        ),
        "",
        "## Training (read from the checkpoint header)",
        "",
        "Data: the project's own simulator (`napari_temseg.synth`), drawn afresh for every "
        "batch, so no image is seen twice:",
        "",
        "```json",
        json.dumps(data, indent=1),
        "```",
        "",
    ]
    total_steps = sum(int(st.get("steps", 0)) for st in stages)
    total_min = sum(float(st.get("minutes", 0)) for st in stages)
    lines += [
        f"Cumulative: {len(stages)} stages, {total_steps:,} steps, {total_min:.1f} minutes "
        "of training.",
        "",
    ]
    for i, stage in enumerate(stages, 1):
        curve = stage.pop("curve", None)
        if len(stages) > 1:
            lines += [f"Stage {i}:", ""]
        lines += [
            "```bash",
            stage.get("command", "(command not recorded)"),
            "```",
            "",
            "| " + " | ".join(k for k in stage if k != "command") + " |",
            "|" + "---|" * (len(stage) - 1),
            "| " + " | ".join(_fmt(v) for k, v in stage.items() if k != "command") + " |",
            "",
        ]
        if curve:
            points = ", ".join(f"{int(c[0])}: {c[2]:.2f}" for c in curve)
            lines += [f"Validation curve (step: PSNR dB): {points}.", ""]
    lines += [
        "`val_psnr_db` is on the validation set in normalised units (the training metric), "
        "not comparable with the tables below.",
        "",
        "## Measured quality",
        "",
        "`python benchmarks/bench_denoise_quality.py --n 4 --threads 1` (PSNR dB / SSIM "
        "against the noise-free image, mean over 4 images of 256x256 per dose). Baselines: "
        "Gaussian filter with the best sigma per image and non-local means with the best h "
        "per image (both *oracles*: they are tuned on the clean image), and BM3D with the "
        "noise level estimated from the image. Test images use seeds the training never "
        "draws.",
        "",
    ]
    kind = name.split("-")[0]
    for which, title in (
        ("standard", "Standard test set (the training distribution)"),
        (
            "shifted",
            "Shifted test set (pixel sizes and lattice constants outside the "
            "training range, strong read-out noise, many X-ray hits)",
        ),
    ):
        # the kind's rows are the kind's denoiser's (a fine-tuning start has none of its own)
        rows = quality.get(f"{name}/{which}") or (
            quality.get(f"{kind}/{which}") if name == f"{kind}-denoise" else None
        )
        if rows:
            lines += [f"### {title}", "", *quality_table(rows), ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", type=Path, required=True, help="bench_denoise_quality.py JSON")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "models")
    args = p.parse_args()
    quality = json.loads(args.quality.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for m in list_models("denoise"):
        text = card(m.name, quality)
        extra = args.out / f"{m.name}.notes.md"
        if extra.is_file():
            text += "\n" + extra.read_text()
        (args.out / f"{m.name}.md").write_text(text.rstrip() + "\n")
        print(f"wrote {args.out / (m.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
