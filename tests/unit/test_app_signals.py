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


def test_start_up_s_heap_is_frozen_and_young_collections_rare_before_the_worker_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What start-up made lives as long as the process: full collections must not walk it
    (each one stopped the event loop for 120-145 ms during a drain)."""
    import gc

    made_at_start = [{"model": i} for i in range(1_000)]
    seen: list[int] = []
    thresholds: list[tuple[int, int, int]] = []
    before = gc.get_threshold()

    class Frozen:
        stats = WorkerStats()

        async def run(self, stop: asyncio.Event) -> WorkerStats:
            seen.append(gc.get_freeze_count())
            thresholds.append(gc.get_threshold())
            return self.stats

    monkeypatch.setattr(app, "check_access", lambda _: asyncio.sleep(0))
    monkeypatch.setattr(app, "build_worker", lambda settings: Frozen())
    try:
        asyncio.run(app.run_worker(WorkerSettings(worker_id="w")))
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen and seen[0] >= len(made_at_start), "start-up's objects are still the collector's to walk"
    # and the young generation is collected far less often than Python's default of 700
    assert thresholds[0][0] == app.GC_YOUNG_THRESHOLD > 700
