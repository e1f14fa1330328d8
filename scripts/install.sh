#!/usr/bin/env bash
# Create a virtual environment with napari-textsr and everything it needs.
#
#   bash scripts/install.sh            # .venv with the package (editable) and test tools
#   VENV=/some/where bash scripts/install.sh
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

# The distributed extra (zarr 3, dask.distributed: OME-Zarr and cluster inference)
# needs Python >= 3.11; its tests are skipped where it is missing.
extras="testing"
if "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
    extras="testing,distributed"
fi
pip_install -e ".[$extras]"

# Qt needs a few system libraries even offscreen; install them where we can (Debian/Ubuntu as root).
qt_libs="libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0"
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
    for lib in $qt_libs; do
        dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing="$missing $lib"
    done
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "note: Qt may need these system packages:$missing" >&2
    fi
fi
echo "napari-textsr installed in $VENV"
