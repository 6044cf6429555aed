"""``KafkaSink.send_many`` on a fake producer: batching per partition, and a refused record
batch narrowed down to the record at fault (the broker path is in the integration tests)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from producers.sinks import KafkaSink, OutRecord, RecordsResent, is_record_fault, outcomes_of

BAD = b"bad"


class FakeBatch:
    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.closed = False

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: list[Any]) -> object:
        assert not self.closed, "appended to after it was closed"
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True

    def size(self) -> int:
        return 61 + sum(len(v) + 20 for v in self.values)


class FakeProducer:
    """The broker refuses any record batch holding BAD; ``down`` fails everything."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[bytes]]] = []
        self.singles: list[bytes] = []
        self.asked: list[str] = []  # partitions_for, by topic
        self.down = False
        self.sent_closed: list[bool] = []  # per send_batch: was the batch closed (sent at once)

    async def partitions_for(self, topic: str) -> set[int]:
        self.asked.append(topic)
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent_closed.append(batch.closed)
        self.batches.append((topic, partition, batch.values))
        return self._future(BAD in batch.values)

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
        self.singles.append(value)
        return self._future(value == BAD)

    def _future(self, refuse: bool) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(KafkaConnectionError("down"))
        elif refuse:
            future.set_exception(MessageSizeTooLargeError("refused"))
        else:
            future.set_result("ok")
        return future


def sink_on(producer: FakeProducer, send_at_once: bool = True) -> KafkaSink:
    sink = KafkaSink({"bootstrap_servers": "unused:9092"}, "test", 1_048_576, send_at_once=send_at_once)
    sink._producer = producer  # type: ignore[assignment]
    sink._limits["out"] = (1_048_576, math.inf)  # known: no DescribeConfigs
    return sink


def test_one_record_batch_per_partition_and_keys_stay_together() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        records = [OutRecord("out", f"v{i}".encode(), f"k{i % 5}".encode()) for i in range(50)]
        deliveries = await sink_on(producer).send_many(records)
        outcomes = await asyncio.gather(*deliveries)
        assert outcomes == ["ok"] * 50 and producer.singles == []
        assert len(producer.batches) == len({p for _, p, _ in producer.batches}) <= 3
        assert producer.sent_closed == [True] * len(producer.batches)  # closed: aiokafka sends them at once
        # a record batch's records share its delivery: one per batch
        assert len(set(deliveries)) == len(producer.batches)
        where = {v: p for _, p, values in producer.batches for v in values}
        for key in {r.key for r in records}:
            assert len({where[r.value] for r in records if r.key == key}) == 1

    asyncio.run(scenario())


def test_batches_are_left_open_to_linger_when_the_sink_is_told_so() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        records = [OutRecord("out", f"v{i}".encode(), f"k{i % 5}".encode()) for i in range(20)]
        await asyncio.gather(*await sink_on(producer, send_at_once=False).send_many(records))
        assert producer.batches and producer.sent_closed == [False] * len(producer.batches)

    asyncio.run(scenario())


def test_a_refused_record_batch_is_sent_again_record_by_record_so_only_the_culprit_fails() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        records = [OutRecord("out", BAD if i == 3 else f"v{i}".encode(), b"one-key") for i in range(8)]
        deliveries = await sink_on(producer).send_many(records)
        assert len(set(deliveries)) == 1  # one record batch, one delivery
        shared = await asyncio.gather(deliveries[0], return_exceptions=True)
        assert isinstance(shared[0], RecordsResent)
        outcomes = await outcomes_of(records, deliveries)
        assert [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)] == [3]
        assert is_record_fault(outcomes[3])  # type: ignore[arg-type]
        assert producer.singles == [r.value for r in records]  # in order, one at a time

    asyncio.run(scenario())


def test_an_outage_fails_every_delivery_of_the_batch_without_resending_one_by_one() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        producer.down = True
        records = [OutRecord("out", f"v{i}".encode(), b"k") for i in range(4)]
        outcomes = await asyncio.gather(*await sink_on(producer).send_many(records), return_exceptions=True)
        assert all(isinstance(o, KafkaConnectionError) for o in outcomes) and producer.singles == []

    asyncio.run(scenario())


def test_a_record_over_the_topic_limit_is_refused_before_it_is_sent() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        sink = sink_on(producer)
        sink._limits["out"] = (1000, math.inf)
        records = [OutRecord("out", b"x" * (5000 if i == 1 else 100), b"k") for i in range(3)]
        outcomes = await asyncio.gather(*await sink.send_many(records), return_exceptions=True)
        assert isinstance(outcomes[1], MessageSizeTooLargeError) and outcomes[0] == outcomes[2] == "ok"
        assert all(b"x" * 5000 not in values for _, _, values in producer.batches)

    asyncio.run(scenario())


def test_a_topics_partitions_are_asked_once_a_call_however_its_topics_alternate() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        sink = sink_on(producer)
        sink._limits["dlq"] = (1_048_576, math.inf)
        records = [OutRecord("out" if i % 2 else "dlq", f"v{i}".encode(), b"k") for i in range(10)]
        outcomes = await asyncio.gather(*await sink.send_many(records))
        assert outcomes == ["ok"] * 10
        assert sorted(producer.asked) == ["dlq", "out"]
        assert sorted(v for _, _, values in producer.batches for v in values) == sorted(r.value for r in records)

    asyncio.run(scenario())


def test_a_record_at_its_topic_limit_is_sent_and_one_byte_over_refused() -> None:
    # the weight send_many counts a record by is a bound a few bytes over its size; the
    # exact size decides near the limit
    from producers.sinks import _size

    async def scenario() -> None:
        record = OutRecord("out", b"x" * 5000, b"k", (("content-type", b"application/msgpack"),))
        exact = _size(record.key, record.value, list(record.headers))
        for limit, sent in ((exact, True), (exact - 1, False)):
            producer = FakeProducer()
            sink = sink_on(producer)
            sink._limits["out"] = (limit, math.inf)
            [outcome] = await outcomes_of([record], await sink.send_many([record]))
            assert (outcome == "ok") is sent, (limit, outcome)
            assert bool(producer.batches) is sent

    asyncio.run(scenario())


def test_the_weight_of_a_record_is_never_under_its_size_alone_in_a_batch() -> None:
    from producers.sinks import _LENGTHS_SLACK, _size

    for headers in ([], [("content-type", b"application/msgpack")], [("a", b"b" * 300)] * 3):
        framing = _size(b"", b"", headers) + _LENGTHS_SLACK
        for key_len in (0, 1, 63, 64, 8191, 8192, 20_000):
            for value_len in (0, 1, 63, 64, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152):
                key = b"k" * key_len if key_len else None
                exact = _size(key, b"v" * value_len, headers)
                assert exact <= framing + key_len + value_len <= exact + _LENGTHS_SLACK + 2
