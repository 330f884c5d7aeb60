#!/usr/bin/env bash
# Install napari-temseg as a stranger would and check it: build a wheel and an sdist, make a
# brand-new venv, `pip install torch==2.13.0 dist/*.whl napari PyQt6`, then check that npe2
# validates the plugin, napari lists it, every widget docks from the Plugins menu, the
# sample data opens and `temseg models` lists the bundled (offline) weights.
# Usage: bash scripts/check_release.sh [VENV_DIR]   (needs scripts/install.sh run first)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/temseg-release-venv}
rm -rf dist "$venv"
.venv/bin/python -m pip install -q build
.venv/bin/python -m build -q --outdir dist . >/dev/null
ls dist
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q dist/*.whl napari PyQt6
cd /tmp  # not the checkout: prove the installed wheel works on its own
"$venv/bin/npe2" validate napari-temseg
"$venv/bin/npe2" list | grep -q napari-temseg && echo "npe2 lists napari-temseg"
"$venv/bin/temseg" models
QT_API=pyqt6 xvfb-run -a -s "-screen 0 1400x900x24" "$venv/bin/python" - <<'EOF'
import napari
from napari_temseg._launch import build_viewer, widget_names
viewer = build_viewer(show=False)
names = widget_names()
assert names, "no widgets in the installed manifest"
docked = [name for name in names if any(name in key for key in viewer.window.dock_widgets)]
assert docked == names, (docked, names)
assert [layer.name for layer in viewer.layers][:1] == ["STEM noisy"]
print("widgets docked from the installed plugin:", ", ".join(names))
viewer.close()
EOF
echo "release check passed"
