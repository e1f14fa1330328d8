"""``python -m napari_textsr.cli`` (what ``torchrun -m napari_textsr.cli train ...`` runs)."""

import sys

from napari_textsr.cli import main

sys.exit(main())
