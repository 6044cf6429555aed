"""``KafkaSink.send_many`` on a real broker: one record batch per partition, keys where
``send`` would put them, and a refused batch narrowed down to the one record at fault."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from producers.sinks import KafkaSink, OutRecord, is_record_fault, outcomes_of


async def _topic(bootstrap: str, **config: str) -> str:
    name = f"sink-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1, topic_configs=config)])
    finally:
        await admin.close()
    return name


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"read-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    got: list[tuple[int, bytes | None, bytes | None]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(r.partition, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return got


def test_send_many_delivers_every_record_where_send_would_put_its_key(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        topic = await _topic(kafka_bootstrap)
        sink = KafkaSink({"bootstrap_servers": kafka_bootstrap}, "sink-test", 1_048_576)
        await sink.start()
        try:
            records = [OutRecord(topic, f"v{i}".encode() * 40, f"key-{i % 13}".encode(), (("h", b"1"),))
                       for i in range(500)]
            deliveries = await sink.send_many(records)
            await asyncio.gather(*deliveries)
            # where the producer's own send puts each key
            placed = {}
            for i in range(13):
                meta = await (await sink.send(OutRecord(topic, b"probe", f"key-{i}".encode())))
                placed[f"key-{i}".encode()] = meta.partition
        finally:
            await sink.stop()
        got = await _read(kafka_bootstrap, topic, 513)
        batched = [(p, k, v) for p, k, v in got if v != b"probe"]
        assert sorted(v for _, _, v in batched) == sorted(r.value for r in records)
        assert all(placed[k] == p for p, k, _ in batched)  # type: ignore[index]
        # within a key, the order they were given in
        for key in placed:
            values = [v for _, k, v in batched if k == key]
            assert values == [r.value for r in records if r.key == key]

    asyncio.run(scenario())


def test_records_sent_together_go_out_at_once_whatever_the_linger(kafka_bootstrap: str) -> None:
    """A record batch of ``send_many`` is full already: it is not held for ``linger_ms``,
    nor is the partition's next one held behind it."""
    async def scenario() -> None:
        topic = await _topic(kafka_bootstrap)
        sink = KafkaSink({"bootstrap_servers": kafka_bootstrap}, "sink-test", 1_048_576, linger_ms=5_000)
        await sink.start()
        try:
            await asyncio.gather(*await sink.send_many([OutRecord(topic, b"warm", b"k")]))  # metadata, producer id
            started = time.monotonic()
            for round_ in range(3):  # each round's batches after the one before, to the same partitions
                records = [OutRecord(topic, f"{round_}-{i}".encode(), f"key-{i % 7}".encode()) for i in range(50)]
                async with asyncio.timeout(2.5):  # against 5 s a round, had they lingered
                    await asyncio.gather(*await sink.send_many(records))
            assert time.monotonic() - started < 2.5
        finally:
            await sink.stop()

    asyncio.run(scenario())


def test_a_record_over_its_topic_s_max_message_bytes_fails_alone_and_the_partition_goes_on(
    kafka_bootstrap: str,
) -> None:
    """Refused by the broker, it would break the idempotent producer's sequence for the
    partition (every later record: OutOfOrderSequenceNumber); the sink refuses it first."""

    async def scenario() -> None:
        topic = await _topic(kafka_bootstrap, **{"max.message.bytes": "8000"})
        sink = KafkaSink({"bootstrap_servers": kafka_bootstrap}, "sink-test", 1_048_576)
        await sink.start()
        try:
            # one key: one partition; 15 x 300 B would make one record batch over the limit too
            records = [OutRecord(topic, b"x" * (20_000 if i == 7 else 300), b"same-key") for i in range(40)]
            outcomes = await outcomes_of(records, await sink.send_many(records))
            one_more = await asyncio.gather(await sink.send(records[7]), await sink.send(records[8]),
                                            return_exceptions=True)
        finally:
            await sink.stop()
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        assert failed == [7], outcomes
        assert is_record_fault(outcomes[7]) and "max.message.bytes" in str(outcomes[7])  # type: ignore[arg-type]
        assert is_record_fault(one_more[0]) and not isinstance(one_more[1], BaseException)  # type: ignore[arg-type]
        got = await _read(kafka_bootstrap, topic, 40)
        assert len(got) == 40 and all(len(v or b"") == 300 for _, _, v in got)

    asyncio.run(scenario())
