"""Fixtures and helpers shared by the napari plugin tests (test_napari_*.py)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest


def display_has_opengl() -> bool:
    """Whether a real napari Viewer can draw here.

    A Qt viewer creates OpenGL visuals for every layer. Qt's ``offscreen``
    platform gets an OpenGL context only through an X display (Xvfb is
    enough), so without one the tests use a ``ViewerModel``: the widgets only
    need the viewer model (layers, dims), not its window.
    """
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return os.environ.get("QT_QPA_PLATFORM") != "offscreen"


@pytest.fixture
def viewer(request, qtbot):
    """A napari Viewer (``make_napari_viewer``) where OpenGL works, else a ViewerModel."""
    if display_has_opengl():
        return request.getfixturevalue("make_napari_viewer")()
    from napari.components import ViewerModel

    return ViewerModel()


def dock(viewer, widget, qtbot):
    """Dock ``widget`` in the viewer's window (a real viewer) or hand it to qtbot for cleanup."""
    window = getattr(viewer, "window", None)
    if window is not None:
        window.add_dock_widget(widget)
    else:
        qtbot.addWidget(widget)
    return widget


def wait_idle(qtbot, widget, timeout: int = 60_000) -> None:
    """Wait until the widget's worker has finished and its controls are unlocked."""
    qtbot.waitUntil(lambda: not widget.is_running, timeout=timeout)


class Notifications(list):
    """Collects napari notifications while alive (use as a fixture)."""

    def of(self, severity: str) -> list[str]:
        return [str(n.message) for n in self if str(n.severity).lower().endswith(severity)]


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    collected = Notifications()
    notification_manager.notification_ready.connect(collected.append)
    yield collected
    notification_manager.notification_ready.disconnect(collected.append)


def grey_image(shape=(40, 48), seed=0, dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.random(shape)
    if np.issubdtype(dtype, np.integer):
        return (data * np.iinfo(dtype).max * 0.8).astype(dtype)
    return data.astype(dtype)
