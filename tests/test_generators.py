"""The two ways of running a progress generator (napari_textsr._generators): its events, its result, its closing."""

from __future__ import annotations

import pytest

from napari_textsr._generators import drive, relay


def _engine(n: int, log: list[str]):
    """Yields 0..n-1 and returns their sum; records whether it finished or was closed."""
    try:
        yield from range(n)
        log.append("finished")
        return n * (n - 1) // 2
    except GeneratorExit:
        log.append("closed")
        raise


def test_drive_returns_the_result_and_passes_every_event():
    log, seen = [], []
    assert drive(_engine(5, log), seen.append) == 10
    assert seen == [0, 1, 2, 3, 4] and log == ["finished"]
    assert drive(_engine(3, log)) == 3  # no callback: just the result


def test_drive_closes_the_generator_when_the_callback_raises():
    log = []

    def stop_at_two(event: int) -> None:
        if event == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(_engine(5, log), stop_at_two)
    assert log == ["closed"]  # the engine saw GeneratorExit at its yield (it can clean up)


def test_relay_yields_what_each_event_gives_and_returns_the_result():
    log = []

    def outer():
        result = yield from relay(_engine(4, log), lambda e: [f"event {e}"] + (["extra"] if e % 2 else []))
        yield f"result {result}"

    assert list(outer()) == ["event 0", "event 1", "extra", "event 2", "event 3", "extra", "result 6"]
    assert log == ["finished"]


def test_closing_the_outer_generator_closes_the_relayed_one():
    log = []
    outer = relay(_engine(5, log), lambda e: [e * 10])
    assert [next(outer), next(outer)] == [0, 10]
    outer.close()
    assert log == ["closed"]
