"""The defaults every face shares: typed once here, read by the engine's configs,
the docks' controls and ``temseg``'s options.

They used to be typed three times (widget, argparse, config dataclass) and drifted:
pretraining ran 1000 steps from the Pretrain dock and 2000 from ``temseg pretrain``.
This table is plain Python on purpose: ``napari_temseg.engine`` imports torch, and
``temseg --help`` must not wait for it. The engine's config dataclasses take their field
defaults from here, so ``PretrainConfig().steps == PRETRAIN_STEPS``.
"""

from __future__ import annotations

#: where inference and training run: "auto" picks CUDA, then MPS, then the CPU
DEVICE = "auto"
#: inference tiles and their overlap in pixels (denoise, segment, apply); 384 rather than
#: 256 since frames are extended by a mirrored border: a 2048² frame then takes 100 tiles
#: of 256 px but 36 of 384, as fast as 256 px tiles were without it (docs/benchmarks.md)
TILE = 384
OVERLAP = 32
#: binning factors the denoiser can work at (engine/binning.py); 1 = the frame's own
BINS = (1, 2, 4)
#: how many orientations a denoiser's answer is averaged over (engine.tta): 1 (one pass),
#: 2 (the tile and the tile turned by 90 degrees) or 8 (every rotation and mirroring);
#: the detail they disagree on is smoothed. Two by default: on the real low-dose pair the
#: error added by hrtem-denoise fell from 303 / 426 (one pass) to 161 / 304, about what
#: eight gave (159 / 304), and a 2048² frame took 3.5 s on 2 CPU threads in bfloat16
#: (docs/benchmarks.md, "Two orientations by default, in bfloat16")
ORIENTATION_CHOICES = (1, 2, 8)
DENOISE_ORIENTATIONS = 2
#: the random seed of training runs
SEED = 0

#: adapting a denoiser to the frames' noise (engine.adapt, Denoise dock, temseg denoise --adapt)
ADAPT_SECONDS = 60.0

#: pretraining a denoiser (engine.pretrain.PretrainConfig, Pretrain dock, temseg pretrain)
PRETRAIN_METHOD = "poisson"
PRETRAIN_STEPS = 1000
PRETRAIN_PATCH = 128
PRETRAIN_BATCH = 8

#: fine-tuning a segmenter (engine.finetune.FinetuneConfig, Train dock, temseg finetune);
#: 600 steps, not 300: on frames that were not painted the atoms of real HAADF frames
#: (acstem, ten stroke seeds) went from F1 0.346 to 0.399 (simulated particles: about the
#: same), for twice the training time (docs/benchmarks.md, "The default becomes 600
#: steps"). The live preview shows the best model within seconds, and Stop keeps it
FINETUNE_STEPS = 600
FINETUNE_SECONDS = 0.0  # time budget; 0: none
FINETUNE_PATCH = 128
FINETUNE_BATCH = 8
FINETUNE_LR = 2e-3
#: share of patches shown with inverted contrast when frames may differ in polarity
#: ("contrast may invert", off by default: docs/segment.md)
FINETUNE_INVERT = 0.25

#: atoms (engine.atoms, the Measure dock's Atoms section, temseg measure --atoms): the label
#: painted on atoms; class 1 is support by the project's convention
ATOM_CLASS = 2

#: measuring: smaller mask components are specks and pinholes, cleaned first (engine.measure)
MIN_SIZE_PX = 40
