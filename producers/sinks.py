"""Where outcomes go: results and dead letters, over one idempotent producer.

``Sink.send`` never raises: it returns the delivery future, and a record the producer
refuses at once (too large, buffer timeout) comes back as an already-failed future. The
worker awaits every future of a batch before it commits the batch's input offsets
(at-least-once), and decides per failure whether it is the record's fault (its dead
letter) or the infrastructure's (retry until a deadline).
"""

from __future__ import annotations

import asyncio
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


def is_record_fault(exc: BaseException) -> bool:
    """True when the record itself was refused (its size or content): retrying cannot help."""
    return isinstance(
        exc, MessageSizeTooLargeError | RecordTooLargeError | RecordListTooLargeError | CorruptRecordException
    )


def max_request_bytes(max_payload_bytes: int) -> int:
    return max(1_048_576, max_payload_bytes + RECORD_OVERHEAD_BYTES)


class KafkaSink:
    """One idempotent ``AIOKafkaProducer`` (acks=all) for results and dead letters."""

    def __init__(self, client_kwargs: dict[str, Any], client_id: str, max_payload_bytes: int) -> None:
        self._kwargs = dict(
            client_kwargs,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_request_size=max_request_bytes(max_payload_bytes),
        )
        self._producer: AIOKafkaProducer | None = None

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
