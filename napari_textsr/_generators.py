"""Running a progress generator to its end (the engines report progress by yielding and return their result).

:func:`drive` runs one where nothing is yielded further (a CLI, a script);
:func:`relay` passes one's events on from inside another generator.
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Iterable, TypeVar

__all__ = ["drive", "relay"]

Event = TypeVar("Event")
Item = TypeVar("Item")
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


def relay(
    generator: Generator[Event, Any, Result], each: Callable[[Event], Iterable[Item]]
) -> Generator[Item, None, Result]:
    """Yield the items of ``each(event)`` for every event of ``generator``; return its return value.

    For a generator that passes another's progress on, changed or with other
    items in between: ``result = yield from relay(inner, lambda e: [changed(e)])``.
    ``generator`` is closed in every case, also when the outer generator is
    closed or thrown into at one of these yields.
    """
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as stop:
                return stop.value
            yield from each(event)
    finally:
        generator.close()
