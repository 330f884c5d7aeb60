#!/usr/bin/env bash
# The main job: install, then open napari with the plugin's widgets docked and sample data
# loaded. Without a display, run the headless end-to-end demo instead and say where it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/python -m napari_temseg._launch
else
  out=${TEMSEG_DEMO_DIR:-$PWD/temseg-demo}
  echo "[run] no display found: running the headless demo (temseg demo -o $out)"
  .venv/bin/temseg demo -o "$out"
fi
