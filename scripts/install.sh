#!/usr/bin/env bash
# Install everything napari-temseg needs on a fresh Debian machine (run as root, or with the
# system packages already present): Xvfb + Mesa OpenGL for napari, a venv in .venv,
# torch==2.13.0 FIRST (the CPU wheel; any other torch spec pulls gigabytes of CUDA packages),
# then the project. Usage: scripts/install.sh [EXTRA]   (EXTRA e.g. "testing")
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libfontconfig1 libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-shape0 libxcb-xinerama0 libdbus-1-3"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[install] missing system packages (install them as root):$missing" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
extra=${1:-}
if [ -n "$extra" ]; then
  .venv/bin/python -m pip install -q -e ".[$extra]"
else
  .venv/bin/python -m pip install -q -e . PyQt6
fi
echo "[install] ready: $(.venv/bin/python -c 'import napari_temseg, torch, napari; print("napari-temseg", napari_temseg.__version__, "| torch", torch.__version__, "| napari", napari.__version__)')"
