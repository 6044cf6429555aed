"""A SIGTERM while the worker loads its models is heard: the worker stops before it starts."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

import pipeline.app as app
from pipeline.config import WorkerSettings
from pipeline.worker import WorkerStats


class NeverRun:
    stats = WorkerStats()

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        raise AssertionError("the worker started although SIGTERM came while it loaded")


def test_sigterm_during_model_loading_stops_before_the_worker_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def loading(settings: WorkerSettings) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while build_worker blocks the loop
        return NeverRun()

    monkeypatch.setattr(app, "build_worker", loading)
    stats = asyncio.run(app.run_worker(WorkerSettings(worker_id="w")))
    assert stats is NeverRun.stats
