"""Shared fixtures. Real microscope files live in ../shared/testdata beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture
def testdata() -> Path:
    """Folder of real microscope files; the test is skipped where it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data not found at {TESTDATA}")
    return TESTDATA
