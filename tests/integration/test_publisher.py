"""``publish`` and ``streaminfer produce`` against the real broker: every event once, a key's
events on one partition in their order, and a missing topic said at once in one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from producers.publisher import CHUNK, TopicMissing, publish
from producers.transaction_source import iter_synthetic_transactions
from schemas.codec import decode_input
from schemas.models import Transaction
from tests.integration.conftest import Topics


async def _read(bootstrap: str, topic: str, n: int) -> list[tuple[int, str, bytes]]:
    """(partition, event id, key) of the first ``n`` records of ``topic``, in partition order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"read-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: list[tuple[int, str, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(seen) < n:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        event = decode_input(r.value, r.headers)
                        assert isinstance(event, Transaction), event
                        assert r.key is not None
                        seen.append((tp.partition, event.id, r.key))
    finally:
        await consumer.stop()
    return seen


def test_every_event_once_and_a_keys_events_on_its_partition_in_order(kafka_bootstrap: str) -> None:
    topics = Topics(kafka_bootstrap, partitions=4)
    n = 5 * CHUNK + 17  # several chunks, the last one short
    report = asyncio.run(publish(iter_synthetic_transactions(n, seed=4), bootstrap=kafka_bootstrap,
                                 topic=topics.inputs, progress=False))
    assert report.count == n
    seen = asyncio.run(_read(kafka_bootstrap, topics.inputs, n))
    assert sorted(event_id for _, event_id, _ in seen) == sorted(f"tx-4-{i}" for i in range(n))
    partitioner, partitions = DefaultPartitioner(), [0, 1, 2, 3]
    by_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for partition, event_id, key in seen:  # per partition in offset order
        by_key[key].append((partition, int(event_id.rsplit("-", 1)[1])))
    for key, placed in by_key.items():
        assert {p for p, _ in placed} == {partitioner(key, partitions, partitions)}, key  # where send() puts it
        sequence = [i for _, i in placed]
        assert sequence == sorted(sequence), key  # in the order they were made


def test_a_missing_topic_is_refused_before_anything_is_sent(kafka_bootstrap: str) -> None:
    started = time.monotonic()
    with pytest.raises(TopicMissing, match="does not exist"):
        asyncio.run(publish(iter_synthetic_transactions(10), bootstrap=kafka_bootstrap,
                            topic=f"missing-{uuid.uuid4().hex[:8]}", progress=False))
    assert time.monotonic() - started < 15  # not a send waiting out its metadata timeout (40 s)


def test_produce_to_a_missing_topic_exits_2_with_one_line(kafka_bootstrap: str) -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-m", "pipeline", "produce", "transactions", "--count", "5",
                           "--bootstrap", kafka_bootstrap, "--topic", topic],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"streaminfer: error: topic {topic!r} does not exist on {kafka_bootstrap} "
        f"(create it: streaminfer topics create --topic {topic})"]
