from __future__ import annotations

from pipeline.worker import poll_timeout_ms


def test_poll_waits_no_longer_than_the_open_window_may() -> None:
    assert poll_timeout_ms(deadline=10.005, now=10.0) == 6  # rounds up: never wakes early
    assert poll_timeout_ms(deadline=9.0, now=10.0) == 0  # already due: do not block


def test_poll_without_an_open_window_is_capped() -> None:
    assert poll_timeout_ms(deadline=None, now=0.0) == 100
    assert poll_timeout_ms(deadline=60.0, now=0.0) == 100
