"""Without ../shared/testdata, tests that need it are skipped cleanly, viewers or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# each asks for a napari viewer (directly or through a widget fixture) before `testdata`
NEED_BOTH = [
    "tests/test_io_napari.py::test_viewer_opens_a_dm4_with_its_calibration",
    "tests/test_io_napari.py::test_viewer_reports_a_truncated_file",
    "tests/test_widget_measure.py::test_real_non_square_file_calibration_and_intensity",
    "tests/test_end_to_end.py::test_open_denoise_paint_train_apply_measure_export",
]


def test_tests_needing_real_files_skip_before_a_viewer_starts(tmp_path):
    env = {**os.environ, "TEMSEG_TESTDATA": str(tmp_path / "absent")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *NEED_BOTH,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert summary.startswith(f"{len(NEED_BOTH)} skipped") and "error" not in summary
