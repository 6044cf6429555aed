"""Bounded memory under overload: a frame backlog far larger than the model can take at
once stays in Kafka; the worker's peak RSS stays under the bound the README states."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from producers.publisher import publish
from producers.video_source import iter_video_frames
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess

FRAMES = 300
PEAK_RSS_BOUND_MIB = 2048  # README, "Delivery guarantees": memory


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.timeout(400)
def test_a_640x480_backlog_keeps_the_worker_under_its_memory_bound(topics: Topics, tmp_path: Path) -> None:
    frames = list(iter_video_frames("synthetic", stream_id="cam", count=FRAMES, width=640, height=480))
    asyncio.run(publish(frames, bootstrap=topics.bootstrap, topic=topics.inputs))  # ~13 MB of JPEG waiting
    worker = WorkerProcess("memory", topics.worker_env() | {"STREAMINFER_TORCH_THREADS": "0"}, tmp_path)
    try:
        worker.wait_assigned(4)
        started = time.monotonic()
        results = collect_results(topics.bootstrap, topics.results, FRAMES, timeout_s=300)
        seconds = time.monotonic() - started
        peak = peak_rss_mib(worker.proc.pid)
        assert worker.alive()
    finally:
        assert worker.stop() == 0
    assert len({r.event_id for r in results}) == FRAMES
    print(f"{FRAMES} frames in {seconds:.0f}s ({FRAMES / seconds:.1f}/s), worker peak RSS {peak} MiB")
    assert peak < PEAK_RSS_BOUND_MIB
