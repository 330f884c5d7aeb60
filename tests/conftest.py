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
