"""The worker without a broker: the same ``Worker`` on the in-memory source and sink.

What the worker's own loop costs next to the model, with Kafka (and the broker's share of
the CPU) out of the picture; and the one command that measures a GPU machine, where no
broker runs: ``streaminfer bench in-process [--device cuda]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.common import default_model, items
from bench.model_ceiling import ModelBench
from consumers.testing import MemorySource
from pipeline.app import build_runner, settle_heap
from pipeline.config import WorkerSettings
from pipeline.models import load_model, resolve_device
from pipeline.worker import Worker
from producers.testing import MemorySink
from schemas.codec import encode


async def worker_per_s(kind: str, payloads: list[bytes], device: str = "auto", **overrides: Any) -> float:
    """Items per second of a ``Worker`` draining ``payloads`` from memory into memory."""
    source, sink = MemorySource(topic="in", partitions=4), MemorySink()
    for i, payload in enumerate(payloads):
        source.add(payload, partition=i % 4)
    model = load_model(default_model(kind), kind)  # type: ignore[arg-type]
    settings = WorkerSettings(input_topics="in", results_topic="out", dead_letter_topic="dlq", worker_id="bench",
                              commit_interval_ms=200, **overrides)
    runner = build_runner(settings, {kind: model}, resolve_device(device))  # type: ignore[dict-item]
    worker = Worker(settings, runner, source, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    started = time.perf_counter()
    while len(sink.sent) < len(payloads):
        if task.done():
            task.result()
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    assert len(sink.on("out")) == len(payloads), "some items became dead letters"
    return len(payloads) / elapsed


def run_in_process(kind: str, n: int, reps: int, device: str = "auto", **acceleration: Any) -> dict[str, Any]:
    """``acceleration``: precision, channels_last, compile (as the worker's settings), for
    the worker and the model alone alike."""
    payloads = [encode(e) for e in items(kind, n)]
    settle_heap()  # as a worker process does once its models are loaded (its collector settings too)
    settings = WorkerSettings(**acceleration)
    model = ModelBench(kind, min(n, 256), device=device, acceleration=settings.acceleration())
    threads = torch.get_num_threads()
    contenders: dict[str, Callable[[], float]] = {
        "worker, defaults (in memory)":
            lambda: asyncio.run(worker_per_s(kind, payloads, device, **acceleration)),
        "worker, --batching fixed (in memory)":
            lambda: asyncio.run(worker_per_s(kind, payloads, device, batching="fixed", **acceleration)),
        "model alone, batch 1": lambda: model.with_decoding_per_s(1, threads),
        "model alone, batch 32": lambda: model.with_decoding_per_s(32, threads),
    }
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for rep in range(reps):
            for name, measure in contenders.items():
                value = measure()
                runs[name].append(round(value, 1))
                print(f"  {kind:<11} rep {rep}: {name:<40} {value:>10,.1f}/s", flush=True)
    finally:
        model.runner.stop()
    return runs
