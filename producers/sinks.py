"""Where outcomes go: results and dead letters, over one idempotent producer.

``send`` returns the delivery future; the worker awaits every future of a batch before
it commits the batch's input offsets (at-least-once).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.config import WorkerSettings
from schemas.codec import JSON, MSGPACK, content_type_headers, dead_letter_headers, encode
from schemas.models import DeadLetter, Result

Delivery = asyncio.Future[Any]


def make_producer(settings: WorkerSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.client_kwargs(),
        client_id=settings.worker_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        max_request_size=max(1_048_576, settings.max_payload_bytes + 65_536),
    )


class ResultSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str, content_type: str = MSGPACK) -> None:
        self._producer = producer
        self.topic = topic
        self._content_type = JSON if content_type in ("json", JSON) else MSGPACK
        self._headers = content_type_headers(self._content_type)

    async def send(self, result: Result, key: bytes | None) -> Delivery:
        return await self._producer.send(
            self.topic, encode(result, self._content_type), key=key, headers=self._headers
        )


class DeadLetterSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, dead_letter: DeadLetter) -> Delivery:
        return await self._producer.send(
            self.topic,
            dead_letter.original,
            key=dead_letter.key,
            headers=dead_letter_headers(dead_letter),
        )
