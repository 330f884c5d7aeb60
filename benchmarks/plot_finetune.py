"""Plot fine-tuning benchmarks: particle Dice against steps, and against labelled images.

    python benchmarks/bench_finetune.py curves --kind hrtem --inits hrtem-denoise none \\
        --steps 150 --dose 20 --strokes 2 --out hrtem.json            # and --kind stem
    python benchmarks/bench_finetune.py images --kind hrtem --counts 1 3 ... --out images.json
    python benchmarks/plot_finetune.py --curves hrtem.json stem.json --images images.json \\
        --out docs/images/finetune_curves.png

Reads the JSON that ``bench_finetune.py`` writes; one panel per curves file (painted
image solid, unseen images dashed; pretrained vs scratch), one for the images file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def label(init: str) -> str:
    return "from scratch" if init == "none" else f"pretrained ({init})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--curves", type=Path, nargs="+", default=[])
    p.add_argument("--images", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    panels = len(a.curves) + (1 if a.images else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    axes = list(axes[0])
    for path, ax in zip(a.curves, axes, strict=False):
        data = json.loads(path.read_text())
        args = data["args"]
        for i, (init, points) in enumerate(data["results"].items()):
            color = f"C{i}"
            steps = [pt["step"] for pt in points]
            ax.plot(
                steps,
                [pt["painted_particle"] for pt in points],
                "o-",
                color=color,
                label=f"{label(init)}, painted image",
            )
            ax.plot(
                steps,
                [pt["other_particle"] for pt in points],
                "s--",
                color=color,
                alpha=0.6,
                label=f"{label(init)}, unseen images",
            )
        ax.set_title(
            f"{args['kind'].upper()}, dose {float(args['dose']):g} e/px, "
            f"{args['strokes']} strokes/class",
            fontsize=9,
        )
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("particle Dice")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    if a.images:
        ax = axes[-1]
        data = json.loads(a.images.read_text())
        for i, (init, by_count) in enumerate(data["results"].items()):
            counts = sorted(by_count, key=int)
            ax.plot(
                [int(c) for c in counts],
                [by_count[c]["painted_particle"] for c in counts],
                "o-",
                color=f"C{i}",
                label=f"{label(init)}, painted images",
            )
        ax.set_xticks(sorted({int(c) for by in data["results"].values() for c in by}))
        args = data["args"]
        ax.set_title(f"{args['kind'].upper()}: labelled images, {args['steps']} steps", fontsize=9)
        ax.set_xlabel("labelled images")
        ax.set_ylabel("particle Dice")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
