"""The pieces of /metrics that are pure: histogram buckets and the seconds-to-drain signal."""

from __future__ import annotations

import math

from pipeline.metrics import Drain, Histogram


def test_histogram_buckets_are_cumulative_with_the_sum() -> None:
    h = Histogram(bounds=(0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.005, 0.05, 3.0):
        h.observe(value)
    assert h.buckets() == [("0.001", 2), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    assert h.n == 5 and math.isclose(h.total, 3.0565)


def test_seconds_to_drain_is_lag_over_the_answering_rate() -> None:
    now = [0.0]
    drain = Drain(clock=lambda: now[0])
    drain.update(0)
    assert drain.seconds(500) == math.inf  # lag and no progress seen yet
    now[0] = 1.0
    drain.update(100)  # 100/s
    assert drain.seconds(500) == 5.0
    now[0] = 2.0
    drain.update(400)  # 300/s, smoothed with 100/s
    assert drain.rate == 200.0 and drain.seconds(400) == 2.0
    assert drain.seconds(0) == 0.0
