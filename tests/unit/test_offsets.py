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


@pytest.mark.parametrize("seed", range(40))
def test_done_many_moves_the_commit_point_as_done_one_by_one_does(seed: int) -> None:
    """Runs of a partition's tracked offsets (with gaps, as transaction markers leave),
    finished in any order, some already finished one by one: the same commit points."""
    import random

    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(400), 120))
    one: OffsetTracker[str] = OffsetTracker()
    many: OffsetTracker[str] = OffsetTracker()
    for off in offsets:
        one.track("p", off)
        many.track("p", off)
    cuts = sorted(rng.sample(range(1, len(offsets)), 9))
    runs = [offsets[a:b] for a, b in zip([0, *cuts], [*cuts, len(offsets)], strict=True)]
    rng.shuffle(runs)
    for run in runs:
        if rng.random() < 0.2:  # a stray one finished alone first (a dead letter's own ack)
            stray = rng.choice(run)
            one.done("p", stray)
            many.done("p", stray)
        for off in run:
            one.done("p", off)
        many.done_many("p", run)
        assert many.committable() == one.committable()
        assert many.pending("p") == one.pending("p")
    assert many.committable() == {"p": offsets[-1] + 1}


def test_done_many_of_a_forgotten_partition_is_ignored() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.track("p", 0)
    t.forget(["p"])
    t.done_many("p", [0])
    assert t.committable() == {}


def test_track_many_is_track_of_each_and_refuses_what_goes_back() -> None:
    many: OffsetTracker[str] = OffsetTracker()
    each: OffsetTracker[str] = OffsetTracker()
    runs = [[3, 4, 5], [], [9], [10, 12, 13]]  # gaps: compacted records, transaction markers
    for run in runs:
        many.track_many("p0", run)
        for off in run:
            each.track("p0", off)
    assert many.pending("p0") == each.pending("p0") == 7
    for off in (3, 4, 9):
        many.done("p0", off)
        each.done("p0", off)
    assert many.committable() == each.committable() == {"p0": 5}
    many.done_many("p0", [5, 9, 10])
    assert many.committable() == {"p0": 11}
    with pytest.raises(ValueError, match="out of order"):
        many.track_many("p0", [13, 14])
    assert many.pending("p0") == 2  # 12 and 13: the refused run was not taken


def test_a_long_run_of_batches_keeps_its_commit_points_while_finished_offsets_are_cut() -> None:
    """Past a few thousand finished offsets the partition's list is cut: commit points,
    pending counts and out-of-order finishes read the same across the cuts."""
    import random

    rng = random.Random(7)
    offsets = sorted(rng.sample(range(60_000), 30_000))  # gaps, as transaction markers leave
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track_many("p", offsets[:10_000])
    runs, at = [], 0
    while at < len(offsets):
        size = rng.randint(1, 700)
        runs.append(offsets[at:at + size])
        at += size
    done = 0
    tracked = 10_000
    i = 0
    while i < len(runs):
        # now and then two batches finish in the wrong order
        pair = [runs[i + 1], runs[i]] if i + 1 < len(runs) and rng.random() < 0.2 else [runs[i]]
        for run in pair:
            while tracked < min(len(offsets), done + 12_000):  # the consumer reads ahead
                tracker.track_many("p", offsets[tracked:tracked + 2_000])
                tracked += len(offsets[tracked:tracked + 2_000])
            tracker.done_many("p", run)
        done += sum(map(len, pair))
        i += len(pair)
        assert tracker.committable() == {"p": offsets[done - 1] + 1}
        assert tracker.pending("p") == tracked - done
        tracker.mark_committed(tracker.committable())
    assert done == len(offsets) and tracker.pending() == 0
    assert len(tracker._parts["p"].pending) < len(offsets) // 2  # the finished ones were cut on the way
