"""Windowed batching as a pure state machine: no asyncio, no Kafka, time is passed in.

A window opens with its first item and closes when it holds ``max_batch_size`` items,
when its bytes reach ``max_batch_bytes``, or ``max_wait_ms`` after that first item,
whichever comes first. Measuring from the first item (not the last) bounds latency even
for a steady trickle of input. The worker may also close a window early, when the model
that would run it is free (``take``), and may change ``max_batch_size`` as it learns the
model's best batch size (``pipeline.batch_sizing``), and then re-cut the batches already
closed at a larger size (``split``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from typing import Generic, TypeVar

T = TypeVar("T")


class CloseReason(StrEnum):
    SIZE = "size"
    BYTES = "bytes"
    TIME = "time"
    IDLE = "idle"
    FLUSH = "flush"


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    items: tuple[T, ...]
    nbytes: int
    opened_at: float
    closed_at: float
    reason: CloseReason

    def __len__(self) -> int:
        return len(self.items)


class Batcher(Generic[T]):
    def __init__(self, max_batch_size: int, max_batch_bytes: int, max_wait_ms: float) -> None:
        if max_batch_size < 1 or max_batch_bytes < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_batch_bytes must be >= 1, max_wait_ms >= 0")
        self.max_batch_size = max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self.max_wait_s = max_wait_ms / 1000.0
        self._items: list[T] = []
        self._nbytes = 0
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def deadline(self) -> float | None:
        """When the open window must close by time; None when no window is open."""
        return self._opened_at + self.max_wait_s if self._items else None

    def add(self, item: T, nbytes: int, now: float) -> list[Batch[T]]:
        """Add one item; return the batches this closes (an expired window first)."""
        return self.extend((item,), (nbytes,), now)

    def extend(self, items: Sequence[T], sizes: Sequence[int], now: float) -> list[Batch[T]]:
        """Add ``items`` (of ``sizes`` bytes) at ``now``, in order; return the batches this
        closes: the same, closed the same way, as adding them one at a time, in one call (a
        poll's records of a partition) rather than one a record."""
        if len(items) != len(sizes):
            raise ValueError("one size per item")
        closed: list[Batch[T]] = []
        at, total = 0, len(items)
        while at < total:
            if (expired := self.poll(now)) is not None:
                closed.append(expired)
            if not self._items:
                self._opened_at = now
            # a window already due (max_wait 0) takes one item: the next closes it by time
            room = 1 if self._opened_at + self.max_wait_s <= now else max(self.max_batch_size - len(self._items), 1)
            end = min(total, at + room)
            # the window's bytes after each item: the first to reach the limit closes it
            after = list(accumulate(sizes[at:end], initial=self._nbytes))
            taken = min(bisect_left(after, self.max_batch_bytes, 1), end - at)
            self._items.extend(items[at:at + taken])
            self._nbytes = after[taken]
            at += taken
            if len(self._items) >= self.max_batch_size:
                closed.append(self._close(now, CloseReason.SIZE))
            elif self._nbytes >= self.max_batch_bytes:
                closed.append(self._close(now, CloseReason.BYTES))
        return closed

    def poll(self, now: float) -> Batch[T] | None:
        """Close the open window if its time is up."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._close(now, CloseReason.TIME)
        return None

    def flush(self, now: float) -> Batch[T] | None:
        """Close the open window now, whatever its size (shutdown, rebalance)."""
        return self._close(now, CloseReason.FLUSH) if self._items else None

    drain = flush

    def take(self, now: float) -> Batch[T] | None:
        """Close the open window now because its model is free (adaptive batching)."""
        return self._close(now, CloseReason.IDLE) if self._items else None

    def resize(self, max_batch_size: int, now: float, nbytes: Callable[[T], int]) -> list[Batch[T]]:
        """Change the cap; an open window that a smaller cap makes full closes now, as
        batches of the cap (the last of them a window still open if it is short)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        if len(self._items) < max_batch_size:
            return []
        full = len(self._items) - len(self._items) % max_batch_size
        rest, rest_bytes = self._items[full:], sum(nbytes(item) for item in self._items[full:])
        batch = Batch(tuple(self._items[:full]), self._nbytes - rest_bytes, self._opened_at, now, CloseReason.SIZE)
        self._items, self._nbytes = rest, rest_bytes
        return split(batch, max_batch_size, nbytes)

    def _close(self, now: float, reason: CloseReason) -> Batch[T]:
        batch = Batch(tuple(self._items), self._nbytes, self._opened_at, now, reason)
        self._items = []
        self._nbytes = 0
        return batch


def split(batch: Batch[T], size: int, nbytes: Callable[[T], int]) -> list[Batch[T]]:
    """``batch`` as consecutive batches of at most ``size`` items, in order, each with its
    items' bytes (``nbytes`` of each) and the window times and reason of the whole."""
    if size < 1:
        raise ValueError("size must be >= 1")
    if len(batch.items) <= size:
        return [batch]
    parts = []
    for at in range(0, len(batch.items), size):
        items = batch.items[at:at + size]
        parts.append(Batch(items, sum(nbytes(item) for item in items), batch.opened_at, batch.closed_at, batch.reason))
    return parts
