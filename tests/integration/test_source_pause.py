"""``KafkaSource.pause`` on a real broker: a paused partition gives nothing, the others
read on, and what was already fetched for it is kept for its resume, not fetched again
(aiokafka's own pause drops it: a lane pausing and resuming while it drains a backlog
read every record many times over)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.kafka_source import KafkaSource

RECORDS_PER_PARTITION = 2_000
VALUE = b"x" * 500


@contextmanager
def bytes_read() -> Iterator[list[int]]:
    """Counts the bytes this process's asyncio streams take off their sockets."""
    counted = [0]
    original = asyncio.StreamReader.feed_data

    def feed_data(self: asyncio.StreamReader, data: bytes) -> None:
        counted[0] += len(data)
        original(self, data)

    asyncio.StreamReader.feed_data = feed_data  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        asyncio.StreamReader.feed_data = original  # type: ignore[method-assign]


async def _topic_with_records(bootstrap: str) -> str:
    topic = f"pause-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    try:
        sends = [await producer.send(topic, VALUE, partition=p)
                 for p in (0, 1) for _ in range(RECORDS_PER_PARTITION)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return topic


async def _noop(_: set[TopicPartition]) -> None:
    return None


def test_a_paused_partition_keeps_what_was_fetched_and_the_others_read_on(kafka_bootstrap: str) -> None:
    async def scenario() -> None:
        topic = await _topic_with_records(kafka_bootstrap)
        a, b = TopicPartition(topic, 0), TopicPartition(topic, 1)
        source = KafkaSource({"bootstrap_servers": kafka_bootstrap}, [topic], group_id=f"pause-{uuid.uuid4().hex[:8]}",
                             client_id="pause-test")
        got: dict[int, list[int]] = {0: [], 1: []}

        async def poll(max_records: int) -> int:
            records = await source.poll(200, max_records)
            for r in records:
                got[r.partition].append(r.offset)
            return len(records)

        with bytes_read() as counted:
            await source.start(_noop, _noop)
            try:
                async with asyncio.timeout(60):
                    while not got[0]:  # A's first fetch is in: the rest of it waits in the prefetch
                        await poll(1)
                    # pause and resume A many times over, as a lane behind its model does
                    for _ in range(10):
                        source.pause({a})
                        before = len(got[0])
                        for _ in range(3):
                            await poll(50)
                        assert len(got[0]) == before, "a paused partition gave records"
                        source.resume({a})
                        await poll(20)
                    while len(got[0]) < RECORDS_PER_PARTITION or len(got[1]) < RECORDS_PER_PARTITION:
                        await poll(500)
                    # all paused: the poll returns empty at its timeout, or sooner on a resume
                    source.pause({a, b})
                    assert await source.poll(100, 10) == []
                    waiting = asyncio.ensure_future(source.poll(5_000, 10))
                    await asyncio.sleep(0.05)
                    source.resume({b})
                    async with asyncio.timeout(2):
                        assert await waiting == []
            finally:
                await source.stop()
        for partition in (0, 1):
            assert got[partition] == list(range(RECORDS_PER_PARTITION)), f"partition {partition} not read in order"
        payload = 2 * RECORDS_PER_PARTITION * len(VALUE)
        # each record crosses the socket once (plus framing); aiokafka's pause read A's
        # prefetch again after each of the ten resumes
        assert counted[0] < 1.2 * payload, f"read {counted[0]:,} bytes for {payload:,} of records"

    asyncio.run(scenario())


def test_a_poll_of_the_unpaused_partitions_returns_as_soon_as_the_paused_one_is_resumed(kafka_bootstrap: str) -> None:
    """A worker with two lanes: one behind its model (its topic paused), the other idle. The
    poll of the idle lane's partitions must not hold the resumed ones back until its timeout
    (waiting it out, a worker on a transactions topic and an idle frames topic fell seconds
    behind at 30,000 transactions/s)."""
    async def scenario() -> None:
        topic = await _topic_with_records(kafka_bootstrap)
        a = TopicPartition(topic, 0)
        source = KafkaSource({"bootstrap_servers": kafka_bootstrap}, [topic], group_id=f"pause-{uuid.uuid4().hex[:8]}",
                             client_id="pause-test")
        got: dict[int, list[int]] = {0: [], 1: []}
        await source.start(_noop, _noop)
        try:
            async with asyncio.timeout(60):
                while len(got[1]) < RECORDS_PER_PARTITION or not got[0]:
                    for r in await source.poll(200, 500 if got[0] else 1):
                        got[r.partition].append(r.offset)
                # B is read to its end and A has records waiting: pause A, poll B (nothing comes)
                source.pause({a})
                waiting = asyncio.ensure_future(source.poll(10_000, 500))
                await asyncio.sleep(0.2)
                assert not waiting.done(), "a poll of a partition with nothing new returned before its timeout"
                source.resume({a})
                async with asyncio.timeout(3):
                    assert await waiting == []
                for r in await source.poll(200, 500):
                    got[r.partition].append(r.offset)
                assert got[0][-1] > 0 and got[0] == list(range(len(got[0]))), "A did not read on, in order"
        finally:
            await source.stop()

    asyncio.run(scenario())
