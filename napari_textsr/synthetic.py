"""Synthetic captioned scenes whose captions carry what down-sampling destroys.

Each scene is simple and high-contrast, and built so that at x8 the low-resolution
image shows *where* things are, how big and what colour, but not *what* they
are: equal-area circles, squares, triangles and crosses become the same blob;
stripes of period 8 px become a flat patch whatever their direction; glyphs of a
blocky bitmap font become same-sized smudges; fluorescence-like filaments,
puncta, nuclei and membranes lose their profile. The captions name exactly that
lost identity (plus the visible colour), so a caption-guided model can do
measurably better than a caption-blind one, and a wrong caption measurably
worse.

Everything is numpy (plus a Gaussian filter from scipy and Pillow's built-in
bitmap font), deterministic given the ``numpy.random.Generator``, and fast
(a few milliseconds per 256x256 scene). Scene sizes are in pixels: the
structures keep their pixel size whatever ``size`` is, so a smaller scene holds
fewer of them.

Photo-like positional words are avoided: orientation-carrying scenes (stripes,
text) set ``CaptionedImage.augment = False`` so training never flips or rotates
them into something their caption no longer describes.
"""

from __future__ import annotations

from functools import cache
from typing import Callable, Iterator, Sequence

import numpy as np

from napari_textsr.captioned import CaptionedImage

__all__ = [
    "SYNTHETIC_KINDS",
    "SHAPES",
    "PATTERNS",
    "STRUCTURES",
    "synthetic_scene",
    "synthetic_dataset",
    "iter_synthetic",
    "shapes_scene",
    "texture_scene",
    "glyph_scene",
    "microscopy_scene",
    "CAPTION_ALTERNATIVES",
    "caption_alternatives",
]

SYNTHETIC_KINDS: tuple[str, ...] = ("shapes", "textures", "glyphs", "microscopy")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PATTERNS: tuple[str, ...] = ("vertical", "horizontal", "rising", "falling", "checkerboard")
STRUCTURES: tuple[str, ...] = ("filaments", "puncta", "nuclei", "membranes")

# Saturated colours so that a shape's area can be read from its low-resolution mass.
_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.12, 0.10),
    "green": (0.15, 0.90, 0.20),
    "blue": (0.20, 0.35, 1.00),
    "yellow": (1.00, 0.90, 0.10),
    "cyan": (0.10, 0.90, 0.95),
    "magenta": (0.95, 0.20, 0.90),
    "orange": (1.00, 0.55, 0.05),
    "white": (1.00, 1.00, 1.00),
}
_DARK: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "dark blue": (0.05, 0.05, 0.30),
    "dark green": (0.02, 0.22, 0.05),
    "dark red": (0.30, 0.03, 0.03),
    "purple": (0.30, 0.05, 0.35),
}
_NUMBERS = (
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)
# Stripe period in pixels: at x8 one period falls inside one low-resolution
# pixel, so any direction averages to the same flat colour.
STRIPE_PERIOD = 8
_GLYPH_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ2345789"


def _count_word(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour: Sequence[float], y0: int = 0, x0: int = 0) -> None:
    """Alpha-blend ``colour`` into ``canvas`` (H, W, 3) where ``coverage`` (h, w) in [0,1] says."""
    h, w = coverage.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    alpha = coverage[..., None]
    region *= 1.0 - alpha
    region += alpha * np.asarray(colour, dtype=np.float32)


# ------------------------------------------------------------------ shapes
def _shape_inside(shape: str, diameter: float) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], float]:
    """Point-in-shape test (dy, dx offsets from the centroid) for a shape whose
    area equals a disk of ``diameter``, and the shape's half-extent."""
    area = np.pi * diameter**2 / 4
    if shape == "circle":
        r = diameter / 2
        return (lambda dy, dx: dy**2 + dx**2 <= r * r), r
    if shape == "square":
        half = np.sqrt(area) / 2
        return (lambda dy, dx: (np.abs(dy) <= half) & (np.abs(dx) <= half)), half
    if shape == "triangle":  # equilateral, pointing up, centroid at the centre
        side = np.sqrt(4 * area / np.sqrt(3))
        height = side * np.sqrt(3) / 2
        return (
            lambda dy, dx: (
                (dy <= height / 3)
                & (dy >= -2 * height / 3)
                & (np.abs(dx) <= (dy + 2 * height / 3) * (side / 2) / height)
            )
        ), 2 * height / 3
    if shape == "cross":  # Greek cross made of five arm-width squares
        arm = np.sqrt(area / 5)
        return (
            lambda dy, dx: (
                ((np.abs(dx) <= arm / 2) & (np.abs(dy) <= 1.5 * arm))
                | ((np.abs(dy) <= arm / 2) & (np.abs(dx) <= 1.5 * arm))
            )
        ), 1.5 * arm
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _shape_coverage(
    shape: str, cy: float, cx: float, diameter: float, size: int, supersample: int = 4
) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage of one shape: (h, w) float32 array and its top-left pixel."""
    inside, extent = _shape_inside(shape, diameter)
    y0, y1 = max(int(np.floor(cy - extent)) - 1, 0), min(int(np.ceil(cy + extent)) + 2, size)
    x0, x1 = max(int(np.floor(cx - extent)) - 1, 0), min(int(np.ceil(cx + extent)) + 2, size)
    offsets = (np.arange(supersample) + 0.5) / supersample
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1) - cy
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1) - cx
    hit = inside(ys[:, None], xs[None, :]).astype(np.float32)
    coverage = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    return coverage, y0, x0


def _scatter_centres(
    rng: np.random.Generator, size: int, radii: np.ndarray, margin: float, gap: float, tries: int = 60
) -> list[tuple[float, float, float]]:
    """Non-overlapping (y, x, radius) positions by rejection sampling (in order of ``radii``)."""
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for _ in range(tries):
            y, x = rng.uniform(margin + r, size - margin - r, size=2)
            if all((y - py) ** 2 + (x - px) ** 2 >= (r + pr + gap) ** 2 for py, px, pr in placed):
                placed.append((float(y), float(x), float(r)))
                break
    return placed


def shapes_scene(rng: np.random.Generator, size: int = 256, shape: str | None = None) -> CaptionedImage:
    """Equal-area coloured shapes (circles, squares, triangles or crosses) on a dark ground.

    All shapes of a scene share kind and colour. Their area-equivalent
    diameters are 10 to 20 px, i.e. 1.25 to 2.5 low-resolution pixels at x8, so
    the kinds blur into the same blob while position, size and colour stay
    visible. ``shape`` overrides the drawn kind *after* all random draws, so
    the same rng state gives the same layout for every shape (for ambiguity tests).
    """
    drawn = _pick(rng, SHAPES)
    colour_name = _pick(rng, list(_COLOURS))
    ground_name = _pick(rng, ["black", "black", "dark blue", "purple"])
    density = (size / 256) ** 2
    n = max(1, int(round(rng.integers(10, 21) * density)))
    diameters = rng.uniform(10.0, 20.0, size=n)
    # Half-extent of the widest shape of that area (the cross) sets the spacing.
    centres = _scatter_centres(rng, size, diameters * 0.75, margin=2.0, gap=6.0)
    shape = drawn if shape is None else shape
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = _DARK[ground_name]
    for (y, x, _), d in zip(centres, diameters):
        coverage, y0, x0 = _shape_coverage(shape, y, x, float(d), size)
        _paint(canvas, coverage, _COLOURS[colour_name], y0, x0)
    plural = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}[shape]
    detail = {
        "circle": "round discs",
        "square": "axis-aligned squares with sharp corners",
        "triangle": "equilateral triangles pointing upward",
        "cross": "plus-shaped crosses with equal arms",
    }[shape]
    count = len(centres)
    return CaptionedImage(
        image=canvas,
        captions=[
            f"{colour_name} {plural} on {ground_name}",
            f"{_count_word(count)} small {colour_name} {plural} of different sizes scattered on a plain "
            f"{ground_name} background; flat colour {detail}",
        ],
        name=f"shapes-{shape}",
        augment=True,
    )


# ----------------------------------------------------------------- textures
def _pattern(pattern: str, h: int, w: int, y0: int = 0, x0: int = 0) -> np.ndarray:
    """Binary (h, w) float32 pattern of period STRIPE_PERIOD for the pixels whose top-left is
    at image pixel (y0, x0); phase 0 at the image's pixel (0, 0)."""
    y = np.arange(y0, y0 + h)[:, None]
    x = np.arange(x0, x0 + w)[None, :]
    half = STRIPE_PERIOD // 2
    if pattern == "vertical":
        on = (x % STRIPE_PERIOD < half) & (y >= 0)
    elif pattern == "horizontal":
        on = (y % STRIPE_PERIOD < half) & (x >= 0)
    elif pattern == "falling":  # runs from top left to bottom right
        on = (x - y) % STRIPE_PERIOD < half
    elif pattern == "rising":  # runs from bottom left to top right
        on = (x + y) % STRIPE_PERIOD < half
    elif pattern == "checkerboard":
        on = ((x // half) + (y // half)) % 2 == 0
    else:
        raise ValueError(f"unknown pattern {pattern!r}; choose from {PATTERNS}")
    return on.astype(np.float32)


_PATTERN_WORDS = {
    "vertical": ("vertical stripes", "thin vertical stripes running straight up and down"),
    "horizontal": ("horizontal stripes", "thin horizontal stripes running straight left to right"),
    "rising": ("rising diagonal stripes", "thin diagonal stripes rising from bottom left to top right"),
    "falling": ("falling diagonal stripes", "thin diagonal stripes falling from top left to bottom right"),
    "checkerboard": ("a checkerboard", "a fine checkerboard of small alternating squares"),
}


def texture_scene(rng: np.random.Generator, size: int = 256, pattern: str | None = None) -> CaptionedImage:
    """One or two rectangular panels filled with a fine two-colour texture on grey.

    Stripes (vertical, horizontal, rising or falling diagonal) or a
    checkerboard, period 8 px and 50% duty, so at x8 every pattern averages to
    the same flat panel colour. The pattern's phase is anchored to the image's
    pixel grid (phase 0 at pixel (0, 0)), i.e. to the x8 (and x2, x4) sampling
    grid, so the low-resolution image plus the caption (which names the
    pattern and its two colours) determine the high-resolution panel
    completely, and without the caption nothing does: the scene isolates what
    text guidance alone can add. (Anchoring the phase to each panel's corner
    instead would make the task sub-pixel edge localisation, not reading the
    caption.) ``pattern`` overrides the drawn pattern after all random draws.
    """
    drawn = _pick(rng, PATTERNS)
    names = list(_COLOURS)
    first = _pick(rng, names)
    second = _pick(rng, [c for c in names if c != first] + ["black", "black"])
    ground = float(rng.uniform(0.25, 0.45))
    canvas = np.full((size, size, 3), ground, dtype=np.float32)
    n_panels = 1 if size < 160 else int(rng.integers(1, 3))
    panels: list[tuple[int, int, int, int]] = []
    for _ in range(n_panels):
        for _try in range(40):
            h = int(rng.integers(int(size * 0.3), int(size * 0.8) + 1))
            w = int(rng.integers(int(size * 0.3), int(size * 0.8) + 1))
            y0 = int(rng.integers(2, max(size - h - 1, 3)))
            x0 = int(rng.integers(2, max(size - w - 1, 3)))
            overlaps = any(
                y0 < py + ph + 8 and py < y0 + h + 8 and x0 < px + pw + 8 and px < x0 + w + 8
                for py, px, ph, pw in panels
            )
            if not overlaps:
                panels.append((y0, x0, min(h, size - y0), min(w, size - x0)))
                break
    pattern = drawn if pattern is None else pattern
    colour_a = np.asarray(_COLOURS[first], dtype=np.float32)
    colour_b = np.asarray(_COLOURS.get(second, (0.0, 0.0, 0.0)), dtype=np.float32)
    for y0, x0, h, w in panels:
        on = _pattern(pattern, h, w, y0, x0)[..., None]
        canvas[y0 : y0 + h, x0 : x0 + w] = on * colour_a + (1 - on) * colour_b
    short, long = _PATTERN_WORDS[pattern]
    panel_words = "one rectangular panel" if len(panels) == 1 else f"{_count_word(len(panels))} rectangular panels"
    return CaptionedImage(
        image=canvas,
        captions=[
            f"{short} in {first} and {second}",
            f"{panel_words} on a grey background, filled with {long} alternating {first} and {second}",
        ],
        name=f"textures-{pattern}",
        augment=False,
    )


# ------------------------------------------------------------------- glyphs
@cache
def _glyph_bitmap(char: str) -> np.ndarray:
    """Pillow's built-in bitmap font glyph as a bool (24, advance) cell. Needs no font files.

    The font is monospaced, so every string of the same length has the same
    layout and only the letter shapes (what x8 destroys) tell strings apart.
    """
    from PIL import Image, ImageDraw, ImageFont

    load = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
    font = load() if load is not None else ImageFont.load_default()
    advance = int(round(font.getlength("M")))
    cell = Image.new("L", (advance, 24), 0)
    ImageDraw.Draw(cell).text((0, 0), char, font=font, fill=255)
    return np.asarray(cell) > 127


def _text_bitmap(text: str, zoom: int) -> np.ndarray:
    """Bool (h, w) bitmap of ``text`` in the bitmap font, each font pixel a zoom x zoom block."""
    line = np.concatenate([_glyph_bitmap(c) for c in text], axis=1)
    rows = np.flatnonzero(np.concatenate([_glyph_bitmap(c) for c in _GLYPH_ALPHABET], axis=1).any(axis=1))
    line = line[rows[0] : rows[-1] + 1]  # the font's full ascent-to-descent band, same for every string
    return np.kron(line, np.ones((zoom, zoom), dtype=bool))


def glyph_scene(rng: np.random.Generator, size: int = 256, text: str | None = None) -> CaptionedImage:
    """A short string (2 to 4 letters/digits) repeated in rows, blocky bitmap font.

    Glyph strokes are 3 or 4 px wide and glyphs about 15 x 21 px, so at x8
    each glyph is a 2 x 3 pixel smudge: the layout survives, the letters do
    not. The caption names the string (short caption) and spells it out
    (detailed caption). ``text`` overrides the drawn string after all random draws.
    """
    length = int(rng.integers(2, 5))
    drawn = "".join(_pick(rng, _GLYPH_ALPHABET) for _ in range(length))
    zoom = int(rng.integers(3, 5))
    pairs = [("white", "black"), ("black", "white"), ("yellow", "dark blue"), ("green", "black"), ("cyan", "purple")]
    ink_name, paper_name = pairs[int(rng.integers(len(pairs)))]
    row_gap = int(rng.integers(2, 5)) * zoom
    word_gap = int(rng.integers(3, 7)) * zoom
    off_y = int(rng.integers(0, 12))
    off_x = int(rng.integers(0, 24))
    text = drawn if text is None else text.upper()
    palette = {**_COLOURS, **_DARK}
    ink = np.asarray(palette[ink_name], dtype=np.float32)
    paper = np.asarray(palette[paper_name], dtype=np.float32)
    word = _text_bitmap(text, zoom)
    h, w = word.shape
    mask = np.zeros((size, size), dtype=bool)
    for row, y in enumerate(range(off_y, size, h + row_gap)):
        # Alternate rows are shifted by half a word, like brickwork, so columns do not line up.
        shift = (w + word_gap) // 2 if row % 2 else 0
        for x in range(off_x - shift, size, w + word_gap):
            ys, xs = slice(max(y, 0), min(y + h, size)), slice(max(x, 0), min(x + w, size))
            mask[ys, xs] |= word[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    canvas = np.where(mask[..., None], ink, paper).astype(np.float32)
    spelled = ", ".join(text[:-1]) + f" and {text[-1]}"
    return CaptionedImage(
        image=canvas,
        captions=[
            f'the text "{text}"',
            f"rows of the characters {spelled} repeated across the image in {ink_name} blocky pixel letters "
            f"on {paper_name}",
        ],
        name=f"glyphs-{text}",
        augment=False,
    )


# --------------------------------------------------------------- microscopy
_CHANNELS = {
    "green": (0.1, 1.0, 0.2),
    "magenta": (1.0, 0.1, 0.9),
    "red": (1.0, 0.15, 0.1),
    "cyan": (0.1, 0.9, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "blue": (0.25, 0.4, 1.0),
}


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splat of (N, 2) (y, x) points with weights onto a (size, size) float64 grid."""
    y, x = points[:, 0], points[:, 1]
    keep = (y >= 0) & (y < size - 1) & (x >= 0) & (x < size - 1)
    y, x, wts = y[keep], x[keep], weights[keep]
    iy, ix = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - iy, x - ix
    flat = iy * size + ix
    grid = np.bincount(flat, wts * (1 - fy) * (1 - fx), minlength=size * size)
    grid += np.bincount(flat + size, wts * fy * (1 - fx), minlength=size * size)
    grid += np.bincount(flat + 1, wts * (1 - fy) * fx, minlength=size * size)
    grid += np.bincount(flat + size + 1, wts * fy * fx, minlength=size * size)
    return grid.reshape(size, size)


def _filaments(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    from scipy.ndimage import gaussian_filter

    n = max(2, int(round(rng.integers(6, 13) * size / 256)))
    sigma = 0.8
    points, weights = [], []
    for _ in range(n):
        y, x = rng.uniform(0, size, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        bend = rng.normal(0, 0.002)  # gentle drift: filaments bend, they do not coil
        steps = int(rng.uniform(0.6, 1.6) * size / 0.5)
        brightness = rng.uniform(0.7, 1.0)
        turns = np.cumsum(rng.normal(bend, 0.01, size=steps))
        ys = y + 0.5 * np.cumsum(np.sin(angle + turns))
        xs = x + 0.5 * np.cumsum(np.cos(angle + turns))
        points.append(np.stack([ys, xs], axis=1))
        weights.append(np.full(steps, brightness * 0.5))  # 0.5 px steps: weight per unit length
    line = _splat(np.concatenate(points), np.concatenate(weights), size)
    # A 1-px-per-unit-length line blurred by a Gaussian peaks at 1 / (sqrt(2 pi) sigma).
    image = gaussian_filter(line, sigma) * np.sqrt(2 * np.pi) * sigma
    return np.clip(image, 0, 1), n


def _puncta(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    from scipy.ndimage import gaussian_filter

    n = max(4, int(round(rng.integers(80, 241) * (size / 256) ** 2)))
    sigma = rng.uniform(1.2, 2.0)
    points = rng.uniform(2, size - 3, size=(n, 2))
    weights = rng.uniform(0.6, 1.0, size=n) * 2 * np.pi * sigma**2
    image = gaussian_filter(_splat(points, weights, size), sigma)
    return np.clip(image, 0, 1), n


def _nuclei(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    from scipy.ndimage import gaussian_filter

    n = max(1, int(round(rng.integers(4, 11) * (size / 256) ** 2)))
    radii = rng.uniform(10, 20, size=n)
    centres = _scatter_centres(rng, size, radii * 1.3, margin=0.0, gap=4.0)
    image = np.zeros((size, size), dtype=np.float32)
    for y, x, r in centres:
        r = r / 1.3
        ratio = rng.uniform(0.65, 1.0)
        theta = rng.uniform(0, np.pi)
        brightness = rng.uniform(0.75, 1.0)
        y0, y1 = max(int(y - r) - 2, 0), min(int(y + r) + 3, size)
        x0, x1 = max(int(x - r) - 2, 0), min(int(x + r) + 3, size)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        c, s = np.cos(theta), np.sin(theta)
        u = ((xx - x) * c + (yy - y) * s) / r
        v = (-(xx - x) * s + (yy - y) * c) / (r * ratio)
        depth = (1.0 - np.sqrt(u**2 + v**2)) * r  # pixels inside the edge
        # Flat interior with a slightly brighter rim (nuclear envelope) and a soft edge.
        body = np.clip(depth, 0, 1) * (0.75 + 0.25 * np.exp(-(depth**2) / 8)) * brightness
        np.maximum(image[y0:y1, x0:x1], body, out=image[y0:y1, x0:x1])
    return np.clip(gaussian_filter(image, 0.7), 0, 1), len(centres)


def _membranes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    from scipy.ndimage import gaussian_filter

    n = max(3, int(round(rng.integers(10, 21) * (size / 256) ** 2)))
    seeds = rng.uniform(0, size, size=(n, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d2 = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    label = np.argmin(d2, axis=0)
    edge = np.zeros((size, size), dtype=np.float32)
    edge[:-1] += label[:-1] != label[1:]
    edge[:, :-1] += label[:, :-1] != label[:, 1:]
    edge = np.minimum(edge, 1.0)
    image = gaussian_filter(edge, 0.8) * 2.2 * rng.uniform(0.75, 1.0)
    return np.clip(image, 0, 1), n


_STRUCTURE_RENDER = {"filaments": _filaments, "puncta": _puncta, "nuclei": _nuclei, "membranes": _membranes}
_STRUCTURE_WORDS = {
    "filaments": ("filaments", "thin curved {c} filaments crossing the field"),
    "puncta": ("puncta", "{n} tiny bright {c} puncta scattered like dots"),
    "nuclei": ("nuclei", "{n} oval {c} nuclei with smooth edges"),
    "membranes": ("membranes", "a network of thin {c} cell membranes outlining {n} polygonal cells"),
}


def microscopy_scene(
    rng: np.random.Generator, size: int = 256, structures: Sequence[str] | None = None
) -> CaptionedImage:
    """Fluorescence-like image: one or two structure types, each in its own channel colour.

    Filaments (thin curves), puncta (diffraction-limited dots), nuclei (oval
    blobs) or membranes (a polygonal cell-outline network) on black; the
    caption names each structure with its channel colour ("green filaments and
    blue nuclei"). ``structures`` overrides the drawn structure types.
    """
    n_types = int(rng.integers(1, 3))
    order = rng.permutation(len(STRUCTURES))[:n_types]
    drawn = [STRUCTURES[i] for i in order]
    colours = [list(_CHANNELS)[i] for i in rng.permutation(len(_CHANNELS))[:n_types]]
    if "nuclei" in drawn and rng.uniform() < 0.6 and "blue" not in colours:
        colours[drawn.index("nuclei")] = "blue"  # DAPI-like, as in most real stainings
    chosen = list(drawn if structures is None else structures)
    if len(chosen) > len(colours):
        colours += [c for c in _CHANNELS if c not in colours][: len(chosen) - len(colours)]
    canvas = np.full((size, size, 3), 0.02, dtype=np.float32)
    parts_short, parts_long = [], []
    for structure, colour in zip(chosen, colours):
        channel, count = _STRUCTURE_RENDER[structure](rng, size)
        canvas += channel.astype(np.float32)[..., None] * np.asarray(_CHANNELS[colour], dtype=np.float32)
        parts_short.append(f"{colour} {_STRUCTURE_WORDS[structure][0]}")
        parts_long.append(_STRUCTURE_WORDS[structure][1].format(c=colour, n=_count_word(count)))
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return CaptionedImage(
        image=canvas,
        captions=[
            " and ".join(parts_short),
            "fluorescence microscopy image showing " + " and ".join(parts_long) + " on a dark background",
        ],
        name="microscopy-" + "-".join(chosen),
        augment=True,
    )


# ------------------------------------------------------------ alternatives
# The caption words naming what x8 destroys, per family: swapping one for another
# gives the caption of the same layout with a different identity.
CAPTION_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "shape": ("circles", "squares", "triangles", "crosses"),
    "pattern": tuple(short for short, _ in _PATTERN_WORDS.values()),
    "structure": STRUCTURES,
}


def caption_alternatives(caption: str) -> tuple[str, list[str], int] | None:
    """For a synthetic short caption, the same caption with each alternative identity.

    Returns (family, captions, index of the given one), e.g. for
    ``"red circles on black"``: ("shape", ["red circles on black", "red squares on black", ...], 0);
    None when the caption names no known identity. Counterfactual captions for
    tests of text guidance ("does the true caption beat the same scene's wrong one?")
    and for the encoder's attribute retrieval.
    """
    import re

    for family, words in CAPTION_ALTERNATIVES.items():
        # Longest first, so "rising diagonal stripes" is not read as another phrase's part.
        for word in sorted(words, key=len, reverse=True):
            match = re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", caption)
            if match:
                swapped = [caption[: match.start()] + w + caption[match.end() :] for w in words]
                return family, swapped, list(words).index(word)
    return None


# ------------------------------------------------------------------ public
_SCENES: dict[str, Callable[[np.random.Generator, int], CaptionedImage]] = {
    "shapes": shapes_scene,
    "textures": texture_scene,
    "glyphs": glyph_scene,
    "microscopy": microscopy_scene,
}


def synthetic_scene(kind: str, rng: np.random.Generator, size: int = 256) -> CaptionedImage:
    """One scene of ``kind`` (see SYNTHETIC_KINDS): float32 (size, size, 3) in [0, 1], two captions
    (short, detailed). Deterministic given the rng state."""
    if kind not in _SCENES:
        raise ValueError(f"unknown synthetic scene kind {kind!r}; choose from {SYNTHETIC_KINDS}")
    if size < 32:
        raise ValueError(f"synthetic scenes need size >= 32 pixels, got {size}")
    return _SCENES[kind](rng, size)


def iter_synthetic(n: int, seed: int, size: int = 256, kinds: Sequence[str] | None = None) -> Iterator[CaptionedImage]:
    """The scenes of :func:`synthetic_dataset`, one at a time (for large sets: hold only what you keep)."""
    kinds = tuple(kinds) if kinds else SYNTHETIC_KINDS
    unknown = [k for k in kinds if k not in _SCENES]
    if unknown:
        raise ValueError(f"unknown synthetic scene kind(s) {unknown}; choose from {SYNTHETIC_KINDS}")
    for i in range(n):
        item = synthetic_scene(kinds[i % len(kinds)], np.random.default_rng([seed, i]), size)
        item.name = f"synthetic-{seed}-{i:05d}-{item.name}"
        yield item


def synthetic_dataset(n: int, seed: int, size: int = 256, kinds: Sequence[str] | None = None) -> list[CaptionedImage]:
    """``n`` scenes cycling through ``kinds`` (default: all), scene i drawn from its own
    rng seeded by (seed, i): the first k scenes are the same whatever ``n`` is.
    Names are ``synthetic-<seed>-<i>-<scene>`` (unique, stable for the val split)."""
    return list(iter_synthetic(n, seed, size, kinds))
