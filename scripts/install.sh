#!/usr/bin/env bash
# Create a virtual environment with napari-textsr and everything it needs.
#
#   bash scripts/install.sh            # .venv with the package (editable), napari + Qt and test tools
#   VENV=/some/where bash scripts/install.sh
#   EXTRAS= EDITABLE=0 VENV=.core-venv bash scripts/install.sh   # the core only: CLI and library, no napari or Qt
#
# Works on any Linux machine with Python >= 3.10. Where a CPU-only torch wheel is
# provided locally (/opt/wheels, as on our development machines) it is used, and
# torchvision is pinned to the release that matches torch: unpinned, pip would
# replace torch with the newest CUDA build (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --upgrade pip

local_wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$local_wheel" ]; then
    pip_install "$local_wheel"
else
    pip_install torch
fi
torch_minor=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('.')[1])")
pip_install "torchvision==0.$((torch_minor + 15)).*"

# Extras: napari (napari + a Qt binding, for the widgets), testing (test tools; it
# includes napari), distributed (zarr 3, dask.distributed: OME-Zarr and cluster
# inference; Python >= 3.11, its tests are skipped where it is missing).
# EXTRAS overrides the choice ("" = the core only); EDITABLE=0 installs a copy.
if [ -n "${EXTRAS+set}" ]; then
    extras=$EXTRAS
else
    extras="napari,testing"
    if "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
        extras="napari,testing,distributed"
    fi
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
if [ "${EDITABLE:-1}" = 1 ]; then
    pip_install -e "$target"
else
    pip_install "$target"
fi
if [ -z "$extras" ]; then
    echo "napari-textsr (core) installed in $VENV"
    exit 0
fi

# Qt needs a few system libraries even offscreen, and the real-viewer tests and
# screenshots need an X server with OpenGL (Xvfb + Mesa): install them where we
# can (Debian/Ubuntu as root); elsewhere say what is missing. NO_SYSTEM_PACKAGES=1 skips this.
qt_libs="libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0"
xvfb_libs="xvfb xauth libgl1-mesa-dri libglx-mesa0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0"
missing=""
if [ "${NO_SYSTEM_PACKAGES:-0}" != 1 ] && command -v dpkg-query >/dev/null 2>&1; then
    for lib in $qt_libs $xvfb_libs; do
        dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing="$missing $lib"
    done
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "note: Qt and the real-viewer tests need these system packages:$missing" >&2
    fi
fi
echo "napari-textsr installed in $VENV"
