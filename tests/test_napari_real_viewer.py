"""The widgets in a real napari window (Qt viewer, docks), as people use them.

Needs an X display with OpenGL (Xvfb is enough: ``.ci/run`` runs the suite
under ``xvfb-run``); skipped without one.
"""

from __future__ import annotations

import threading
import time

import pytest

from napari_support import display_has_opengl, grey_image, notifications  # noqa: F401 (fixtures)
from napari_textsr.napari.model_store import ModelStore
from napari_textsr.napari.sr_widget import SuperResolutionWidget
from napari_textsr.napari.train_widget import TrainingWidget

pytestmark = pytest.mark.skipif(not display_has_opengl(), reason="needs an X display with OpenGL (run under xvfb-run)")

PDN2 = "random:pdn:2:tiny"
SCREEN = (1280, 720)


@pytest.fixture
def real_viewer(make_napari_viewer):
    return make_napari_viewer()


def wait_loaded(widget, qtbot):
    qtbot.waitUntil(lambda: widget.model_info.text() not in ("", "loading…"), timeout=60_000)


def rect_in(widget, ancestor):
    from qtpy.QtCore import QRect

    top_left = widget.mapTo(ancestor, widget.rect().topLeft())
    return QRect(top_left, widget.size())


def test_both_docks_fit_a_1280x720_screen(real_viewer, qtbot):
    from qtpy.QtCore import Qt

    real_viewer.add_image(grey_image((32, 32)), name="cells", metadata={"caption": "nuclei"})
    store = ModelStore()
    sr = SuperResolutionWidget(real_viewer, store=store)
    train = TrainingWidget(real_viewer, store=store)
    sr_dock = real_viewer.window.add_dock_widget(sr, name="Text-guided super-resolution", area="right")
    train_dock = real_viewer.window.add_dock_widget(train, name="Train / fine-tune", area="right")
    window = real_viewer.window._qt_window
    window.resize(*SCREEN)
    window.show()
    qtbot.waitUntil(lambda: window.isVisible())
    qtbot.wait(200)
    wait_loaded(sr, qtbot)

    # what the window can shrink to: the screen, with both docks stacked on the right
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1], hint
    assert (window.width(), window.height()) == SCREEN
    assert sr_dock.minimumSizeHint().width() < 420 and train_dock.minimumSizeHint().width() < 420
    assert sr_dock.minimumSizeHint().height() + train_dock.minimumSizeHint().height() < SCREEN[1] - 80
    # the buttons are on screen, inside the window
    for button in (sr.run_button, train.start_button):
        assert button.isVisible()
        assert window.rect().contains(rect_in(button, window)), rect_in(button, window)
    # no horizontal scrolling: the controls fit the width each dock gets, with every section open,
    # and still when the dock is dragged to its narrowest
    for section in list(sr.sections.values()) + list(train.sections.values()):
        section.set_collapsed(False)
    qtbot.wait(200)
    for widget in (sr, train):
        assert widget.body.minimumSizeHint().width() <= widget.scroll.viewport().width()
        assert not widget.scroll.horizontalScrollBar().isVisible()
    assert train_dock.minimumSizeHint().width() < 420 and sr_dock.minimumSizeHint().width() < 420
    window.resizeDocks([sr_dock], [10], Qt.Horizontal)  # as narrow as the docks allow
    qtbot.wait(200)
    assert sr_dock.width() < 420 and sr_dock.width() <= train_dock.minimumSizeHint().width() + 2
    for widget in (sr, train):
        assert widget.body.width() <= widget.scroll.viewport().width()
        assert not widget.scroll.horizontalScrollBar().isVisible()
        assert widget.scroll.horizontalScrollBar().maximum() == 0
    # nothing drawn over the "Folder" row
    table = rect_in(train.layer_table, train.body)
    folder = rect_in(train.folder_edit, train.body)
    assert not table.intersects(folder) and table.bottom() < folder.top()


def test_closing_the_dock_during_a_run_cancels_it_and_adds_nothing(real_viewer, qtbot, monkeypatch, notifications):
    from napari_textsr.napari import jobs

    original = jobs.iter_job
    release = threading.Event()

    def held_iter_job(job, upscaler, cancel):  # after the first tile, hold until released (or cancelled)
        generator = original(job, upscaler, cancel)
        yield next(generator)
        while not (cancel.is_set() or release.is_set()):
            time.sleep(0.01)
        return (yield from generator)

    monkeypatch.setattr(jobs, "iter_job", held_iter_job)
    real_viewer.add_image(grey_image((64, 64)), name="big")
    widget = SuperResolutionWidget(real_viewer, store=ModelStore())
    dock = real_viewer.window.add_dock_widget(widget, name="Text-guided super-resolution")
    widget.select_model(PDN2)
    wait_loaded(widget, qtbot)
    widget.tile_combo.addItem("16 px", 16)
    widget.tile_combo.setCurrentIndex(widget.tile_combo.count() - 1)
    n_layers = len(real_viewer.layers)

    widget.run_button.click()
    qtbot.waitUntil(lambda: widget._last_event is not None and widget._last_event.done >= 1, timeout=60_000)
    run = widget._run
    dock.destroyOnClose()  # what the dock's close button does (no closeEvent reaches the widget)
    assert widget.closed and widget._cancel.is_set()
    release.set()  # even if the worker went on, nothing may be added
    qtbot.waitUntil(lambda: run.done, timeout=60_000)
    qtbot.wait(300)
    assert len(real_viewer.layers) == n_layers
    assert not [lay for lay in real_viewer.layers if lay.name.startswith("big x2")]
    assert not notifications.of("error")


def test_closing_napari_while_a_model_loads_raises_nothing(make_napari_viewer, qtbot, monkeypatch):
    import sys

    from napari_textsr.napari.model_store import ModelStore as Store

    errors = []  # a deleted worker's signal raised in napari's thread pool before (sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: errors.append(value))
    started, original_get = threading.Event(), Store.get

    def slow_get(self, spec, device="auto", scale=None):
        started.set()
        time.sleep(1.0)
        return original_get(self, spec, device, scale)

    monkeypatch.setattr(Store, "get", slow_get)
    viewer = make_napari_viewer()
    widget = SuperResolutionWidget(viewer, store=Store())
    viewer.window.add_dock_widget(widget)
    widget.select_model(PDN2)
    assert widget.model_info.text() == "loading…"
    assert started.wait(10)
    viewer.close()  # while the model loads
    deadline = time.monotonic() + 5
    while any(t.name == "napari-textsr model loader" for t in threading.enumerate()) and time.monotonic() < deadline:
        qtbot.wait(50)
    qtbot.wait(200)  # let a queued delivery arrive, if any
    assert not any(t.name == "napari-textsr model loader" for t in threading.enumerate())
    assert errors == []
