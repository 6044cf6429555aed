from __future__ import annotations

import pytest

from pipeline.offsets import OffsetTracker


def test_commit_point_waits_for_the_lowest_unfinished_offset() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for off in (10, 11, 12):
        t.track("p0", off)
    t.done("p0", 11)
    t.done("p0", 12)
    assert t.committable() == {}
    t.done("p0", 10)
    assert t.committable() == {"p0": 13}


def test_committed_partitions_are_not_offered_again_until_they_advance() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.track("p0", 0)
    t.done("p0", 0)
    t.mark_committed(t.committable())
    assert t.committable() == {}
    t.track("p0", 1)
    t.done("p0", 1)
    assert t.committable() == {"p0": 2}


def test_partitions_are_independent() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.track("a", 5)
    t.track("b", 7)
    t.done("b", 7)
    assert t.committable() == {"b": 8}
    assert t.pending() == 1 and t.pending("a") == 1


def test_forgotten_partition_ignores_late_completions() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.track("a", 1)
    t.forget(["a"])
    t.done("a", 1)
    assert t.committable() == {}
    assert t.pending() == 0


def test_out_of_order_tracking_is_refused() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.track("a", 3)
    with pytest.raises(ValueError):
        t.track("a", 2)
