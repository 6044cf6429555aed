"""Shutdown commits what was delivered; a restarted worker replays nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until


async def committed_and_end(topics: Topics) -> tuple[dict[int, int | None], dict[int, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap, group_id=topics.group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.inputs, p) for p in range(topics.partitions)]
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        return committed, ends
    finally:
        await consumer.stop()


def test_sigterm_commits_delivered_offsets_and_a_restart_replays_nothing(topics: Topics, tmp_path: Path) -> None:
    env = topics.worker_env()
    first = WorkerProcess("first", env, tmp_path)
    try:
        wait_until(lambda: len(first.assigned()) == 4, 60, "the worker to join", [first])
        asyncio.run(publish(iter_synthetic_transactions(300, seed=5), bootstrap=topics.bootstrap, topic=topics.inputs))
        assert len(collect_results(topics.bootstrap, topics.results, 300, timeout_s=90)) == 300
    finally:
        assert first.stop() == 0, first.log()[-2000:]
    committed, ends = asyncio.run(committed_and_end(topics))
    assert committed == ends, "every delivered offset is committed on SIGTERM"

    second = WorkerProcess("second", env, tmp_path)
    try:
        wait_until(lambda: len(second.assigned()) == 4, 60, "the restarted worker to join", [second])
        asyncio.run(publish(iter_synthetic_transactions(10, seed=6), bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, 311, timeout_s=20)
    finally:
        assert second.stop() == 0, second.log()[-2000:]
    assert len(results) == 310
    assert sum(r.worker_id == "second" for r in results) == 10
