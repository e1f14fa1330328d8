"""Tiles with padding, pasted core-only (Real-ESRGAN style), and their size.

An image is cut into *core* tiles that partition it; each is run through the
model with ``padding`` extra low-resolution pixels of real image context on
every side (less at the image border, where the untiled model sees the border
too), and only the core of the output is pasted. When ``padding`` covers the
model's receptive field and tile origins are multiples of its alignment, every
output pixel is computed from exactly the inputs the untiled model would use,
so tiled == untiled up to float summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tile", "plan_tiles", "auto_tile_size", "round_up"]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Tile:
    """One tile, in low-resolution pixel coordinates of the slice.

    ``y0:y1, x0:x1`` is the core (what this tile contributes); ``py0:py1,
    px0:px1`` the padded region fed to the model.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    py0: int
    py1: int
    px0: int
    px1: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.py1 - self.py0, self.px1 - self.px0

    @property
    def core_shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def padded_slices(self) -> tuple[slice, slice]:
        return slice(self.py0, self.py1), slice(self.px0, self.px1)

    def core_slices(self, scale: int = 1) -> tuple[slice, slice]:
        """The core in the (scaled) image."""
        return slice(self.y0 * scale, self.y1 * scale), slice(self.x0 * scale, self.x1 * scale)

    def core_in_padded(self, scale: int = 1) -> tuple[slice, slice]:
        """The core within the (scaled) padded tile."""
        dy, dx = self.y0 - self.py0, self.x0 - self.px0
        h, w = self.core_shape
        return slice(dy * scale, (dy + h) * scale), slice(dx * scale, (dx + w) * scale)


def _axis_tiles(size: int, tile: int, padding: int, alignment: int, min_size: int) -> list[tuple[int, int, int, int]]:
    if tile <= 0 or tile >= size:
        return [(0, size, 0, size)]
    # Even tiles rather than full tiles plus a sliver: fewer wasted padded pixels.
    count = math.ceil(size / tile)
    tile = round_up(math.ceil(size / count), alignment)
    spans = []
    for start in range(0, size, tile):
        end = min(start + tile, size)
        p0 = max(start - padding, 0)
        p1 = min(end + padding, size)
        if p1 - p0 < min_size:  # grow into the image, keeping the origin aligned
            p1 = min(max(p1, p0 + min_size), size)
            p0 = max(min(p0, p1 - min_size), 0) // alignment * alignment
        spans.append((start, end, p0, p1))
    return spans


def plan_tiles(
    height: int, width: int, tile: int | tuple[int, int], padding: int, alignment: int = 1, min_size: int = 1
) -> list[Tile]:
    """Row-major tiles covering a (height, width) image.

    ``tile``: core side in pixels (or (rows, cols)); 0 or at least the image
    side means one tile along that axis. ``padding`` is rounded up to a
    multiple of ``alignment``, and core origins are multiples of it, so padded
    origins are aligned too.
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if tile_h < 0 or tile_w < 0:
        raise ValueError(f"tile size must be >= 0 (0 = no tiling), got {tile}")
    alignment = max(int(alignment), 1)
    if tile_h:
        tile_h = round_up(tile_h, alignment)
    if tile_w:
        tile_w = round_up(tile_w, alignment)
    padding = round_up(max(int(padding), 0), alignment)
    rows = _axis_tiles(height, tile_h, padding, alignment, min_size)
    cols = _axis_tiles(width, tile_w, padding, alignment, min_size)
    return [Tile(y0, y1, x0, x1, py0, py1, px0, px1) for y0, y1, py0, py1 in rows for x0, x1, px0, px1 in cols]


def auto_tile_size(
    height: int,
    width: int,
    padding: int,
    bytes_per_lr_pixel: float,
    budget_bytes: float,
    alignment: int = 1,
    minimum: int = 32,
) -> int:
    """Largest core tile side whose padded tile fits ``budget_bytes``; 0 if the whole image fits.

    ``bytes_per_lr_pixel`` is the working memory of one low-resolution pixel
    (activations, output, attention maps). The side never goes below
    ``minimum`` (nor below the padding, so at most ~8/9 of the work is padding
    recomputation), even if that overshoots a tiny budget.
    """
    if height * width * bytes_per_lr_pixel <= budget_bytes:
        return 0
    padded_side = int(math.sqrt(budget_bytes / bytes_per_lr_pixel))
    core = padded_side - 2 * padding
    core = max(core, minimum, padding)
    core = max(core // alignment * alignment, alignment)
    if core >= height and core >= width:
        return 0
    return core
