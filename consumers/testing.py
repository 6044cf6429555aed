"""An in-memory ``Source`` for testing the worker loop without a broker.

Partitions are lists of records; a poll hands out records from each assigned
partition's position; commits are recorded; ``revoke`` and ``assign`` play a rebalance
the way a consumer group does (revoke is awaited before the partitions move, and a new
owner starts from the last committed offset).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiokafka import TopicPartition

from consumers.source import InputRecord, PartitionsCallback, Record


class MemorySource:
    def __init__(self, topic: str = "in", partitions: int = 1, cluster_id: str = "cluster-a",
                 other_topics: Sequence[str] = ()) -> None:
        self.topic = topic
        self.log: dict[TopicPartition, list[InputRecord]] = {
            TopicPartition(t, p): [] for t in (topic, *other_topics) for p in range(partitions)
        }
        self.position: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.cluster = cluster_id
        self.polled = 0  # records handed out
        self.seeks = 0
        self.poll_error: BaseException | None = None
        # runs once inside the next poll, before records are read: a rebalance in mid-poll
        self.during_next_poll: Callable[[], Awaitable[None]] | None = None
        self.cluster_error: BaseException | None = None
        self._on_revoked: PartitionsCallback | None = None
        self._on_assigned: PartitionsCallback | None = None
        self.started = self.stopped = False
        self.paused: set[TopicPartition] = set()

    def add(self, value: bytes | None, partition: int = 0, key: bytes | None = None,
            headers: Sequence[tuple[str, bytes]] = (), topic: str | None = None) -> InputRecord:
        tp = TopicPartition(topic or self.topic, partition)
        record = Record(tp.topic, partition, len(self.log[tp]), key, value, tuple(headers), 0)
        self.log[tp].append(record)
        return record

    # -- Source ----------------------------------------------------------------------

    async def start(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self._on_revoked, self._on_assigned = on_revoked, on_assigned
        self.started = True
        await self.assign(self.log)

    async def stop(self) -> None:
        self.stopped = True

    async def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        if self.poll_error is not None:
            raise self.poll_error
        if (hook := self.during_next_poll) is not None:
            self.during_next_poll = None
            await hook()
        out: list[InputRecord] = []
        for tp, pos in list(self.position.items()):
            if tp in self.paused:
                continue
            take = self.log[tp][pos:pos + max_records - len(out)]
            out.extend(take)
            self.position[tp] = pos + len(take)
        self.polled += len(out)
        if not out:
            await asyncio.sleep(min(timeout_ms, 10) / 1000)
        else:
            await asyncio.sleep(0)
        return out

    def pause(self, tps: set[TopicPartition]) -> None:
        self.paused |= tps

    def resume(self, tps: set[TopicPartition]) -> None:
        self.paused -= tps

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp not in self.position:
                raise AssertionError(f"committed {tp} which is not assigned")
            if offset < self.committed.get(tp, 0):
                raise AssertionError(f"commit of {tp} went back from {self.committed[tp]} to {offset}")
        self.committed.update(offsets)
        self.commits.append(dict(offsets))

    async def cluster_id(self) -> str:
        if self.cluster_error is not None:
            raise self.cluster_error
        return self.cluster

    def assignment(self) -> set[TopicPartition]:
        return set(self.position)

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.log[tp]) if tp in self.log else None

    async def committed_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        if self.cluster_error is not None:
            raise self.cluster_error
        result = {tp: self.committed.get(tp) for tp in tps}
        await asyncio.sleep(0)  # an await between partitions, as a broker round trip has
        return result

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        self.seeks += 1
        for tp, offset in offsets.items():
            if tp not in self.position:
                raise AssertionError(f"seek of {tp}, which is not assigned")
            self.position[tp] = offset

    # -- rebalances --------------------------------------------------------------------

    async def revoke(self, tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        assert self._on_revoked is not None
        await self._on_revoked(tps)
        for tp in tps:
            self.position.pop(tp, None)
        self.paused -= tps  # as Kafka does: a partition comes back unpaused

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        for tp in tps:
            self.position[tp] = self.committed.get(tp, 0)
        assert self._on_assigned is not None
        await self._on_assigned(tps)
