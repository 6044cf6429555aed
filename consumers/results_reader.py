"""Read the results or dead-letter topic, outside any consumer group.

No group means no committed offsets and no rebalances: reading results for a look or a
test never moves anyone's position and never waits for a group to form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import dead_letter_from_record, decode_result
from schemas.models import DeadLetter, Result

T = TypeVar("T")
RecordHeaders = Sequence[tuple[str, bytes]]
Decode = Callable[[bytes | None, bytes | None, RecordHeaders], T]

POLL_MS = 200
TOPIC_WAIT_S = 10.0


async def _read(
    decode: Decode[T],
    *,
    bootstrap: str,
    topic: str,
    follow: bool,
    idle_timeout_s: float,
    from_beginning: bool,
    security: Mapping[str, Any] | None = None,
) -> AsyncGenerator[T, None]:
    """Without ``follow``: stop at the end offsets seen at start, or after an idle spell.

    The end offsets are taken once, at the start, so a topic that keeps growing still
    gives a finite read. Read-committed end offsets can sit past the last record (a
    transaction marker takes an offset), so completion is judged by the consumer's
    position, which moves past markers, not by the offset of the last record seen.
    """
    consumer = AIOKafkaConsumer(
        **{**(security or {}), "bootstrap_servers": bootstrap},
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = await _unfinished(consumer, partitions, ends)
        last_record = time.monotonic()
        while follow or remaining:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for records in batches.values():
                for r in records:
                    yield decode(r.value, r.key, tuple(r.headers or ()))
            if batches:
                last_record = time.monotonic()
            elif not follow and time.monotonic() - last_record > idle_timeout_s:
                return
            if not follow:
                remaining = await _unfinished(consumer, remaining, ends)
    finally:
        await consumer.stop()


async def _unfinished(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    ends: dict[TopicPartition, int],
) -> list[TopicPartition]:
    return [tp for tp in partitions if await consumer.position(tp) < ends[tp]]


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float = TOPIC_WAIT_S
) -> list[TopicPartition]:
    """All partitions of ``topic``, waiting briefly for metadata of a just-created topic."""
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise ValueError(f"topic {topic!r} does not exist on the broker")
        # a group-less consumer never asks for the topic's metadata itself, and aiokafka
        # has no public call that refreshes the cached cluster view
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


async def until(stream: AsyncIterator[T], deadline: float) -> AsyncGenerator[T, None]:
    """Items of ``stream`` until it ends or ``time.monotonic()`` passes ``deadline``."""
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            yield await asyncio.wait_for(anext(stream), remaining)
        except (StopAsyncIteration, TimeoutError):
            return


def read_results(
    *,
    bootstrap: str,
    topic: str,
    follow: bool = False,
    idle_timeout_s: float = 5.0,
    from_beginning: bool = True,
    security: Mapping[str, Any] | None = None,
) -> AsyncGenerator[Result, None]:
    """Results as they are on the topic; close with ``contextlib.aclosing`` when leaving early.
    ``security``: the client's TLS/SASL settings (``KafkaSettings.client_kwargs()``)."""
    return _read(
        lambda value, _key, headers: decode_result(value or b"", headers),
        bootstrap=bootstrap,
        topic=topic,
        follow=follow,
        idle_timeout_s=idle_timeout_s,
        from_beginning=from_beginning,
        security=security,
    )


def read_dead_letters(
    *,
    bootstrap: str,
    topic: str,
    follow: bool = False,
    idle_timeout_s: float = 5.0,
    from_beginning: bool = True,
    security: Mapping[str, Any] | None = None,
) -> AsyncGenerator[DeadLetter, None]:
    """Dead letters, rebuilt from the original bytes and the reason headers."""
    return _read(
        dead_letter_from_record,
        bootstrap=bootstrap,
        topic=topic,
        follow=follow,
        idle_timeout_s=idle_timeout_s,
        from_beginning=from_beginning,
        security=security,
    )
