"""``bench.common.held_copy`` on a real broker: a read_committed consumer (as the worker's)
sees none of the copy until it is released, then every record with the same bytes, key,
headers and partition as the original."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import PARTITIONS, backlog, held_copy, items


async def _read(bootstrap: str, topic: str, wait_s: float, want: int) -> list[tuple[int, bytes | None, bytes, tuple]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", group_id=f"held-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    got: list[tuple[int, bytes | None, bytes, tuple]] = []
    try:
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=250)).items():
                got += [(tp.partition, r.key, r.value, tuple(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return got


def test_held_copy_is_invisible_until_released_then_identical(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        topic = await backlog(kafka_bootstrap, "transaction", items("transaction", 500))
        original = await _read(kafka_bootstrap, topic, 30, 500)
        assert len(original) == 500 and len({p for p, *_ in original}) == PARTITIONS
        async with held_copy(kafka_bootstrap, topic) as (copy, release):
            assert await _read(kafka_bootstrap, copy, 3, 1) == []
            consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
            await consumer.start()
            try:  # the records are in the log, only not committed
                ends = await consumer.end_offsets([TopicPartition(copy, p) for p in range(PARTITIONS)])
            finally:
                await consumer.stop()
            assert sum(ends.values()) >= 500
            await release()
            copied = await _read(kafka_bootstrap, copy, 30, 500)
        assert sorted(copied) == sorted(original)

    asyncio.run(scenario())
