"""Running a progress generator to its end (the engines report progress by yielding and return their result)."""

from __future__ import annotations

from typing import Any, Callable, Generator, TypeVar

__all__ = ["drive"]

Event = TypeVar("Event")
Result = TypeVar("Result")


def drive(generator: Generator[Event, Any, Result], on_event: Callable[[Event], Any] | None = None) -> Result:
    """Run ``generator`` to its end and return its return value (``StopIteration.value``).

    ``on_event(event)`` is called with every yielded event; to stop early it
    raises (the exception propagates). The generator is closed in every case,
    so a run stopped by an exception cleans up (``GeneratorExit`` at its yield).
    """
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)
    finally:
        generator.close()
