"""Which input offsets are safe to commit: pure bookkeeping, no I/O.

Messages finish out of order (a dead letter is delivered before the batch that holds
earlier offsets), so a partition's commit point only moves past a contiguous run of
finished offsets. Kafka's committed offset is the *next* offset to read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from itertools import islice
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class _Partition:
    __slots__ = ("committed", "done", "next_commit", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.next_commit: int | None = None
        self.committed: int | None = None


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}

    def track(self, partition: P, offset: int) -> None:
        """Record a consumed offset; offsets of one partition arrive in increasing order."""
        self.track_many(partition, (offset,))

    def track_many(self, partition: P, offsets: Sequence[int]) -> None:
        """``track`` each of ``offsets``, consumed in increasing order (a poll's records of
        the partition): one call, not one a record."""
        if not offsets:
            return
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        if part.pending and offsets[0] <= part.pending[-1]:
            raise ValueError(f"offset {offsets[0]} of {partition} tracked out of order")
        part.pending.extend(offsets)

    def done(self, partition: P, offset: int) -> None:
        """Mark an offset's outcome (result or dead letter) as delivered."""
        part = self._parts.get(partition)
        if part is None:
            return  # partition was revoked meanwhile; its offsets are no longer ours
        part.done.add(offset)
        while part.pending and part.pending[0] in part.done:
            finished = part.pending.popleft()
            part.done.discard(finished)
            part.next_commit = finished + 1

    def done_many(self, partition: P, offsets: Sequence[int]) -> None:
        """``done`` for each of ``offsets`` (in increasing order). The usual case, the oldest
        pending run of the partition, moves the commit point without a set."""
        part = self._parts.get(partition)
        if part is None or not offsets:
            return
        pending, k = part.pending, len(offsets)
        if pending and pending[0] == offsets[0] and list(islice(pending, k)) == list(offsets):
            for _ in range(k):
                pending.popleft()
            part.next_commit = offsets[-1] + 1
        else:
            part.done.update(offsets)
        while pending and pending[0] in part.done:
            finished = pending.popleft()
            part.done.discard(finished)
            part.next_commit = finished + 1

    def committable(self) -> dict[P, int]:
        """Offsets to commit now: partitions whose commit point moved since the last commit."""
        return {
            p: part.next_commit
            for p, part in self._parts.items()
            if part.next_commit is not None and part.next_commit != part.committed
        }

    def mark_committed(self, offsets: dict[P, int]) -> None:
        for p, offset in offsets.items():
            if (part := self._parts.get(p)) is not None:
                part.committed = offset

    def pending(self, partition: P | None = None) -> int:
        parts = self._parts.values() if partition is None else [self._parts.get(partition)]
        return sum(len(p.pending) for p in parts if p is not None)

    def forget(self, partitions: Iterable[P]) -> None:
        for p in partitions:
            self._parts.pop(p, None)
