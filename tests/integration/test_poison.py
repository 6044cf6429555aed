"""Poison on a real broker: one bad item never stops a worker, never takes its batch down,
and ends as exactly one dead letter with a reason; later messages still get results."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from producers.publisher import publish
from schemas import Transaction
from tests.integration.broken_models import POISON_AMOUNT, UNENCODABLE_AMOUNT
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_dead_letters, collect_results
from tests.integration.workers import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
MODEL = "python:tests.integration.broken_models:poison_aware"


def txn(i: int, amount: float) -> Transaction:
    return Transaction(id=f"t{i}", account_id=f"acct-{i % 5}", timestamp_ms=1_700_000_000_000 + i,
                       amount=amount, currency="EUR")


def _worker(topics: Topics, tmp_path: Path, partitions: int = 4, **env: str) -> WorkerProcess:
    worker = WorkerProcess("poison", topics.worker_env() | {
        "STREAMINFER_TRANSACTION_MODEL": MODEL, "PYTHONPATH": str(ROOT), **env,
    }, tmp_path)
    worker.wait_assigned(partitions)
    return worker


def test_a_raising_item_and_an_unencodable_result_are_dead_letters_and_the_rest_get_results(
    topics: Topics, tmp_path: Path,
) -> None:
    # a backlog of 32 before the worker starts, so they are batched together
    first = [txn(i, POISON_AMOUNT if i == 5 else UNENCODABLE_AMOUNT if i == 9 else 10.0 + i) for i in range(32)]
    asyncio.run(publish(first, bootstrap=topics.bootstrap, topic=topics.inputs))
    # fixed windows: the poison must share its batch with good items (adaptive batching starts at 1)
    worker = _worker(topics, tmp_path, STREAMINFER_MAX_BATCH_SIZE="32", STREAMINFER_MAX_WAIT_MS="500",
                     STREAMINFER_BATCHING="fixed")
    try:
        dead = collect_dead_letters(topics.bootstrap, topics.dead_letters, 2, timeout_s=90)
        later = [txn(i, 1.0) for i in range(32, 42)]
        asyncio.run(publish(later, bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, 40, timeout_s=90)
        assert worker.alive(), worker.log()[-3000:]
    finally:
        assert worker.stop() == 0
    assert sorted(r.event_id for r in results) == sorted(f"t{i}" for i in range(42) if i not in (5, 9))
    by_reason = {d.reason: d for d in dead}
    assert set(by_reason) == {"model_failed", "result_encoding_failed"}
    assert "cannot score amount 666" in by_reason["model_failed"].message
    assert "OverflowError" in by_reason["result_encoding_failed"].message
    # the poison shared a batch with good items, which still got their results
    assert max(r.batch_size for r in results if r.event_id in {f"t{i}" for i in range(32)}) > 1


def test_a_20_mb_message_is_dead_lettered_truncated_and_the_worker_goes_on(topics: Topics, tmp_path: Path) -> None:
    big_topic = f"{topics.inputs}-big"

    async def publish_big(payload: bytes) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(big_topic, 1, 1, topic_configs={"max.message.bytes": "26214400"})])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, max_request_size=26_214_400)
        await producer.start()
        try:
            await producer.send_and_wait(big_topic, payload, key=b"big")
        finally:
            await producer.stop()

    payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    asyncio.run(publish_big(payload))
    worker = _worker(topics, tmp_path, partitions=5, STREAMINFER_INPUT_TOPICS=f"{topics.inputs},{big_topic}")
    try:
        [dead] = collect_dead_letters(topics.bootstrap, topics.dead_letters, 1, timeout_s=90)
        asyncio.run(publish([txn(1, 3.0)], bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, 1, timeout_s=60)
        assert worker.alive(), worker.log()[-3000:]
    finally:
        assert worker.stop() == 0
    assert dead.reason == "payload_too_large" and dead.truncated
    assert dead.original_size == len(payload) and len(dead.original) == 8 * 1024 * 1024
    assert dead.original_sha256 == hashlib.sha256(payload).hexdigest()
    assert dead.original == payload[: len(dead.original)] and dead.key == b"big"
    assert [r.event_id for r in results] == ["t1"]
