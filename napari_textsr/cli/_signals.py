"""Stop a training command cleanly on Ctrl-C (SIGINT) or SIGTERM (what SLURM, docker and ``timeout`` send)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


@contextlib.contextmanager
def stop_on_signals(
    request_stop: Callable[[], None], stop_requested: Callable[[], bool], *, announce: bool = True
) -> Iterator[None]:
    """While the block runs, the first SIGINT or SIGTERM calls ``request_stop`` (finish the step,
    save, exit); a second one raises KeyboardInterrupt (stop at once). Previous handlers are restored.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """

    def on_signal(signum, frame):  # noqa: ARG001
        if stop_requested():
            raise KeyboardInterrupt
        request_stop()
        if announce:
            name = signal.Signals(signum).name
            print(
                f"\n{name}: stopping after this step and saving (send it again to abort without saving)",
                file=sys.stderr,
                flush=True,
            )

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, on_signal)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
