"""PartitionTransactions against a real broker: atomicity, aborts, zombie fencing, broker restart.

Every test body runs under one ``asyncio.wait_for``; every broker call inside it is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from devtools.broker import LocalBroker
from pipeline.config import KafkaSettings
from pipeline.topics import create_topics
from producers.transactional import (
    OutRecord,
    PartitionTransactions,
    ProducerFactory,
    TransactionFailed,
    TransactionFenced,
)
from tests.integration.conftest import Topics

TEST_BUDGET_S = 50
Hook = Callable[[], Awaitable[None]]


def run(body: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(body, TEST_BUDGET_S))
    gc.collect()  # a socket a test left open warns here, in that test, not in a later one


def records(topic: str, tag: str, count: int, **extra: Any) -> list[OutRecord]:
    return [OutRecord(topic, f"{tag}-{i}".encode(), f"key-{i}".encode(), **extra) for i in range(count)]


def values(recs: Sequence[OutRecord]) -> list[bytes]:
    return [r.value for r in recs]


def hooked_factory(hooks: list[Hook]) -> ProducerFactory:
    """Producers that run (and drop) the next queued hook between the deliveries and
    ``send_offsets_to_transaction``: the records are on the broker, the transaction is open."""

    class HookedProducer(AIOKafkaProducer):
        async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
            if hooks:
                await hooks.pop(0)()
            await super().send_offsets_to_transaction(offsets, group_id)

    return HookedProducer


@contextlib.asynccontextmanager
async def transactions(bootstrap: str, group: str, **options: Any) -> AsyncIterator[PartitionTransactions]:
    txns = PartitionTransactions({"bootstrap_servers": bootstrap}, group, **options)
    try:
        yield txns
    finally:
        await asyncio.wait_for(txns.close(), 30)


async def read_topics(
    bootstrap: str, topics: Sequence[str], partitions: int, isolation: str, timeout_s: float = 15,
) -> dict[str, list[bytes]]:
    """Every value on ``topics`` from the beginning up to the end offsets (the last stable
    offset for ``read_committed``), per topic, in partition then offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
        auto_offset_reset="earliest", request_timeout_ms=10_000,
    )
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        got: dict[TopicPartition, list[bytes]] = defaultdict(list)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"did not reach the end offsets {ends}"
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                got[tp] += [m.value for m in messages]
        out: dict[str, list[bytes]] = {t: [] for t in topics}
        for tp in tps:
            out[tp.topic] += got[tp]
        return out
    finally:
        await consumer.stop()


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 15)
    try:
        return await asyncio.wait_for(consumer.committed(tp), 15)
    finally:
        await consumer.stop()


async def settled_offset(
    bootstrap: str, group: str, tp: TopicPartition, expected: int, within_s: float = 15,
) -> int | None:
    """The committed offset once it equals ``expected`` (or the last one read after ``within_s``).

    aiokafka's OffsetFetch does not ask for stable offsets: just after a transaction commits,
    above all right after a broker restart, the broker may still answer with the previous
    offset while the commit's markers are written.
    """
    deadline = time.monotonic() + within_s
    found = await committed_offset(bootstrap, group, tp)
    while found != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        found = await committed_offset(bootstrap, group, tp)
    return found


# -- (a) one transaction, two output topics, the input offset -------------------------------


def test_commit_makes_records_and_offset_visible_together(topics: Topics) -> None:
    tp = TopicPartition(topics.inputs, 2)
    first = records(topics.results, "res", 5) + records(
        topics.dead_letters, "dlq", 2, headers=(("reason", b"decode_error"),))
    second = records(topics.results, "more", 3)

    async def body() -> None:
        async with transactions(topics.bootstrap, topics.group) as txns:
            await txns.assign([tp])
            await txns.commit(tp, first, next_offset=7)
            await txns.commit(tp, second, next_offset=10)
        seen = await read_topics(
            topics.bootstrap, [topics.results, topics.dead_letters], topics.partitions, "read_committed")
        assert sorted(seen[topics.results]) == sorted(values(first[:5]) + values(second))
        assert sorted(seen[topics.dead_letters]) == sorted(values(first[5:]))
        assert await committed_offset(topics.bootstrap, topics.group, tp) == 10

    run(body())


# -- (b) an aborted transaction ---------------------------------------------------------------


def test_failed_transaction_is_aborted_and_leaves_the_offset(topics: Topics) -> None:
    tp = TopicPartition(topics.inputs, 0)
    kept = records(topics.results, "kept", 3)
    doomed = records(topics.results, "doomed", 4)
    too_large = OutRecord(topics.results, b"x" * 2_000_000, b"big")  # over max_request_size: send() raises

    async def body() -> None:
        async with transactions(topics.bootstrap, topics.group) as txns:
            await txns.assign([tp])
            await txns.commit(tp, kept, next_offset=3)
            with pytest.raises(TransactionFailed) as info:
                await txns.commit(tp, [*doomed, too_large], next_offset=8)
            assert info.value.aborted and info.value.tp == tp
        committed = await read_topics(topics.bootstrap, [topics.results], topics.partitions, "read_committed")
        uncommitted = await read_topics(topics.bootstrap, [topics.results], topics.partitions, "read_uncommitted")
        assert sorted(committed[topics.results]) == sorted(values(kept))
        # the doomed records were written, then aborted
        assert sorted(uncommitted[topics.results]) == sorted(values(kept) + values(doomed))
        assert await committed_offset(topics.bootstrap, topics.group, tp) == 3

    run(body())


# -- (c) zombie fencing -----------------------------------------------------------------------


def test_new_owner_fences_a_zombie_mid_transaction(topics: Topics) -> None:
    tp = TopicPartition(topics.inputs, 1)
    before = records(topics.results, "a-ok", 2)
    zombie = records(topics.results, "zombie", 3)
    after = records(topics.results, "b-ok", 2)

    async def body() -> None:
        paused, release = asyncio.Event(), asyncio.Event()

        async def pause() -> None:
            paused.set()
            await release.wait()

        hooks: list[Hook] = []
        async with (
            transactions(topics.bootstrap, topics.group, client_id="worker-a",
                         producer_factory=hooked_factory(hooks)) as worker_a,
            transactions(topics.bootstrap, topics.group, client_id="worker-b") as worker_b,
        ):
            await worker_a.assign([tp])
            await worker_a.commit(tp, before, next_offset=2)
            # A's next transaction stops with its records on the broker, its transaction open ...
            hooks.append(pause)
            a_commit = asyncio.create_task(worker_a.commit(tp, zombie, next_offset=5))
            await asyncio.wait_for(paused.wait(), 15)
            # ... when B takes the partition over: B's InitProducerId aborts A's transaction
            await worker_b.assign([tp])
            release.set()
            with pytest.raises(TransactionFenced):
                await a_commit
            assert worker_a.assigned() == set()
            with pytest.raises(TransactionFenced):  # and it stays fenced
                await worker_a.commit(tp, zombie, next_offset=5)
            await worker_b.commit(tp, after, next_offset=4)
        committed = await read_topics(topics.bootstrap, [topics.results], topics.partitions, "read_committed")
        uncommitted = await read_topics(topics.bootstrap, [topics.results], topics.partitions, "read_uncommitted")
        assert sorted(committed[topics.results]) == sorted(values(before) + values(after))
        assert set(values(zombie)) <= set(uncommitted[topics.results])
        assert await committed_offset(topics.bootstrap, topics.group, tp) == 4

    run(body())


# -- (d) the broker restarts mid-transaction --------------------------------------------------

RESTART_TOPICS = ("restart-in", "restart-out")


@pytest.fixture(scope="module")
def restartable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of our own that keeps its data and port across stop/start."""
    broker = LocalBroker(Path(tmp_path_factory.mktemp("txn-restart")) / "kafka")
    state = broker.start()
    try:
        asyncio.run(create_topics(KafkaSettings(kafka_bootstrap=state.bootstrap), list(RESTART_TOPICS), 2))
        yield broker
    finally:
        broker.reset()


class RestartBroker:
    """A hook: stop the broker now, start it again ``outage_s`` later, in the background."""

    def __init__(self, broker: LocalBroker, outage_s: float) -> None:
        self.broker = broker
        self.outage_s = outage_s
        self.restarted: asyncio.Task[object] | None = None

    async def __call__(self) -> None:
        await asyncio.to_thread(self.broker.stop)
        self.restarted = asyncio.get_running_loop().create_task(self._start_later())

    async def _start_later(self) -> object:
        await asyncio.sleep(self.outage_s)
        return await asyncio.to_thread(self.broker.start)

    async def wait_restarted(self, timeout_s: float) -> None:
        assert self.restarted is not None, "the hook did not run"
        await asyncio.wait_for(self.restarted, timeout_s)


def _bootstrap(broker: LocalBroker) -> str:
    state = broker.status()
    assert state is not None
    return state.bootstrap


@pytest.mark.parametrize(
    ("partition", "commit_timeout_s", "outage_s", "commits"),
    [
        (0, 5.0, 8.0, False),  # down longer than the commit timeout: TransactionFailed, then a fresh producer
        (1, 20.0, 0.0, True),  # back within the commit timeout: aiokafka resumes and the transaction commits
    ],
    ids=["long-outage", "short-outage"],
)
def test_broker_restart_mid_transaction(
    restartable_broker: LocalBroker, partition: int, commit_timeout_s: float, outage_s: float, commits: bool,
) -> None:
    broker = restartable_broker
    bootstrap = broker.start().bootstrap  # a no-op unless an earlier case left it down
    group = f"restart-group-{partition}"
    tp = TopicPartition(RESTART_TOPICS[0], partition)
    out = RESTART_TOPICS[1]
    first, interrupted, last = (records(out, f"p{partition}-{tag}", 3) for tag in ("first", "cut", "last"))

    async def body() -> None:
        hooks: list[Hook] = []
        async with transactions(bootstrap, group, commit_timeout_s=commit_timeout_s, control_timeout_s=10,
                                producer_factory=hooked_factory(hooks)) as txns:
            await txns.assign([tp])
            await txns.commit(tp, first, next_offset=3)
            restart = RestartBroker(broker, outage_s)
            hooks.append(restart)
            started = time.monotonic()
            if commits:
                await txns.commit(tp, interrupted, next_offset=6)
            else:
                with pytest.raises(TransactionFailed) as info:
                    await txns.commit(tp, interrupted, next_offset=6)
                assert not info.value.aborted and isinstance(info.value.cause, TimeoutError)
            assert time.monotonic() - started < commit_timeout_s + 2  # ended, not hung
            await restart.wait_restarted(40)
            assert _bootstrap(broker) == bootstrap  # same port, same data
            await txns.recover(tp)  # settles the cut transaction on the broker
            resume_at = await settled_offset(bootstrap, group, tp, 6 if commits else 3)
            assert resume_at == (6 if commits else 3)
            await txns.commit(tp, last, next_offset=resume_at + 3)
        committed = await read_topics(bootstrap, [out], 2, "read_committed")
        uncommitted = await read_topics(bootstrap, [out], 2, "read_uncommitted")
        mine = sorted(v for v in committed[out] if v.startswith(f"p{partition}-".encode()))
        expected = values(first) + (values(interrupted) if commits else []) + values(last)
        assert mine == sorted(expected)
        assert set(values(interrupted)) <= set(uncommitted[out])
        assert await committed_offset(bootstrap, group, tp) == resume_at + 3

    run(body())
