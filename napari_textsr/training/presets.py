"""Names of the degradation families and what each draws, without torch (for help texts and pickers).

The families' settings are in :mod:`napari_textsr.training.degradations`
(``DEGRADATION_PRESETS``); a test checks both name the same families.
"""

from __future__ import annotations

# The default family of `textsr train` and the Train widget, and each family in a user's words.
DEFAULT_PRESET = "realistic"
DEGRADATION_PRESET_TITLES: dict[str, str] = {
    "bicubic": "antialiased bicubic only, the benchmark convention",
    "realistic": "blur, five resize kernels, camera noise, JPEG",
    "microscopy": "optics blur, binning, shot noise, no JPEG",
}


def describe_presets(default_mark: str = " (default)") -> str:
    """One phrase per named family, ``'name': what it draws``, the default marked; for help texts."""
    return "; ".join(
        f"'{name}'{default_mark if name == DEFAULT_PRESET else ''}: {title}"
        for name, title in DEGRADATION_PRESET_TITLES.items()
    )
