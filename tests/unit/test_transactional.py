"""PartitionTransactions against a fake producer: call order, failure mapping, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFenced
from aiokafka.structs import TopicPartition

from producers.transactional import (
    MAX_TRANSACTIONAL_ID_CHARS,
    OutRecord,
    PartitionTransactions,
    TransactionFailed,
    TransactionFenced,
    transactional_id,
)

TP0 = TopicPartition("in", 0)
TP1 = TopicPartition("in", 1)
GROUP = "g"
RECORDS = [
    OutRecord("results", b"r1", b"k1", (("content-type", b"application/msgpack"),)),
    OutRecord("dlq", b"d1", None),
]


class FakeProducer:
    """Records calls; knobs make one step fail or hang."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[Any] = []
        self.in_transaction = False
        self.send_error: BaseException | None = None        # set on the delivery future
        self.send_raises: BaseException | None = None       # raised by send() itself
        self.commit_error: BaseException | None = None
        self.abort_error: BaseException | None = None
        self.hang: set[str] = set()                         # step names that never return
        self.gate: asyncio.Event | None = None              # commit_transaction waits on it

    async def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hang:
            await asyncio.Event().wait()

    async def start(self) -> None:
        await self._step("start")

    async def stop(self) -> None:
        await self._step("stop")

    async def begin_transaction(self) -> None:
        assert not self.in_transaction, "transactions overlap"
        self.in_transaction = True
        await self._step("begin")

    async def send(self, topic: str, value: Any = None, key: Any = None, partition: int | None = None,
                   timestamp_ms: int | None = None, headers: Any = None) -> asyncio.Future[Any]:
        assert self.in_transaction
        self.calls.append(("send", topic, value, key, tuple(headers or ())))
        if self.send_raises is not None:
            raise self.send_raises
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.send_error is not None:
            future.set_exception(self.send_error)
        else:
            future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        assert self.in_transaction
        self.calls.append(("offsets", dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        await self._step("commit")
        if self.gate is not None:
            await self.gate.wait()
        if self.commit_error is not None:
            raise self.commit_error
        self.in_transaction = False

    async def abort_transaction(self) -> None:
        await self._step("abort")
        if self.abort_error is not None:
            raise self.abort_error
        self.in_transaction = False


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeProducer] = []
        self.hang_start = False

    def __call__(self, **kwargs: Any) -> FakeProducer:
        producer = FakeProducer(**kwargs)
        if self.hang_start:
            producer.hang.add("start")
        self.made.append(producer)
        return producer

    def of(self, tp: TopicPartition) -> list[FakeProducer]:
        tid = transactional_id(GROUP, tp)
        return [p for p in self.made if p.kwargs["transactional_id"] == tid]


def run(body: Callable[[PartitionTransactions, Factory], Awaitable[None]], **options: Any) -> Factory:
    factory = Factory()

    async def main() -> None:
        txns = PartitionTransactions({"bootstrap_servers": "x:1"}, GROUP, producer_factory=factory, **options)
        try:
            await asyncio.wait_for(body(txns, factory), 10)
        finally:
            await asyncio.wait_for(txns.close(), 10)

    asyncio.run(main())
    return factory


def test_transactional_id_is_deterministic_and_distinct() -> None:
    assert transactional_id("g", TP0) == transactional_id("g", TopicPartition("in", 0)) == "streaminfer:g:in:0"
    ids = {
        transactional_id("g", TP0), transactional_id("g", TP1), transactional_id("h", TP0),
        transactional_id("g", TopicPartition("other", 0)), transactional_id("g", TP0, prefix="p"),
        # a dot may be in both a group and a topic: the separator must not be one
        transactional_id("a.b", TopicPartition("c", 0)), transactional_id("a", TopicPartition("b.c", 0)),
    }
    assert len(ids) == 7


def test_transactional_id_length_is_bounded() -> None:
    long_a, long_b = "g" * 500 + "a", "g" * 500 + "b"
    a, b = transactional_id(long_a, TP0), transactional_id(long_b, TP0)
    assert len(a) == len(b) == MAX_TRANSACTIONAL_ID_CHARS
    assert a != b and a == transactional_id(long_a, TP0)
    assert a.startswith("streaminfer:ggg")
    assert transactional_id(long_a, TP0) != transactional_id(long_a, TP1)
    with pytest.raises(ValueError):
        transactional_id("", TP0)


def test_rejects_settings_it_owns_and_unsafe_timeouts() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="transactional_id"):
            PartitionTransactions({"transactional_id": "x"}, GROUP)
        with pytest.raises(ValueError, match="transaction_timeout_ms"):
            PartitionTransactions({}, GROUP, commit_timeout_s=60, transaction_timeout_ms=60_000)

    asyncio.run(main())


def test_assign_starts_one_producer_per_partition() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0, TP1, TP0])
        await txns.assign([TP1])  # already assigned: nothing new
        assert txns.assigned() == {TP0, TP1}
        assert len(factory.made) == 2
        for tp in (TP0, TP1):
            (producer,) = factory.of(tp)
            assert producer.calls == ["start"]
            assert producer.kwargs["enable_idempotence"] is True
            assert producer.kwargs["acks"] == "all"
            assert producer.kwargs["bootstrap_servers"] == "x:1"
            assert producer.kwargs["max_request_size"] == 2_000_000

    run(body, max_request_size=2_000_000)


def test_commit_is_one_transaction_in_order() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        await txns.commit(TP0, RECORDS, next_offset=42)
        (producer,) = factory.of(TP0)
        assert producer.calls == [
            "start",
            "begin",
            ("send", "results", b"r1", b"k1", (("content-type", b"application/msgpack"),)),
            ("send", "dlq", b"d1", None, ()),
            ("offsets", {TP0: 42}, GROUP),
            "commit",
        ]
        with pytest.raises(ValueError, match="not assigned"):
            await txns.commit(TP1, RECORDS, next_offset=1)

    run(body)


@pytest.mark.parametrize("where", ["future", "send"])
def test_send_failure_aborts_and_keeps_the_producer(where: str) -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (producer,) = factory.of(TP0)
        error = MessageSizeTooLargeError()
        if where == "future":
            producer.send_error = error
        else:
            producer.send_raises = error
        with pytest.raises(TransactionFailed) as info:
            await txns.commit(TP0, RECORDS, next_offset=7)
        assert info.value.tp == TP0 and info.value.cause is error and info.value.aborted
        assert "offsets" not in [c[0] for c in producer.calls if isinstance(c, tuple)]
        assert producer.calls[-1] == "abort" and "commit" not in producer.calls
        producer.send_error = producer.send_raises = None
        await txns.commit(TP0, RECORDS, next_offset=7)  # same producer, usable again
        assert factory.of(TP0) == [producer] and producer.calls[-1] == "commit"

    run(body)


@pytest.mark.parametrize("where", ["send", "commit", "abort"])
def test_fenced_raises_transaction_fenced_and_drops_the_partition(where: str) -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0, TP1])
        (producer,) = factory.of(TP0)
        if where == "send":
            producer.send_error = ProducerFenced()
        elif where == "commit":
            producer.commit_error = ProducerFenced()
        else:  # an ordinary failure, then the abort learns about the fence
            producer.send_error = KafkaError("boom")
            producer.abort_error = ProducerFenced()
        with pytest.raises(TransactionFenced) as info:
            await txns.commit(TP0, RECORDS, next_offset=3)
        assert info.value.tp == TP0
        await asyncio.sleep(0)  # the retired producer stops in the background
        assert producer.calls[-1] == "stop"
        assert txns.assigned() == {TP1}
        with pytest.raises(TransactionFenced):
            await txns.commit(TP0, RECORDS, next_offset=3)
        assert len(factory.of(TP0)) == 1  # no re-init: that would fence the new owner back
        await txns.assign([TP0])  # the group hands it to us again: a fresh producer
        await txns.commit(TP0, RECORDS, next_offset=3)
        assert len(factory.of(TP0)) == 2 and txns.assigned() == {TP0, TP1}

    run(body)


def test_hung_commit_times_out_and_the_producer_is_replaced() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (stuck,) = factory.of(TP0)
        stuck.hang.add("commit")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransactionFailed) as info:
            await txns.commit(TP0, RECORDS, next_offset=5)
        assert loop.time() - started < 1.0
        assert isinstance(info.value.cause, TimeoutError) and not info.value.aborted
        assert "abort" not in stuck.calls  # outcome unknown: never reuse it
        await asyncio.sleep(0)
        assert stuck.calls[-1] == "stop"
        await txns.commit(TP0, RECORDS, next_offset=5)
        stuck_again, fresh = factory.of(TP0)
        assert stuck_again is stuck
        assert fresh.calls[0] == "start" and fresh.calls[-1] == "commit"

    run(body, commit_timeout_s=0.2)


def test_failed_abort_replaces_the_producer() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (producer,) = factory.of(TP0)
        producer.send_error = KafkaError("boom")
        producer.abort_error = AssertionError("Invalid state transition FATAL_ERROR -> ABORTING_TRANSACTION")
        with pytest.raises(TransactionFailed) as info:
            await txns.commit(TP0, RECORDS, next_offset=5)
        assert not info.value.aborted
        await txns.recover(TP0)
        assert len(factory.of(TP0)) == 2 and factory.of(TP0)[1].calls == ["start"]

    run(body)


def test_hung_start_fails_assign_and_is_retried_by_commit() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        factory.hang_start = True
        with pytest.raises(TransactionFailed):
            await txns.assign([TP0])
        assert txns.assigned() == {TP0}
        factory.hang_start = False
        await txns.commit(TP0, RECORDS, next_offset=1)
        assert len(factory.of(TP0)) == 2 and factory.of(TP0)[1].calls[-1] == "commit"

    run(body, control_timeout_s=0.2)


def test_revoke_waits_for_the_in_flight_commit_then_stops() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0, TP1])
        (producer,) = factory.of(TP0)
        producer.gate = asyncio.Event()
        commit = asyncio.create_task(txns.commit(TP0, RECORDS, next_offset=9))
        await asyncio.sleep(0.05)
        revoke = asyncio.create_task(txns.revoke([TP0]))
        await asyncio.sleep(0.05)
        assert not revoke.done() and "stop" not in producer.calls
        producer.gate.set()
        await commit
        await revoke
        assert producer.calls[-2:] == ["commit", "stop"]
        assert txns.assigned() == {TP1}
        with pytest.raises(ValueError):
            await txns.commit(TP0, RECORDS, next_offset=10)

    run(body)


def test_cancelled_commit_retires_the_producer() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (producer,) = factory.of(TP0)
        producer.hang.add("commit")
        commit = asyncio.create_task(txns.commit(TP0, RECORDS, next_offset=9))
        await asyncio.sleep(0.05)
        commit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await commit
        await asyncio.sleep(0)
        assert producer.calls[-1] == "stop"
        await txns.commit(TP0, RECORDS, next_offset=9)
        assert len(factory.of(TP0)) == 2

    run(body)


def test_commits_of_one_partition_never_overlap() -> None:
    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (producer,) = factory.of(TP0)
        producer.gate = asyncio.Event()
        first = asyncio.create_task(txns.commit(TP0, RECORDS, next_offset=1))
        second = asyncio.create_task(txns.commit(TP0, RECORDS, next_offset=2))
        await asyncio.sleep(0.05)
        assert producer.calls.count("begin") == 1  # FakeProducer asserts on overlap too
        producer.gate.set()
        await asyncio.gather(first, second)
        offsets = [c[1] for c in producer.calls if isinstance(c, tuple) and c[0] == "offsets"]
        assert offsets == [{TP0: 1}, {TP0: 2}]

    run(body)


def test_close_stops_every_producer() -> None:
    factory = run(lambda txns, _: txns.assign([TP0, TP1]))
    assert [p.calls[-1] for p in factory.made] == ["stop", "stop"]


class _FakeConn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_an_abandoned_stop_still_closes_the_sockets() -> None:
    """A stop() that outlives the control timeout is cancelled; its connections close anyway."""
    conns: list[_FakeConn] = []
    tasks: list[asyncio.Task[None]] = []

    async def body(txns: PartitionTransactions, factory: Factory) -> None:
        await txns.assign([TP0])
        (producer,) = factory.of(TP0)
        producer.hang.add("stop")
        sender_task = asyncio.get_running_loop().create_task(asyncio.Event().wait())
        tasks.append(sender_task)
        conns.extend([_FakeConn(), _FakeConn()])
        producer._sender = type("Sender", (), {"sender_task": sender_task})()  # type: ignore[attr-defined]
        producer.client = type("Client", (), {"_conns": dict(enumerate(conns)), "_sync_task": None})()  # type: ignore[attr-defined]

    run(body, control_timeout_s=0.2)
    assert conns and all(conn.closed for conn in conns)
    assert tasks[0].cancelled()


def test_aiokafka_still_has_what_an_abandoned_stop_closes() -> None:
    """The attributes ``_drop_connections`` reaches for exist on aiokafka's own producer."""
    from aiokafka import AIOKafkaProducer

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        try:
            assert hasattr(producer, "_sender") and hasattr(producer._sender, "sender_task")
            assert isinstance(producer.client._conns, dict) and hasattr(producer.client, "_sync_task")
        finally:
            await producer.stop()

    asyncio.run(main())
