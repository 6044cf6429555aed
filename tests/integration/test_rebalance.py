"""Workers joining and leaving mid-stream: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until

N = 3000


def test_scaling_up_and_down_mid_stream_loses_and_duplicates_nothing(topics: Topics, tmp_path: Path) -> None:
    env = topics.worker_env() | {"STREAMINFER_MAX_BATCH_SIZE": "8"}
    first = WorkerProcess("first", env, tmp_path)
    workers = [first]
    wait_until(lambda: len(first.assigned()) == 4, 60, "the first worker to join", workers)

    publisher = threading.Thread(target=lambda: asyncio.run(publish(
        iter_synthetic_transactions(N, seed=21), bootstrap=topics.bootstrap, topic=topics.inputs, rate_per_s=100,
    )))
    publisher.start()
    codes = {}
    try:
        second = WorkerProcess("second", env, tmp_path)  # joins while input flows: a rebalance
        workers.append(second)
        wait_until(lambda: len(second.assigned()) == 2, 60, "the second worker to take partitions", workers)
        third = WorkerProcess("third", env, tmp_path)
        workers.append(third)
        wait_until(lambda: len(third.assigned()) >= 1, 60, "the third worker to take partitions", workers)
        codes["second"] = second.stop()  # leaves mid-stream: another rebalance
        publisher.join(timeout=60)
        results = collect_results(topics.bootstrap, topics.results, N + 1, timeout_s=30)
    finally:
        publisher.join(timeout=60)
        for w in workers:
            codes.setdefault(w.worker_id, w.stop())
    assert set(codes.values()) == {0}, codes

    ids = Counter(r.event_id for r in results)
    duplicates = {k: v for k, v in ids.items() if v > 1}
    assert not duplicates, f"{len(duplicates)} inputs got more than one result"
    assert len(ids) == N, f"{N - len(ids)} inputs got no result"
    assert {r.worker_id for r in results} == {"first", "second", "third"}
