"""Parts the dock widgets share: a layer-listening base, pickers, sections, background work.

* :class:`DockWidget`: the base of both dock widgets. Its controls live in a
  scroll area (so a dock never forces the window taller than a laptop screen),
  grouped in :class:`Section` s (:meth:`DockWidget.add_section`; collapsible,
  and the way another part of the plugin adds its own group of controls). It
  listens to the viewer's layer list, stops listening when the widget goes
  away, and calls :meth:`DockWidget.shutdown` when napari removes the dock:
  napari's close button calls ``Window.remove_dock_widget``, which takes the
  widget out of its dock (``setParent(None)``) without a ``closeEvent``, so
  the widget watches for that parent change.
* :class:`ModelPicker` and :class:`DevicePicker`: the combo boxes of models
  (from the :class:`~napari_textsr.napari.model_store.ModelStore`, kept up to
  date when a checkpoint is registered) and devices, narrow whatever their
  longest entry.
* :class:`BackgroundRun`: one napari ``thread_worker`` wired to the widget's
  callbacks and to a napari progress bar, with the GUI-side updates throttled
  (repainting the status line and the activity dialog after every tile or step
  kept the GUI thread busy) and every callback skipped once the widget is gone.
* :func:`load_in_background`: load a model off the GUI thread and hand it back
  on the GUI thread, safe when the widget or the whole viewer closes meanwhile.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable

from napari.layers import Image
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, Qt, Signal, Slot
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_textsr.napari._connections import disconnect_all
from napari_textsr.napari.model_store import GROUP_TITLES, ModelChoice, ModelStore

if TYPE_CHECKING:
    import napari

# A combo box shows at least this many characters and never sizes to its longest entry.
COMBO_MIN_CHARS = 10
# GUI-side updates from a worker (status line, progress bars, plots) at most this often.
UPDATE_INTERVAL_S = 0.25


def is_alive(widget: QObject) -> bool:
    """False once Qt has deleted the C++ side of ``widget`` (its Python wrapper may live on)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def compact_combo(combo: QComboBox, min_chars: int = COMBO_MIN_CHARS) -> QComboBox:
    """Let ``combo`` be narrow: it no longer sizes to its longest entry, long entries are elided
    in the box (the full text stays in the drop-down list and the tooltip)."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(min_chars)
    combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    combo.view().setTextElideMode(Qt.ElideRight)
    combo.view().setMinimumWidth(0)
    return combo


def available_devices() -> list[str]:
    """``auto`` plus the devices torch can use here."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] * (torch.cuda.device_count() > 1)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


class DevicePicker(QComboBox):
    """``auto``, ``cpu`` and the accelerators torch sees here."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItems(available_devices())
        self.setToolTip(
            "Where the network runs: auto = CUDA GPU if present, then Apple MPS, then the CPU. "
            "A model is loaded once per device."
        )
        compact_combo(self, 6)


class ModelPicker(QComboBox):
    """The models of a :class:`ModelStore`, grouped under disabled group titles.

    ``groups``: which store groups to offer (all by default); ``leading``:
    (label, data) entries put first (e.g. "new model"); ``prefix``: put before
    every model's label (e.g. "fine-tune "). ``itemData`` of a model entry is
    its spec; :meth:`choice` gives its :class:`ModelChoice`. The list follows
    ``store.checkpoint_registered``; ``refreshed`` is emitted after each refill.
    """

    refreshed = Signal()

    def __init__(
        self,
        store: ModelStore,
        *,
        groups: Iterable[str] | None = None,
        leading: Iterable[tuple[str, Any]] = (),
        prefix: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.groups = tuple(groups) if groups is not None else None
        self.leading = list(leading)
        self.prefix = prefix
        self._choices: dict[str, ModelChoice] = {}
        compact_combo(self)

    def refill(self, select: Any = None) -> None:
        """Rebuild the list, keeping the current entry (or choosing ``select``) without emitting
        ``currentIndexChanged``; ``select`` is ignored when it is not listed."""
        current = select if select is not None else self.currentData()
        self.blockSignals(True)
        self.clear()
        self._choices = {}
        for label, data in self.leading:
            self.addItem(label, data)
        group = None
        for choice in self.store.choices():
            if self.groups is not None and choice.group not in self.groups:
                continue
            if choice.group != group:
                if self.count():
                    self.insertSeparator(self.count())
                self.addItem(f"— {GROUP_TITLES[choice.group]} —", None)
                self.model().item(self.count() - 1).setEnabled(False)
                group = choice.group
            self.addItem(self.prefix + choice.label, choice.spec)
            self.setItemData(self.count() - 1, choice.tooltip or choice.label, Qt.ToolTipRole)
            self._choices[choice.spec] = choice
        index = self.findData(current) if current is not None else -1
        if index >= 0:
            self.setCurrentIndex(index)
        self.blockSignals(False)
        self._update_tooltip()
        self.refreshed.emit()

    def specs(self) -> list[Any]:
        return [self.itemData(i) for i in range(self.count())]

    def choice(self, spec: str | None = None) -> ModelChoice | None:
        """The :class:`ModelChoice` of ``spec`` (default: the current entry), None for other entries."""
        return self._choices.get(self.currentData() if spec is None else spec)

    def choices(self) -> list[ModelChoice]:
        return list(self._choices.values())

    def select(self, data: Any) -> bool:
        """Make the entry with ``data`` current; False if there is none."""
        index = self.findData(data)
        if index < 0:
            return False
        self.setCurrentIndex(index)
        return True

    def _update_tooltip(self) -> None:
        self.setToolTip(str(self.itemData(self.currentIndex(), Qt.ToolTipRole) or self.currentText()))

    def showPopup(self) -> None:  # noqa: N802 (Qt name): the list is as wide as its entries
        view = self.view()
        view.setMinimumWidth(max(self.width(), view.sizeHintForColumn(0) + 24))
        super().showPopup()


class Section(QWidget):
    """A titled group of controls in a :class:`QFormLayout` (``form``), optionally collapsible.

    Rows wrap (field below its label) when the dock is too narrow for both side
    by side, so a narrow dock needs no horizontal scrolling. ``collapsed_changed``
    is emitted with the new state.
    """

    collapsed_changed = Signal(bool)

    def __init__(
        self, title: str, *, collapsible: bool = True, collapsed: bool = False, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName(f"section: {title}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setStyleSheet("QToolButton { font-weight: bold; border: none; }")
        self.header.setCheckable(collapsible)
        self.header.setEnabled(True)
        self.collapsible = collapsible
        layout.addWidget(self.header)
        self.content = QFrame()
        self.form = QFormLayout(self.content)
        self.form.setContentsMargins(8, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        layout.addWidget(self.content)
        if collapsible:
            self.header.setToolTip(f"Show or hide “{title}”")
            self.header.toggled.connect(lambda checked: self.set_collapsed(not checked))
        self.set_collapsed(collapsed and collapsible)

    @property
    def collapsed(self) -> bool:
        return self.content.isHidden()

    def set_collapsed(self, collapsed: bool) -> None:
        self.content.setVisible(not collapsed)
        if self.collapsible:
            self.header.blockSignals(True)
            self.header.setChecked(not collapsed)
            self.header.blockSignals(False)
            self.header.setArrowType(Qt.RightArrow if collapsed else Qt.DownArrow)
        self.collapsed_changed.emit(collapsed)

    def add_row(self, label: str | QWidget | None, field: Any = None) -> None:
        """``form.addRow`` that also takes a lone widget or layout (spanning both columns)."""
        if field is None:
            self.form.addRow(label)
        else:
            self.form.addRow(label if label is not None else "", field)


class DockWidget(QWidget):
    """Base of the plugin's dock widgets (see the module docstring).

    Layout: ``sections`` in a scroll area (``scroll``, its widget ``body``),
    then ``footer`` (a layout for buttons, progress bar and status line that
    stay visible). Subclasses call :meth:`listen` for every viewer event they
    connect, implement :meth:`refresh_layers` (called when layers are added,
    removed, moved or renamed) and :meth:`on_shutdown` (cancel their work).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, store: ModelStore) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.store = store
        self.sections: dict[str, Section] = {}
        self._connections: list[tuple[Any, Any]] = []
        self._closed = False
        self._docked = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(6, 4, 6, 4)
        self.body_layout.addStretch(1)
        self.scroll.setWidget(self.body)
        outer.addWidget(self.scroll, 1)
        self.footer = QVBoxLayout()
        self.footer.setContentsMargins(6, 0, 6, 6)
        outer.addLayout(self.footer)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.status_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        # Qt deletes the widget's C++ side first when napari deletes a dock:
        # stop listening then, or the next layer event would touch a deleted widget.
        self.destroyed.connect(partial(disconnect_all, self._connections))
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)

    # ------------------------------------------------------------------ layout
    PREFERRED_WIDTH = 390

    def content_min_width(self) -> int:
        """The narrowest width (px) that shows the controls without horizontal scrolling."""
        scroll_bar = self.scroll.verticalScrollBar().sizeHint().width()
        return self.body.minimumSizeHint().width() + scroll_bar + 2 * self.scroll.frameWidth()

    def minimumSizeHint(self):  # noqa: N802 (Qt name): never narrower than the controls
        hint = super().minimumSizeHint()
        hint.setWidth(max(hint.width(), self.content_min_width()))
        return hint

    def sizeHint(self):  # noqa: N802 (Qt name): wide enough for the controls, never more than ~400 px
        hint = super().sizeHint()
        body = self.body.sizeHint()
        scroll_bar = self.scroll.verticalScrollBar().sizeHint().width()
        width = min(max(body.width() + scroll_bar + 4, 300), self.PREFERRED_WIDTH)
        hint.setWidth(max(width, self.content_min_width()))
        return hint

    def add_section(
        self,
        title: str,
        *,
        collapsible: bool = True,
        collapsed: bool = False,
        after: str | None = None,
        into: QVBoxLayout | None = None,
    ) -> Section:
        """A new :class:`Section` in the scroll area: at the end, right after section ``after``,
        or at the end of the layout ``into`` (a group of sections in one container)."""
        section = Section(title, collapsible=collapsible, collapsed=collapsed)
        if into is not None:
            into.addWidget(section)
        else:
            if after is not None:
                neighbour = self.sections[after]
                layout = neighbour.parentWidget().layout()
                layout.insertWidget(layout.indexOf(neighbour) + 1, section)
            else:
                self.body_layout.insertWidget(self.body_layout.count() - 1, section)  # before the stretch
        self.sections[title] = section
        section.collapsed_changed.connect(lambda _collapsed: self.updateGeometry())  # the minimum width may change
        return section

    # ------------------------------------------------------------------ status
    def set_status(self, text: str, *, error: bool = False) -> None:
        """The status line; ``error`` also shows a napari error notification."""
        if not is_alive(self):
            return
        self.status_label.setText(text)
        if error:
            show_error(text)

    # ------------------------------------------------------------------ viewer events
    def listen(self, emitter: Any, callback: Any) -> None:
        """``emitter.connect(callback)``, undone when the widget goes away."""
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def listen_to_layer_list(self) -> None:
        """Call :meth:`refresh_layers` whenever layers are added, removed, moved or renamed."""
        events = self.viewer.layers.events
        self.listen(events.inserted, self._on_layer_inserted)
        for emitter in (events.removed, events.reordered, events.moved):
            self.listen(emitter, self.refresh_layers)
        for layer in self.viewer.layers:
            self.listen(layer.events.name, self.refresh_layers)

    def _on_layer_inserted(self, event=None) -> None:
        if event is not None and getattr(event, "value", None) is not None:
            self.listen(event.value.events.name, self.refresh_layers)
        self.refresh_layers()

    def refresh_layers(self, event=None) -> None:  # pragma: no cover - overridden
        pass

    def image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    # ------------------------------------------------------------------ going away
    def event(self, event: QEvent) -> bool:
        # napari's dock close button: Window.remove_dock_widget -> widget.setParent(None).
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        super().closeEvent(event)

    @property
    def closed(self) -> bool:
        """True once the widget was closed or taken out of its dock (its work is cancelled)."""
        return self._closed

    def shutdown(self) -> None:
        """Cancel running work (:meth:`on_shutdown`) and stop listening to the viewer; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.on_shutdown()
        disconnect_all(self._connections)

    def on_shutdown(self) -> None:
        """Subclasses: cancel what runs; nothing may be added to the viewer afterwards."""


class BackgroundRun:
    """A napari ``thread_worker`` wired to a widget, with a napari progress bar.

    ``function(*args)`` is a generator run in napari's thread pool. On the GUI
    thread: ``on_each(event)`` for every yielded event (keep it cheap: collect
    data), ``on_update(event)`` with the latest event at most every
    ``interval`` seconds and once more at the end (repaint there), then
    ``on_return(value)`` or ``on_error(exception)``, then ``on_finish()``.
    ``progress(event)`` -> ``(n, description or None)`` drives the napari
    progress bar of ``total`` steps, made before the worker starts and never
    resized (creating a bar or changing its total while a worker emits has
    deadlocked napari's activity dialog). Callbacks stop once ``owner`` is
    deleted or :meth:`DockWidget.shutdown` ran (except ``on_finish``, which
    only runs while the owner is alive).
    """

    def __init__(
        self,
        owner: DockWidget,
        function: Callable[..., Any],
        *args: Any,
        total: int,
        description: str,
        progress: Callable[[Any], tuple[int, str | None]] | None = None,
        on_each: Callable[[Any], None] | None = None,
        on_update: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        interval: float = UPDATE_INTERVAL_S,
    ) -> None:
        from napari.qt.threading import create_worker

        self.owner = owner
        self.interval = interval
        self._progress, self._on_each, self._on_update = progress, on_each, on_update
        self._on_return, self._on_error, self._on_finish = on_return, on_error, on_finish
        self._last_update = 0.0
        self._pending: Any = None
        self._description: str | None = None
        self.last_event: Any = None
        self.done = False
        self.worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.pbar = napari_progress(total=total, desc=description)

    def start(self) -> None:
        self.worker.start()

    def _live(self) -> bool:
        return not self.owner.closed and is_alive(self.owner)

    def _yielded(self, event: Any) -> None:
        if self.done or not self._live():
            return
        self.last_event = event
        if self._on_each is not None:
            self._on_each(event)
        self._pending = event
        now = time.perf_counter()
        if now - self._last_update >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Pass the latest event to ``on_update`` and the progress bar now."""
        event, self._pending = self._pending, None
        if event is None or not self._live():
            return
        self._last_update = time.perf_counter()
        if self._on_update is not None:
            self._on_update(event)
        bar = self.pbar
        if bar is not None and self._progress is not None:
            n, description = self._progress(event)
            if description is not None and description != self._description:
                self._description = description
                bar.set_description(description)
            if bar is self.pbar:  # the run may have ended inside set_description (re-entrant events)
                bar.update(max(0, min(n, bar.total) - bar.n))

    def _returned(self, value: Any) -> None:
        self.flush()
        if self._live() and self._on_return is not None:
            self._on_return(value)

    def _errored(self, error: Exception) -> None:
        if self._live() and self._on_error is not None:
            self._on_error(error)

    def _finished(self) -> None:
        self.done = True
        self.close_progress()
        if is_alive(self.owner) and self._on_finish is not None:
            self._on_finish()

    def close_progress(self) -> None:
        if self.pbar is not None:
            bar, self.pbar = self.pbar, None
            bar.close()


class _Delivery(QObject):
    """Carries a result from a loader thread to the GUI thread (queued signal).

    The receiving slot is a method of this object, a child of the owner
    widget: when the owner is deleted, Qt deletes this object and drops a
    delivery still queued for it, so no Python code runs against a widget
    being torn down (a plain function as receiver ran in that window and
    could crash the interpreter).
    """

    done = Signal(object, object)

    def __init__(self, owner: QWidget, on_done: Callable[[Any], None], on_fail: Callable[[Exception], None]) -> None:
        super().__init__(owner)
        self._owner, self._on_done, self._on_fail = owner, on_done, on_fail
        self.done.connect(self.deliver, Qt.QueuedConnection)

    @Slot(object, object)
    def deliver(self, result: Any, error: Any) -> None:
        owner = self._owner
        self._owner = None  # one delivery; and no reference kept to a closed widget
        if owner is None or not is_alive(owner) or getattr(owner, "closed", False):
            return
        try:
            if error is not None:
                self._on_fail(error)
            else:
                self._on_done(result)
        finally:
            self.deleteLater()


def load_in_background(
    owner: QWidget,
    load: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_fail: Callable[[Exception], None],
) -> threading.Thread:
    """Run ``load()`` in a thread; call ``on_done(result)`` or ``on_fail(error)`` on the GUI thread.

    Nothing is called once ``owner`` is deleted or closed, and nothing raises
    then: the result goes through a QObject child of ``owner`` (:class:`_Delivery`),
    so when the widget (or the whole viewer) closes during the load, Qt deletes
    it with the widget and the thread's emit is dropped. The thread is not a
    daemon: the interpreter waits for a load in progress instead of tearing
    torch down under it.
    """
    delivery = _Delivery(owner, on_done, on_fail)

    def body() -> None:
        try:
            result, error = load(), None
        except Exception as exc:  # reported on the GUI thread
            result, error = None, exc
        with suppress(RuntimeError):  # the delivery object was deleted with its widget
            delivery.done.emit(result, error)

    thread = threading.Thread(target=body, name="napari-textsr model loader")
    thread.start()
    return thread
