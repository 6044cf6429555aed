"""Which input offsets are safe to commit: pure bookkeeping, no I/O.

Messages finish out of order (a dead letter is delivered before the batch that holds
earlier offsets), so a partition's commit point only moves past a contiguous run of
finished offsets. Kafka's committed offset is the *next* offset to read.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


# finished offsets kept at the front of a partition's list before it is cut
_KEEP_FINISHED = 4096


class _Partition:
    """``pending[head:]``: the offsets tracked and not finished, in order. Finished ones
    before ``head`` are cut now and then: a batch's run finishes in one step, not one
    ``popleft`` a record."""

    __slots__ = ("committed", "done", "head", "next_commit", "pending")

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.head = 0
        self.done: set[int] = set()
        self.next_commit: int | None = None
        self.committed: int | None = None

    def advance(self) -> None:
        """Past every offset at the head that is finished out of order (in ``done``)."""
        pending, done, head = self.pending, self.done, self.head
        if done:
            while head < len(pending) and pending[head] in done:
                done.discard(pending[head])
                self.next_commit = pending[head] + 1
                head += 1
        if head > _KEEP_FINISHED and head * 2 > len(pending):
            del pending[:head]
            head = 0
        self.head = head


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
        if len(part.pending) > part.head and offsets[0] <= part.pending[-1]:
            raise ValueError(f"offset {offsets[0]} of {partition} tracked out of order")
        part.pending.extend(offsets)

    def done(self, partition: P, offset: int) -> None:
        """Mark an offset's outcome (result or dead letter) as delivered."""
        part = self._parts.get(partition)
        if part is None:
            return  # partition was revoked meanwhile; its offsets are no longer ours
        part.done.add(offset)
        part.advance()

    def done_many(self, partition: P, offsets: Sequence[int]) -> None:
        """``done`` for each of ``offsets``: distinct offsets tracked and not yet done, in
        increasing order. The usual case, the oldest pending run of the partition, moves the
        commit point in one step, known from its ends: ``len(offsets)`` offsets from the
        first to the last can only be the next ``len(offsets)`` pending ones."""
        part = self._parts.get(partition)
        if part is None or not offsets:
            return
        pending, head, k = part.pending, part.head, len(offsets)
        if head + k <= len(pending) and pending[head] == offsets[0] and pending[head + k - 1] == offsets[-1]:
            part.head = head + k
            part.next_commit = offsets[-1] + 1
        else:
            part.done.update(offsets)
        part.advance()

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
        return sum(len(p.pending) - p.head for p in parts if p is not None)

    def forget(self, partitions: Iterable[P]) -> None:
        for p in partitions:
            self._parts.pop(p, None)
