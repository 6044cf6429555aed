"""Read the results or dead-letter topic, outside any consumer group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import dead_letter_from_record, decode_result
from schemas.models import DeadLetter, Result

T = TypeVar("T")
Decode = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], T]


async def _read(
    decode: Decode[T],
    *,
    bootstrap: str,
    topic: str,
    follow: bool,
    idle_timeout_s: float,
    from_beginning: bool,
) -> AsyncIterator[T]:
    """Without ``follow``: stop at the end offsets seen at start, or after an idle spell."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        last_record = time.monotonic()
        while follow or remaining:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    yield decode(r.value, r.key, tuple(r.headers or ()))
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if batches:
                last_record = time.monotonic()
            elif not follow and time.monotonic() - last_record > idle_timeout_s:
                return
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise ValueError(f"topic {topic!r} does not exist")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
        await asyncio.sleep(0.1)


def read_results(
    *, bootstrap: str, topic: str, follow: bool = False, idle_timeout_s: float = 5.0,
    from_beginning: bool = True,
) -> AsyncIterator[Result]:
    return _read(
        lambda value, _key, headers: decode_result(value or b"", headers),
        bootstrap=bootstrap, topic=topic, follow=follow, idle_timeout_s=idle_timeout_s,
        from_beginning=from_beginning,
    )


def read_dead_letters(
    *, bootstrap: str, topic: str, follow: bool = False, idle_timeout_s: float = 5.0,
    from_beginning: bool = True,
) -> AsyncIterator[DeadLetter]:
    return _read(
        dead_letter_from_record,
        bootstrap=bootstrap, topic=topic, follow=follow, idle_timeout_s=idle_timeout_s,
        from_beginning=from_beginning,
    )
