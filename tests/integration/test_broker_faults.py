"""Broker faults on the project's own local brokers: a restart keeps everything, a reset
forgets everything, and a 3-node cluster loses no acknowledged message when a partition
leader is SIGKILLed mid-stream.

Every test runs its own ``LocalBroker`` in a temporary home, never the session's broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from consumers.results_reader import read_dead_letters
from devtools.broker import LocalBroker
from pipeline.config import KafkaSettings
from pipeline.topics import create_topics
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from schemas import Result
from tests.integration.broker_cluster import (
    broker_cli,
    cluster_id,
    consume,
    idempotent_producer,
    partition_leader,
    produce,
    topic_names,
    wait_until_in_sync,
)
from tests.integration.conftest import Topics
from tests.integration.helpers import read_all
from tests.integration.workers import WorkerProcess, wait_until

MESSAGES = 500
STREAM_MESSAGES = 3000
STREAM_RATE_PER_S = 300
TRANSACTIONS = 2000
TRANSACTIONS_RATE_PER_S = 200
IN_SYNC_TIMEOUT_S = 60


def _values(count: int) -> list[bytes]:
    return [f"m-{i:05d}".encode() for i in range(count)]


# -- one node: restart and reset ------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_restarted_broker_keeps_its_port_cluster_id_and_data(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker")
    topic = f"kept-{uuid.uuid4().hex[:8]}"
    values = _values(MESSAGES)
    try:
        first = broker.start()
        asyncio.run(create_topics(KafkaSettings(kafka_bootstrap=first.bootstrap), [topic], partitions=2))
        asyncio.run(produce(first.bootstrap, topic, values))
        assert asyncio.run(cluster_id(first.bootstrap)) == first.cluster_id

        assert broker.stop() is True
        assert broker.status() is None
        again = broker.start()
        assert (again.bootstrap, again.cluster_id) == (first.bootstrap, first.cluster_id)
        assert again.pid != first.pid
        assert asyncio.run(cluster_id(again.bootstrap)) == first.cluster_id
        seen = asyncio.run(consume(again.bootstrap, topic, set(values), timeout_s=30))
        assert set(values) <= seen.keys(), f"{len(set(values) - seen.keys())} messages lost by the restart"

        assert broker.reset() is True
        fresh = broker.start()
        assert fresh.cluster_id != first.cluster_id
        assert topic not in topic_names(fresh.bootstrap)
    finally:
        broker.stop()


def _headline(out: str) -> tuple[str, str]:
    """(bootstrap, cluster id) from ``broker start``/``status`` output."""
    found = re.search(r"kafka running at (\S+) \(cluster (\S+),", out)
    assert found, out
    return found[1], found[2]


@pytest.mark.timeout(180)
def test_the_cli_restarts_on_the_same_port_refuses_a_taken_one_and_resets(tmp_path: Path) -> None:
    home = tmp_path / "cli-broker"
    try:
        started = broker_cli(home, "start")
        assert started.returncode == 0, started.stderr
        bootstrap, cluster = _headline(started.stdout)
        status = broker_cli(home, "status")
        assert status.returncode == 0 and _headline(status.stdout) == (bootstrap, cluster)
        assert broker_cli(home, "stop").stdout.strip() == "stopped"
        assert (broker_cli(home, "status").returncode, broker_cli(home, "stop").stdout.strip()) == (1, "not running")

        port = int(bootstrap.rsplit(":", 1)[1])
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            refused = broker_cli(home, "start")
        assert refused.returncode == 2
        assert f"port {port} (node 1's client listener" in refused.stderr

        restarted = broker_cli(home, "start")
        assert restarted.returncode == 0, restarted.stderr
        assert _headline(restarted.stdout) == (bootstrap, cluster)
        reset = broker_cli(home, "reset")
        assert reset.stdout.strip() == "stopped, data and saved config deleted"
        assert broker_cli(home, "status").returncode == 1
        assert not (home / "cluster.json").exists()
        assert not list(home.glob("node-*"))
    finally:
        LocalBroker(home).stop()


# -- three nodes: a partition leader is killed mid-stream -----------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("cluster3"))
    started = time.monotonic()
    broker.start(nodes=3)
    print(f"3-node cluster up in {time.monotonic() - started:.1f}s")
    try:
        yield broker
    finally:
        broker.stop()


def _healthy(cluster: LocalBroker) -> str:
    """Every node up and every partition fully replicated: a kill then costs one replica only."""
    state = cluster.start()
    assert len(state.running) == 3
    wait_until_in_sync(state.bootstrap, replicas=3, timeout_s=IN_SYNC_TIMEOUT_S)
    return state.bootstrap


@dataclass
class StreamReport:
    """What a producer saw while a leader died: per message, sent and acknowledged times."""

    killed_node: int = 0
    killed_at: float = 0.0
    sent_at: dict[bytes, float] = field(default_factory=dict)
    acked_at: dict[bytes, float] = field(default_factory=dict)
    failures: list[BaseException] = field(default_factory=list)

    def longest_wait_s(self) -> float:
        return max(self.acked_at[v] - self.sent_at[v] for v in self.acked_at)

    def stalled_s(self) -> float:
        """From the kill to the first acknowledgement of a message sent after it."""
        after = [self.acked_at[v] for v, at in self.sent_at.items() if at > self.killed_at and v in self.acked_at]
        return min(after) - self.killed_at


async def _stream_through_a_leader_kill(cluster: LocalBroker, bootstrap: str, topic: str) -> StreamReport:
    """Send ``STREAM_MESSAGES`` at a steady rate; a third of the way in, SIGKILL the leader of
    partition 0 (as the producer's own metadata names it)."""
    report = StreamReport()
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        futures = []
        started = time.monotonic()
        for i, value in enumerate(_values(STREAM_MESSAGES)):
            await asyncio.sleep(max(0.0, started + i / STREAM_RATE_PER_S - time.monotonic()))
            if i == STREAM_MESSAGES // 3:
                report.killed_node = producer.client.cluster.leader_for_partition(TopicPartition(topic, 0))
                report.killed_at = time.monotonic()
                assert cluster.kill_node(report.killed_node)
            report.sent_at[value] = time.monotonic()
            future = await producer.send(topic, value, key=value)
            future.add_done_callback(lambda f, v=value: report.acked_at.setdefault(v, time.monotonic()))
            futures.append(future)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        report.failures = [o for o in outcomes if isinstance(o, BaseException)]
    finally:
        await producer.stop()
    return report


@pytest.mark.timeout(180)
def test_killing_a_partition_leader_mid_stream_loses_no_acknowledged_message(cluster: LocalBroker) -> None:
    bootstrap = _healthy(cluster)
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(KafkaSettings(kafka_bootstrap=bootstrap), [topic], partitions=3, replication=3))
    wait_until_in_sync(bootstrap, replicas=3, timeout_s=IN_SYNC_TIMEOUT_S)

    report = asyncio.run(_stream_through_a_leader_kill(cluster, bootstrap, topic))
    assert not report.failures, f"{len(report.failures)} sends failed, e.g. {report.failures[0]!r}"
    new_leader = partition_leader(bootstrap, topic, 0)
    assert new_leader not in (report.killed_node, -1)

    values = set(_values(STREAM_MESSAGES))
    seen = asyncio.run(consume(bootstrap, topic, values, timeout_s=60))
    missing = values - seen.keys()
    assert not missing, f"{len(missing)} acknowledged messages missing, e.g. {sorted(missing)[:5]}"

    restarted = time.monotonic()
    cluster.start_node(report.killed_node)
    wait_until_in_sync(bootstrap, replicas=3, timeout_s=IN_SYNC_TIMEOUT_S)
    print(
        f"killed node {report.killed_node} (leader of {topic}/0; now node {new_leader}): "
        f"sends after the kill waited {report.stalled_s():.1f}s for their first ack, the longest send "
        f"{report.longest_wait_s():.1f}s; {sum(seen.values()) - len(values)} duplicates read; "
        f"node back and in sync {time.monotonic() - restarted:.1f}s after its restart"
    )


def _dead_letter_count(bootstrap: str, topic: str) -> int:
    async def count() -> int:
        async with contextlib.aclosing(read_dead_letters(bootstrap=bootstrap, topic=topic)) as letters:
            return len([letter async for letter in letters])

    return asyncio.run(count())


@pytest.mark.timeout(240)
def test_a_worker_loses_nothing_when_the_leader_of_its_input_is_killed(
    cluster: LocalBroker, tmp_path: Path
) -> None:
    bootstrap = _healthy(cluster)
    topics = Topics(bootstrap, partitions=3, replication=3)
    wait_until_in_sync(bootstrap, replicas=3, timeout_s=IN_SYNC_TIMEOUT_S)
    worker = WorkerProcess("survivor", topics.worker_env(), tmp_path)
    killed = 0
    try:
        wait_until(lambda: len(worker.assigned()) == 3, 120, "the worker to take all 3 partitions", [worker])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            feeding = pool.submit(asyncio.run, publish(
                iter_synthetic_transactions(TRANSACTIONS, seed=11), bootstrap=bootstrap, topic=topics.inputs,
                rate_per_s=TRANSACTIONS_RATE_PER_S, progress=False,
            ))
            wait_until(lambda: len(read_all(bootstrap, topics.results)) > TRANSACTIONS // 5, 60,
                       "results to flow", [worker])
            killed = partition_leader(bootstrap, topics.inputs, 0)
            killed_at = time.monotonic()
            assert cluster.kill_node(killed)
            published = feeding.result(timeout=120)
        assert published.count == TRANSACTIONS
        results: list[Result] = []
        deadline = time.monotonic() + 120
        while len({r.event_id for r in results}) < TRANSACTIONS and time.monotonic() < deadline:
            assert worker.alive(), f"the worker exited {worker.proc.returncode}:\n{worker.log()[-3000:]}"
            results = read_all(bootstrap, topics.results)
        caught_up_s = time.monotonic() - killed_at
    finally:
        code = worker.stop()
        if killed:
            cluster.start_node(killed)
    ids = {r.event_id for r in results}
    assert len(ids) == TRANSACTIONS, (
        f"{TRANSACTIONS - len(ids)} of {TRANSACTIONS} transactions have no result\n{worker.log()[-3000:]}"
    )
    assert code == 0, worker.log()[-3000:]
    dead = _dead_letter_count(bootstrap, topics.dead_letters)
    print(
        f"killed node {killed} (leader of {topics.inputs}/0): every transaction has a result "
        f"{caught_up_s:.1f}s after the kill; {len(results) - len(ids)} duplicate results, {dead} dead letters"
    )
    assert dead == 0
