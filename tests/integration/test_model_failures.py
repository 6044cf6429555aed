"""A broken model never loses input: bad files stop the worker at start-up with the file
named; a model that returns the wrong number of rows dead-letters its batch with the reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_dead_letters, collect_results
from tests.integration.workers import WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_malformed_model_file_stops_the_worker_at_startup_naming_it(topics: Topics, tmp_path: Path) -> None:
    bad = tmp_path / "scorer.pt"
    bad.write_bytes(b"this is not a model")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker", "--transaction-model", f"torchscript:{bad}"],
        env={**topics.worker_env(), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "not a loadable" in proc.stderr


def test_model_with_wrong_output_count_dead_letters_every_item_of_the_batch(topics: Topics, tmp_path: Path) -> None:
    env = topics.worker_env() | {
        "STREAMINFER_TRANSACTION_MODEL": "python:tests.integration.broken_models:drops_one_row",
        "PYTHONPATH": str(ROOT),
    }
    worker = WorkerProcess("broken", env, tmp_path)
    try:
        wait_until(lambda: len(worker.assigned()) == 4, 60, "the worker to join", [worker])
        asyncio.run(publish(iter_synthetic_transactions(50, seed=9), bootstrap=topics.bootstrap, topic=topics.inputs))
        dead = collect_dead_letters(topics.bootstrap, topics.dead_letters, 50, timeout_s=60)
        results = collect_results(topics.bootstrap, topics.results, 1, timeout_s=3)
        assert worker.alive()
    finally:
        assert worker.stop() == 0
    assert len(dead) == 50 and results == []
    assert {d.reason for d in dead} == {"model_output_mismatch"}
    assert all("drops-one-row" in d.message for d in dead)
