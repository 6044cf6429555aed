from __future__ import annotations

import random

import pytest

from pipeline.batcher import Batch, Batcher, CloseReason, split


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def advance_ms(self, ms: float) -> float:
        self.now += ms / 1000
        return self.now


def test_window_closes_when_it_reaches_max_batch_size() -> None:
    b: Batcher[int] = Batcher(max_batch_size=3, max_batch_bytes=10**9, max_wait_ms=1000)
    assert b.add(1, 1, 0.0) == []
    assert b.add(2, 1, 0.001) == []
    [batch] = b.add(3, 1, 0.002)
    assert batch.items == (1, 2, 3)
    assert batch.reason is CloseReason.SIZE
    assert len(b) == 0 and b.deadline() is None


def test_window_closes_max_wait_after_its_first_item() -> None:
    clock = FakeClock()
    b: Batcher[str] = Batcher(max_batch_size=100, max_batch_bytes=10**9, max_wait_ms=50)
    b.add("a", 1, clock.now)
    assert b.deadline() == pytest.approx(clock.now + 0.050)
    assert b.poll(clock.advance_ms(49)) is None
    batch = b.poll(clock.advance_ms(1))
    assert batch is not None and batch.items == ("a",)
    assert batch.reason is CloseReason.TIME


def test_trickle_input_still_closes_by_time_not_only_by_size() -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(max_batch_size=1000, max_batch_bytes=10**9, max_wait_ms=100)
    closed = []
    for i in range(20):  # one item every max_wait_ms/2
        closed += b.add(i, 1, clock.now)
        if (batch := b.poll(clock.now)) is not None:
            closed.append(batch)
        clock.advance_ms(50)
    assert closed, "a steady trickle must not keep the window open forever"
    assert all(batch.reason is CloseReason.TIME for batch in closed)
    assert all(batch.closed_at - batch.opened_at <= 0.100 + 1e-9 for batch in closed)
    flat = [x for batch in closed for x in batch.items]
    assert flat == list(range(len(flat)))  # nothing lost or reordered


def test_expired_window_is_closed_before_a_late_item_opens_the_next() -> None:
    b: Batcher[int] = Batcher(max_batch_size=10, max_batch_bytes=10**9, max_wait_ms=10)
    b.add(1, 1, 0.0)
    [expired] = b.add(2, 1, 0.5)
    assert expired.items == (1,) and expired.reason is CloseReason.TIME
    assert len(b) == 1 and b.deadline() == pytest.approx(0.51)


def test_window_closes_when_bytes_reach_max_batch_bytes() -> None:
    b: Batcher[str] = Batcher(max_batch_size=100, max_batch_bytes=1000, max_wait_ms=1000)
    assert b.add("a", 400, 0.0) == []
    assert b.add("b", 400, 0.0) == []
    [batch] = b.add("c", 400, 0.0)
    assert batch.reason is CloseReason.BYTES
    assert batch.nbytes == 1200 and batch.items == ("a", "b", "c")


def test_drain_of_an_empty_batcher_returns_nothing() -> None:
    b: Batcher[int] = Batcher(max_batch_size=4, max_batch_bytes=100, max_wait_ms=10)
    assert b.drain(0.0) is None
    assert b.poll(10.0) is None


def test_drain_returns_the_partial_window() -> None:
    b: Batcher[int] = Batcher(max_batch_size=4, max_batch_bytes=100, max_wait_ms=10)
    b.add(7, 1, 0.0)
    batch = b.drain(0.001)
    assert batch is not None and batch.items == (7,) and batch.reason is CloseReason.FLUSH
    assert b.drain(0.002) is None


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(max_batch_size=0, max_batch_bytes=1, max_wait_ms=1)


def test_a_batch_is_re_cut_into_batches_of_a_smaller_cap_in_order_with_their_bytes() -> None:
    batch = Batch((1, 2, 3, 4, 5, 6, 7), 28, opened_at=1.0, closed_at=1.5, reason=CloseReason.SIZE)
    parts = split(batch, 3, nbytes=lambda item: item * 10)
    assert [p.items for p in parts] == [(1, 2, 3), (4, 5, 6), (7,)]
    assert [p.nbytes for p in parts] == [60, 150, 70]
    assert {(p.opened_at, p.closed_at, p.reason) for p in parts} == {(1.0, 1.5, CloseReason.SIZE)}
    assert split(batch, 7, nbytes=len) == [batch]  # nothing to cut: the same batch
    with pytest.raises(ValueError):
        split(batch, 0, nbytes=len)


def test_a_smaller_cap_closes_the_full_part_of_the_open_window_and_keeps_the_rest_open() -> None:
    b: Batcher[int] = Batcher(max_batch_size=8, max_batch_bytes=10**9, max_wait_ms=50)
    for i in range(5):
        assert b.add(i, 10, 1.0 + i / 1000) == []
    assert b.resize(8, 1.01, nbytes=lambda _: 10) == []  # no smaller: nothing closes
    parts = b.resize(2, 1.01, nbytes=lambda _: 10)
    assert [p.items for p in parts] == [(0, 1), (2, 3)]
    assert [p.nbytes for p in parts] == [20, 20] and {p.reason for p in parts} == {CloseReason.SIZE}
    assert len(b) == 1 and b.deadline() == pytest.approx(1.05)  # the rest keeps the window's deadline
    [last] = b.add(5, 10, 1.02)
    assert last.items == (4, 5) and last.nbytes == 20
    with pytest.raises(ValueError):
        b.resize(0, 1.03, nbytes=lambda _: 10)


@pytest.mark.parametrize("max_wait_ms", [0.0, 1e-20, 5.0, 50.0])
@pytest.mark.parametrize("seed", range(20))
def test_extend_closes_the_batches_that_adding_one_by_one_closes(seed: int, max_wait_ms: float) -> None:
    rng = random.Random(seed)
    size, nbytes = rng.choice([1, 3, 8, 256]), rng.choice([1, 40, 300, 10_000])
    one_by_one, extended = Batcher[int](size, nbytes, max_wait_ms), Batcher[int](size, nbytes, max_wait_ms)
    now, item = 0.0, 0
    got: list[Batch[int]] = []
    want: list[Batch[int]] = []
    for _ in range(30):
        now += rng.choice([0.0, 0.001, 0.004, 0.02, 0.1])
        count = rng.choice([0, 1, 2, 7, 50, 600])
        items = list(range(item, item + count))
        sizes = [rng.choice([0, 1, 37, 120, 2_000]) for _ in items]
        item += count
        for i, n in zip(items, sizes, strict=True):
            want.extend(one_by_one.add(i, n, now))
        got.extend(extended.extend(items, sizes, now))
        assert got == want
        assert (len(extended), extended.deadline()) == (len(one_by_one), one_by_one.deadline())
    assert extended.flush(now) == one_by_one.flush(now)
    assert sum(len(b) for b in got) > 0


def test_extend_wants_one_size_per_item() -> None:
    with pytest.raises(ValueError, match="one size per item"):
        Batcher[int](4, 100, 5.0).extend([1, 2], [1], 0.0)
