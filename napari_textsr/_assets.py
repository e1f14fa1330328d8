"""Where the files shipped inside the package live (a leaf: imports nothing of the package).

The public name is :data:`napari_textsr.loading.WEIGHTS_DIR`; it is defined here
only so that :mod:`napari_textsr.prompts` (bundled encoder weights) and
:mod:`napari_textsr.loading` (bundled models) can both use it without importing
each other.
"""

from __future__ import annotations

from pathlib import Path

# Bundled checkpoints (``*.textsr.safetensors``) and encoder weights (``<name>.safetensors``).
WEIGHTS_DIR = Path(__file__).parent / "weights"
