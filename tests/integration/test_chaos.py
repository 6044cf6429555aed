"""Chaos, in both delivery modes: 20,000 transactions on 6 partitions while three workers
are SIGKILLed and restarted, SIGTERMed, and joined by a new one.

At-least-once: every transaction gets a result; the duplicates a kill replays are counted.
Exactly-once: every transaction gets exactly one result for a ``read_committed`` reader.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import read_all
from tests.integration.workers import WorkerProcess, wait_until

TRANSACTIONS = 20_000
PARTITIONS = 6


@pytest.mark.timeout(600)
@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_kill_restart_stop_and_join_mid_stream(kafka_bootstrap: str, tmp_path: Path, delivery: str) -> None:
    topics = Topics(kafka_bootstrap, partitions=PARTITIONS)
    env = topics.worker_env() | {"STREAMINFER_DELIVERY": delivery, "STREAMINFER_SESSION_TIMEOUT_MS": "6000",
                                 "STREAMINFER_MAX_BATCH_SIZE": "64"}
    events = list(iter_synthetic_transactions(TRANSACTIONS, seed=11))
    feeder = threading.Thread(target=lambda: asyncio.run(publish(
        events, bootstrap=topics.bootstrap, topic=topics.inputs, rate_per_s=1000)))
    workers = {name: WorkerProcess(name, env, tmp_path) for name in ("a", "b", "c")}
    codes: dict[str, int] = {}

    def results_so_far() -> int:
        return len(read_all(topics.bootstrap, topics.results))

    try:
        wait_until(lambda: sum(len(w.assigned()) for w in workers.values()) == PARTITIONS, 90,
                   "three workers to share the partitions", list(workers.values()))
        feeder.start()
        wait_until(lambda: results_so_far() > 2_000, 60, "results to flow", list(workers.values()))
        workers["a"].proc.kill()  # SIGKILL: no commit, no abort, no leave
        workers["a"].proc.wait()
        wait_until(lambda: results_so_far() > 6_000, 90, "results after the kill", [workers["b"], workers["c"]])
        workers["a2"] = WorkerProcess("a2", env, tmp_path)  # the killed one restarted
        codes["b"] = workers["b"].stop()  # SIGTERM mid-stream
        wait_until(lambda: results_so_far() > 12_000, 90, "results after the stop", [workers["c"], workers["a2"]])
        workers["d"] = WorkerProcess("d", env, tmp_path)  # a new one joins
        # ... and is in the group before the end: stopped while still importing torch (a slow
        # machine's CI, the stream already done), it died of the SIGTERM, -15, before its handler
        wait_until(workers["d"].joined, 180, "the new worker to join", [workers["d"]])
        feeder.join(timeout=120)
        results = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            results = read_all(topics.bootstrap, topics.results)
            if len({r.event_id for r in results}) >= TRANSACTIONS:
                break
            for name in ("c", "a2", "d"):
                assert workers[name].alive(), workers[name].log()[-3000:]
            time.sleep(1)
    finally:
        feeder.join(timeout=60)
        for name, w in workers.items():
            codes.setdefault(name, w.stop())
    ids = Counter(r.event_id for r in results)
    missing = TRANSACTIONS - len(ids)
    duplicates = len(results) - len(ids)
    print(f"{delivery}: {len(results)} results, {missing} missing, {duplicates} duplicates, "
          f"by worker {dict(Counter(r.worker_id for r in results))}")
    assert missing == 0
    assert {name: code for name, code in codes.items() if name != "a"} == {"b": 0, "c": 0, "a2": 0, "d": 0}
    if delivery == "exactly-once":
        assert duplicates == 0
