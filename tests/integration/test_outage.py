"""Broker faults under a running worker, driven through the project's own CLI.

A 30 s outage (`streaminfer broker stop`, then `start`): the worker rides it out without
a restart, logs the outage in a few lines (not one per retry), and every transaction
gets its result. A wiped broker restarted on the same port is another cluster: the
worker refuses to commit its old offsets there and exits with code 5.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import LocalBroker
from pipeline.config import KafkaSettings
from pipeline.topics import create_topics
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.broker_cluster import broker_cli
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results, read_all
from tests.integration.workers import WorkerProcess, wait_until

OUTAGE_S = int(os.environ.get("STREAMINFER_TEST_OUTAGE_S", "30"))  # CI: 30; longer ones by hand


def broker_ok(home: Path, *args: str) -> None:
    proc = broker_cli(home, *args)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    home = tmp_path / "kafka"
    broker_ok(home, "start")
    state = LocalBroker(home).status()
    assert state is not None
    try:
        yield home, state.bootstrap
    finally:
        LocalBroker(home).reset()


@pytest.mark.timeout(420)
@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_30s_outage_through_broker_stop_and_start_loses_nothing(own_broker: tuple[Path, str],
                                                                   tmp_path: Path, delivery: str) -> None:
    home, bootstrap = own_broker
    topics = Topics(bootstrap, partitions=2)
    worker = WorkerProcess("outage", topics.worker_env() | {"STREAMINFER_DELIVERY": delivery}, tmp_path)
    try:
        worker.wait_assigned(2)
        events = list(iter_synthetic_transactions(900, seed=3))
        asyncio.run(publish(events[:300], bootstrap=bootstrap, topic=topics.inputs))
        collect_results(bootstrap, topics.results, 300, timeout_s=90)
        # a second wave is in the topic, part of it in flight, when the broker goes down
        asyncio.run(publish(events[300:600], bootstrap=bootstrap, topic=topics.inputs))
        broker_ok(home, "stop")
        lines_before = worker.log().count("\n")
        time.sleep(OUTAGE_S)
        assert worker.alive(), worker.log()[-3000:]
        outage_lines = worker.log().count("\n") - lines_before
        broker_ok(home, "start")
        assert LocalBroker(home).status().bootstrap == bootstrap  # type: ignore[union-attr]
        asyncio.run(publish(events[600:], bootstrap=bootstrap, topic=topics.inputs))
        collect_results(bootstrap, topics.results, 900, timeout_s=120)
        assert worker.alive(), worker.log()[-3000:]
        results = read_all(bootstrap, topics.results)  # duplicates included
    finally:
        code = worker.stop()
    ids = {r.event_id for r in results}
    assert ids == {e.id for e in events}, f"{len(ids)} of 900 transactions got results"
    duplicates = len(results) - len(ids)
    print(f"{delivery}, outage of {OUTAGE_S}s: {outage_lines} log lines meanwhile, {duplicates} duplicate results")
    assert outage_lines <= 20 + OUTAGE_S // 30 * 5, worker.log()[-4000:]
    if delivery == "exactly-once":
        assert duplicates == 0
    assert "Kafka unreachable" in worker.log() and "Kafka reachable again" in worker.log()
    assert code == 0


@pytest.mark.timeout(300)
def test_a_wiped_cluster_on_the_same_port_stops_the_worker_before_it_commits_there(
    own_broker: tuple[Path, str], tmp_path: Path,
) -> None:
    home, bootstrap = own_broker
    topics = Topics(bootstrap, partitions=1)
    worker = WorkerProcess("wiped", topics.worker_env(), tmp_path)
    try:
        worker.wait_assigned(1)
        asyncio.run(publish(iter_synthetic_transactions(50, seed=4), bootstrap=bootstrap, topic=topics.inputs))
        collect_results(bootstrap, topics.results, 50, timeout_s=60)
        port = bootstrap.rsplit(":", 1)[1]
        broker_ok(home, "reset")
        broker_ok(home, "start", "--port", port)  # a new cluster where the old one was
        names = [topics.inputs, topics.results, topics.dead_letters]
        asyncio.run(create_topics(KafkaSettings(kafka_bootstrap=bootstrap), names, 1))
        asyncio.run(publish(iter_synthetic_transactions(5, seed=5), bootstrap=bootstrap, topic=topics.inputs))
        wait_until(lambda: not worker.alive(), 120, "the worker to stop on the changed cluster",
                   logs_of=[worker])
    finally:
        code = worker.stop()
    assert code == 5, worker.log()[-3000:]
    assert "cluster id changed" in worker.log()



@pytest.mark.timeout(240)
def test_a_cluster_gone_past_the_outage_deadline_ends_the_worker_with_exit_3(
    own_broker: tuple[Path, str], tmp_path: Path,
) -> None:
    home, bootstrap = own_broker
    topics = Topics(bootstrap, partitions=1)
    env = topics.worker_env() | {"STREAMINFER_BROKER_OUTAGE_DEADLINE_S": "15"}
    worker = WorkerProcess("deadline", env, tmp_path)
    try:
        worker.wait_assigned(1)
        broker_ok(home, "stop")
        stopped_at = time.monotonic()
        wait_until(lambda: not worker.alive(), 90, "the worker to give up", logs_of=[worker])
        waited_s = time.monotonic() - stopped_at
    finally:
        code = worker.stop()
    print(f"worker gave up {waited_s:.0f}s after the broker stopped (deadline 15s)")
    assert code == 3, worker.log()[-3000:]
    assert "unreachable for" in worker.log() and waited_s < 60
