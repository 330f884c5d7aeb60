"""Shared fixtures. Real microscope files live in ../shared/testdata beside the checkout.

``TEMSEG_TESTDATA`` points elsewhere (a path that does not exist shows how the suite
behaves on a machine without the files: every test that needs them is skipped).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTDATA = Path(
    os.environ.get("TEMSEG_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
)


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Folder of real microscope files; the test is skipped where it is absent.

    Session scope makes pytest set this up before any function-scoped fixture, whatever
    the argument order: a test that also asks for napari's ``make_napari_viewer`` is
    skipped before a viewer exists, instead of erroring in the viewer's teardown.
    """
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def tiny_segmenter(tmp_path_factory) -> str:
    """A tiny segmenter file trained for 3 steps, for tests of files and plumbing (not of
    segmentation quality)."""
    from napari_temseg.engine.finetune import FinetuneConfig, finetune, save_segmenter
    from napari_temseg.engine.strokes import scribbles_from_mask
    from napari_temseg.synth import simulate

    s = simulate("stem", 64, pixel_size_nm=0.1, dose=100, seed=1)
    strokes = scribbles_from_mask(s.recorded_semantic, per_class=3, length=16, seed=0)
    cfg = FinetuneConfig(steps=3, batch_size=2, patch=32, base=4, depth=2, device="cpu")
    result = finetune([s.noisy], [strokes], init="none", config=cfg)
    path = tmp_path_factory.mktemp("model") / "seg.safetensors"
    return str(save_segmenter(path, result.model, result.meta))
