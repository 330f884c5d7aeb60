#!/usr/bin/env bash
# The test command: installs what it needs, then runs ruff and pytest under a virtual display.
# Extra arguments go to pytest (e.g. scripts/test.sh -k synth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh testing
.venv/bin/ruff check src tests benchmarks scripts
export QT_API=pyqt6 MPLBACKEND=Agg
# pytest-xvfb starts Xvfb itself; xvfb-run is the fallback where the plugin cannot.
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
