"""An in-memory ``Sink`` for testing the worker loop without a broker.

Every ``send`` is recorded. Acks come at once unless held (``hold``), or are released
per topic, so a test decides the order in which deliveries complete; ``refuse`` makes
the broker refuse matching records with an error, as a real one would. ``share=True``:
``send_many`` sends a run of records of one topic together with one delivery, as
``KafkaSink`` sends a record batch (refused for a record's fault: sent again one by one,
``RecordsResent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import attrgetter
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import RecordTooLargeError

from producers.sinks import Delivery, OutRecord, RecordsResent, fail, is_record_fault
from producers.transactional import TransactionFailed


class MemorySink:
    def __init__(self, share: bool = False) -> None:
        self.sent: list[OutRecord] = []
        self.acked: list[OutRecord] = []
        self.held = False
        self.share = share
        self.shared_deliveries = 0  # deliveries made for records sent together (``share``)
        self._pending: list[tuple[list[OutRecord], Delivery]] = []
        self._refusals: list[tuple[Callable[[OutRecord], bool], Callable[[], BaseException], int]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, record: OutRecord) -> Delivery:
        self.sent.append(record)
        future: Delivery = asyncio.get_running_loop().create_future()
        for i, (matches, error, times) in enumerate(self._refusals):
            if matches(record) and times != 0:
                self._refusals[i] = (matches, error, times - 1)
                fail(future, error())
                return future
        if self.held:
            self._pending.append(([record], future))
        else:
            self._ack([record], future)
        return future

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        if not self.share:
            return [await self.send(record) for record in records]
        deliveries: list[Delivery] = []
        for _, run in groupby(records, attrgetter("topic")):
            together = list(run)
            deliveries += [await self._send_together(together)] * len(together)
        return deliveries

    async def _send_together(self, records: list[OutRecord]) -> Delivery:
        self.shared_deliveries += 1
        self.sent += records  # a batch sent again one by one is in it twice, as it went twice
        future: Delivery = asyncio.get_running_loop().create_future()
        for i, (matches, error, times) in enumerate(self._refusals):
            if times != 0 and any(map(matches, records)):
                exc = error()
                if is_record_fault(exc) and len(records) > 1:  # sent again one by one, each refused or not
                    own = {id(record): await self.send(record) for record in records}
                    fail(future, RecordsResent(own))
                else:
                    self._refusals[i] = (matches, error, times - 1)
                    fail(future, exc)
                return future
        if self.held:
            self._pending.append((records, future))
        else:
            self._ack(records, future)
        return future

    def hold(self) -> None:
        """Keep acks back until ``release``."""
        self.held = True

    def release(self, topic: str | None = None) -> int:
        """Ack the held records (of ``topic`` only, if given), in send order; return how many."""
        keep, done = [], 0
        for records, future in self._pending:
            if topic is None or records[0].topic == topic:
                self._ack(records, future)
                done += len(records)
            else:
                keep.append((records, future))
        self._pending = keep
        if topic is None:
            self.held = False
        return done

    def fail_held(self, error: Callable[[], BaseException]) -> int:
        """Fail every held delivery as the broker would (``error()`` each); return how many."""
        failed, self._pending = self._pending, []
        for _, future in failed:
            if not future.done():
                fail(future, error())
        return sum(len(records) for records, _ in failed)

    def refuse(self, matches: Callable[[OutRecord], bool], error: Callable[[], BaseException], times: int = -1) -> None:
        """Fail the delivery of records that match, ``times`` times (-1: always)."""
        self._refusals.append((matches, error, times))

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.acked if r.topic == topic]

    def _ack(self, records: list[OutRecord], future: Delivery) -> None:
        if not future.done():
            self.acked += records
            future.set_result(None)


class MemoryTransactions:
    """An in-memory ``PartitionTransactions``: a commit appends its records and moves the
    group's committed offset in ``source`` together; ``fail_next`` makes the next commit
    of a partition end aborted with the given error, as a broker fault would."""

    def __init__(self, source: Any) -> None:
        self.source = source  # a consumers.testing.MemorySource: commits land in its offsets
        self.committed: list[tuple[TopicPartition, list[OutRecord], int]] = []
        self.aborted: list[tuple[TopicPartition, list[OutRecord]]] = []
        self.owned: set[TopicPartition] = set()
        self.recovered: list[TopicPartition] = []
        self._failures: dict[TopicPartition, BaseException] = {}
        self._refuse: Callable[[OutRecord], bool] = lambda record: False
        self.hold: asyncio.Event | None = None
        self.recover_failures = 0

    def fail_next(self, tp: TopicPartition, error: BaseException) -> None:
        self._failures[tp] = error

    def refuse(self, matches: Callable[[OutRecord], bool]) -> None:
        """Abort every transaction holding a matching record, as a broker refusing its size would."""
        self._refuse = matches

    def records(self) -> list[OutRecord]:
        return [r for _, records, _ in self.committed for r in records]

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        self.owned |= set(tps)

    async def revoke(self, tps: Iterable[TopicPartition]) -> None:
        self.owned -= set(tps)

    async def recover(self, tp: TopicPartition) -> None:
        if self.recover_failures > 0:  # the broker is still away
            self.recover_failures -= 1
            raise TransactionFailed(tp, ConnectionError("broker away"))
        self.recovered.append(tp)

    async def close(self) -> None:
        self.owned.clear()

    async def commit(self, tp: TopicPartition, records: Sequence[OutRecord], next_offset: int) -> None:
        if tp not in self.owned:
            raise AssertionError(f"commit for {tp}, which this member does not own")
        if self.hold is not None:
            await self.hold.wait()
        error = self._failures.pop(tp, None)
        if error is None and any(self._refuse(r) for r in records):
            error = RecordTooLargeError("the topic refuses a record this large")
        if error is not None:
            self.aborted.append((tp, list(records)))
            raise TransactionFailed(tp, error, aborted=True)
        self.committed.append((tp, list(records), next_offset))
        self.source.committed[tp] = next_offset
