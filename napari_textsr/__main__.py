import sys

from napari_textsr.cli import main

sys.exit(main())
