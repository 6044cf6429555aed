"""Two loops written well by hand, on the same broker and backlog as the worker.

``kafka_ceiling``: consume -> produce the same bytes, no model: the most the Kafka client
moves on this machine (large fetches, a record batch per partition per poll, acks=all and
idempotence like the worker's producer, offsets committed per poll, a few polls in flight).

``naive_loop``: consume one record, decode, infer it alone, produce its result, await the
ack, commit: what a first version of this product would do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.common import PARTITIONS, default_model
from pipeline.config import KafkaSettings
from pipeline.models import load_model, resolve_device
from pipeline.outcomes import Outcomes
from pipeline.runner import Runner
from pipeline.topics import create_topics
from schemas.codec import Limits
from schemas.errors import DecodeError
from schemas.models import wall_ms

MAX_BYTES = 16 * 1024 * 1024
CEILING_DEPTH = 4  # polls in flight in the Kafka ceiling's loop


def _consumer(bootstrap: str, topic: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-loop-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest", **kwargs,
    )


async def kafka_ceiling(bootstrap: str, topic: str, n: int, depth: int = CEILING_DEPTH,
                        per_poll: int = 2_000) -> float:
    """Records per second of an identity consume -> produce over ``n`` records of ``topic``:
    each poll's records of a partition go out as record batches to the same partition of
    the output (``create_batch``/``send_batch``, as the worker's sink sends), and a poll's
    offsets are committed once all its acks are in. Up to ``depth`` polls are in flight:
    the next poll and its sends go on while the acks of the ones before are awaited, as a
    worker's do (with ``depth`` 1, one poll's round trips at a time, two workers drained
    1.13x and 1.52x this "ceiling" in the suite's runs of d676ff2 and c600e84)."""
    consumer = _consumer(bootstrap, topic, fetch_max_bytes=MAX_BYTES, max_partition_fetch_bytes=MAX_BYTES)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=MAX_BYTES + 65_536)
    out = f"{topic}-ceiling-{uuid.uuid4().hex[:6]}"
    await create_topics(KafkaSettings(kafka_bootstrap=bootstrap), [out], PARTITIONS)
    await consumer.start()
    await producer.start()
    in_flight: deque[tuple[list[asyncio.Future[Any]], dict[TopicPartition, OffsetAndMetadata], int]] = deque()

    async def settle_oldest() -> int:
        acks, offsets, count = in_flight.popleft()
        await asyncio.gather(*acks)
        await consumer.commit(offsets)
        return count

    try:
        polled_count = 0
        # the rate is the slope of records settled (acked and committed) between a tenth and
        # nine tenths of the backlog: the steady part, whatever the depth (timed from the
        # first settle, the polls already in flight by then would come free, and did: with
        # polls of 12,500 and 4 in flight, "557k/s")
        marks: list[tuple[float, int]] = []
        done = 0
        per_poll = max(1, min(per_poll, n // 20))  # large polls, and many of them
        while done < n:
            polled = await consumer.getmany(timeout_ms=200, max_records=per_poll) if polled_count < n else {}
            if polled:
                acks = []
                for tp, records in polled.items():
                    batch = producer.create_batch()
                    for r in records:
                        if batch.append(key=r.key, value=r.value, timestamp=None) is None:  # full: send it
                            batch.close()  # as the sink does: full, it goes at once
                            acks.append(await producer.send_batch(batch, out, partition=tp.partition))
                            batch = producer.create_batch()
                            batch.append(key=r.key, value=r.value, timestamp=None)
                    batch.close()
                    acks.append(await producer.send_batch(batch, out, partition=tp.partition))
                count = sum(len(records) for records in polled.values())
                polled_count += count
                in_flight.append((acks, {tp: OffsetAndMetadata(records[-1].offset + 1, "")
                                         for tp, records in polled.items()}, count))
            while in_flight and (len(in_flight) >= depth or polled_count >= n or not polled):
                done += await settle_oldest()
                if n // 10 <= done <= n - n // 10:
                    marks.append((time.perf_counter(), done))
        assert len(marks) >= 2 and marks[-1][1] > marks[0][1], "too few polls in the steady part: nothing timed"
        (t0, d0), (t1, d1) = marks[0], marks[-1]
        return (d1 - d0) / (t1 - t0)
    finally:
        await producer.stop()
        await consumer.stop()


async def naive_loop(bootstrap: str, topic: str, kind: str, n: int) -> float:
    """Records per second of consume one -> infer one -> produce -> await -> commit."""
    model = load_model(default_model(kind), kind)  # type: ignore[arg-type]
    runner = Runner({kind: model}, resolve_device("auto"))  # type: ignore[dict-item]
    runner.start()
    outcomes = Outcomes(results_topic=f"{topic}-naive-{uuid.uuid4().hex[:6]}", dead_letter_topic=f"{topic}-naive-dlq",
                        worker_id="naive", content_type="application/msgpack", limits=Limits())
    await create_topics(KafkaSettings(kafka_bootstrap=bootstrap), [outcomes.results_topic], PARTITIONS)
    consumer = _consumer(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_request_size=MAX_BYTES + 65_536)
    await consumer.start()
    await producer.start()
    try:
        started = None
        for _ in range(n):
            r = await consumer.getone()
            started = started or time.perf_counter()
            event = outcomes.decode(r)
            assert not isinstance(event, DecodeError), event
            [inference] = runner.run_sync([event])
            now = wall_ms()
            outcome = outcomes.result(r, event, inference, received_ms=now, closed_ms=now, produced_ms=now,
                                      batch_size=1)
            await producer.send_and_wait(outcome.record.topic, outcome.record.value, key=outcome.record.key,
                                         headers=list(outcome.record.headers))
            await consumer.commit({TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, "")})
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
        runner.stop()
