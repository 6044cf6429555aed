"""Where outcomes go: results and dead letters, over one idempotent producer.

``Sink.send`` never raises: it returns the delivery future, and a record the producer
refuses at once (too large, buffer timeout) comes back as an already-failed future. The
worker awaits every future of a batch before it commits the batch's input offsets
(at-least-once), and decides per failure whether it is the record's fault (its dead
letter) or the infrastructure's (retry until a deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

Delivery = asyncio.Future[Any]

# the producer's request limit leaves this much room above the largest payload for
# the key, headers and record framing
RECORD_OVERHEAD_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce: a result or a dead letter."""

    topic: str
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class Sink(Protocol):
    """What the worker produces through. ``send`` returns the delivery future and never raises."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, record: OutRecord) -> Delivery: ...

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        """One delivery per record, in order; like ``send`` for each, possibly cheaper."""
        ...


def is_record_fault(exc: BaseException) -> bool:
    """True when the record itself was refused (its size or content): retrying cannot help."""
    return isinstance(
        exc, MessageSizeTooLargeError | RecordTooLargeError | RecordListTooLargeError | CorruptRecordException
    )


def max_request_bytes(max_payload_bytes: int) -> int:
    return max(1_048_576, max_payload_bytes + RECORD_OVERHEAD_BYTES)


class KafkaSink:
    """One idempotent ``AIOKafkaProducer`` (acks=all) for results and dead letters."""

    def __init__(self, client_kwargs: dict[str, Any], client_id: str, max_payload_bytes: int,
                 linger_ms: int = 2, batch_bytes: int = 16_384) -> None:
        self._kwargs = dict(
            client_kwargs,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=batch_bytes,
            max_request_size=max_request_bytes(max_payload_bytes),
        )
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._retries: set[asyncio.Future[None]] = set()  # record batches being resent one by one

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._kwargs)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, record: OutRecord) -> Delivery:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        try:
            return await self._producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        except KafkaError as exc:  # refused before it was queued: deliver the failure like a late one
            failed: Delivery = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        """A batch's records in one record batch per output partition (``send_batch``),
        placed by the same partitioner ``send`` uses, so a key keeps its partition.

        Much cheaper per record than ``send``. A record batch the broker refuses for its
        size or content is sent again record by record, so only the guilty record fails.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        loop = asyncio.get_running_loop()
        deliveries: list[Delivery] = [loop.create_future() for _ in records]
        groups: dict[tuple[str, int], list[int]] = {}
        partitions: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            if record.topic not in partitions:
                try:
                    partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
                except KafkaError as exc:
                    deliveries[i].set_exception(exc)
                    continue
            known = partitions[record.topic]
            groups.setdefault((record.topic, self._partitioner(record.key, known, known)), []).append(i)
        for (topic, partition), indices in groups.items():
            batch, members = producer.create_batch(), list[int]()
            for i in indices:
                record = records[i]
                if batch.append(key=record.key, value=record.value, timestamp=None,
                                headers=list(record.headers)) is None:
                    await self._send_batch(batch, topic, partition, [records[j] for j in members],
                                           [deliveries[j] for j in members])
                    batch, members = producer.create_batch(), []
                    if batch.append(key=record.key, value=record.value, timestamp=None,
                                    headers=list(record.headers)) is None:  # too large for any batch
                        self._chain(await self.send(record), deliveries[i])
                        continue
                members.append(i)
            if members:
                await self._send_batch(batch, topic, partition, [records[j] for j in members],
                                       [deliveries[j] for j in members])
        return deliveries

    async def _send_batch(self, batch: Any, topic: str, partition: int, records: list[OutRecord],
                          deliveries: list[Delivery]) -> None:
        assert self._producer is not None
        try:
            sent = await self._producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            sent = asyncio.get_running_loop().create_future()
            sent.set_exception(exc)

        def settle(done: asyncio.Future[Any]) -> None:
            exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
            if exc is None:
                for delivery in deliveries:
                    if not delivery.done():
                        delivery.set_result(done.result())
            elif is_record_fault(exc) and len(records) > 1:
                # one record spoiled the batch: find it by sending them one by one
                retry = asyncio.ensure_future(self._one_by_one(records, deliveries))
                self._retries.add(retry)
                retry.add_done_callback(self._retries.discard)
            else:
                for delivery in deliveries:
                    if not delivery.done():
                        delivery.set_exception(exc)

        sent.add_done_callback(settle)

    async def _one_by_one(self, records: list[OutRecord], deliveries: list[Delivery]) -> None:
        for record, delivery in zip(records, deliveries, strict=True):
            self._chain(await self.send(record), delivery)

    @staticmethod
    def _chain(source: Delivery, target: Delivery) -> None:
        def copy(done: Delivery) -> None:
            if target.done():
                return
            if done.cancelled():
                target.cancel()
            elif (exc := done.exception()) is not None:
                target.set_exception(exc)
            else:
                target.set_result(done.result())

        source.add_done_callback(copy)
