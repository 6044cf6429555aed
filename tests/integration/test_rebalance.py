"""Workers joining and leaving while input flows: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results, read_all
from tests.integration.workers import WorkerProcess, wait_until

PHASE = 800


def _publish_in_background(topics: Topics, seed: int, rate_per_s: float | None) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(publish(
        iter_synthetic_transactions(PHASE, seed=seed), bootstrap=topics.bootstrap, topic=topics.inputs,
        rate_per_s=rate_per_s,
    )))
    thread.start()
    return thread


def test_scaling_up_and_down_mid_stream_loses_and_duplicates_nothing(topics: Topics, tmp_path: Path) -> None:
    env = topics.worker_env() | {"STREAMINFER_MAX_BATCH_SIZE": "8"}
    first = WorkerProcess("first", env, tmp_path)
    workers = [first]
    codes: dict[str, int] = {}
    threads: list[threading.Thread] = []
    try:
        wait_until(lambda: len(first.assigned()) == 4, 60, "the first worker to join", workers)
        threads.append(_publish_in_background(topics, 1, rate_per_s=300))
        second = WorkerProcess("second", env, tmp_path)  # joins while input flows
        workers.append(second)
        wait_until(lambda: len(second.assigned()) == 2, 60, "the second worker to take partitions", workers)
        threads.append(_publish_in_background(topics, 2, rate_per_s=300))
        third = WorkerProcess("third", env, tmp_path)  # another rebalance while input flows
        workers.append(third)
        wait_until(lambda: len(third.assigned()) >= 1, 60, "the third worker to take partitions", workers)
        codes["second"] = second.stop()  # leaves: and another
        wait_until(lambda: len(third.assigned()) == 2, 60, "the third worker to take over", [first, third])
        threads.append(_publish_in_background(topics, 3, rate_per_s=None))
        for t in threads:
            t.join(timeout=60)
        results = collect_results(topics.bootstrap, topics.results, 3 * PHASE + 1, timeout_s=30)
    finally:
        for t in threads:
            t.join(timeout=60)
        for w in workers:
            codes.setdefault(w.worker_id, w.stop())
    assert set(codes.values()) == {0}, codes

    ids = Counter(r.event_id for r in results)
    duplicates = {k: v for k, v in ids.items() if v > 1}
    assert not duplicates, f"{len(duplicates)} inputs got more than one result"
    assert len(ids) == 3 * PHASE, f"{3 * PHASE - len(ids)} inputs got no result"
    assert {r.worker_id for r in results} == {"first", "second", "third"}


def test_a_killed_worker_loses_nothing_its_partitions_are_replayed(topics: Topics, tmp_path: Path) -> None:
    env = topics.worker_env() | {"STREAMINFER_MAX_BATCH_SIZE": "8", "STREAMINFER_SESSION_TIMEOUT_MS": "6000"}
    victim = WorkerProcess("victim", env, tmp_path)
    survivor = WorkerProcess("survivor", env, tmp_path)
    workers = [victim, survivor]
    try:
        wait_until(lambda: all(len(w.assigned()) == 2 for w in workers), 90, "both workers to join", workers)
        feeder = _publish_in_background(topics, 4, rate_per_s=300)
        wait_until(lambda: len(read_all(topics.bootstrap, topics.results)) > 100, 30, "results to flow", workers)
        victim.proc.kill()  # no shutdown, no commit, no leave: the broker notices by session timeout
        victim.proc.wait()
        feeder.join(timeout=60)
        results = []
        deadline = time.monotonic() + 90
        while len({r.event_id for r in results}) < PHASE and time.monotonic() < deadline:
            results = read_all(topics.bootstrap, topics.results)
    finally:
        code = survivor.stop()
        victim.stop()
    assert code == 0
    ids = Counter(r.event_id for r in results)
    assert len(ids) == PHASE, f"{PHASE - len(ids)} inputs lost"
    assert "survivor" in {r.worker_id for r in results}
    # at-least-once: only the victim's uncommitted window is replayed
    replayed = len(results) - PHASE
    assert replayed <= sum(r.worker_id == "victim" for r in results)
    print(f"killed worker: {replayed} results replayed")
