"""Keeping widgets' event connections so they can be undone when the widget goes away."""

from __future__ import annotations

from typing import Any


def disconnect_all(connections: list[tuple[Any, Any]], *_: Any) -> None:
    """Disconnect every (emitter, callback) pair; pairs whose emitter is already gone are skipped.

    Connected to a widget's ``destroyed`` signal: napari deletes dock widgets'
    Qt side first, and a later layer event must not reach a deleted widget.
    """
    while connections:
        emitter, callback = connections.pop()
        try:
            emitter.disconnect(callback)
        except (RuntimeError, ValueError, TypeError):
            pass
