"""The worker without a broker: the same ``Worker`` on the in-memory source and sink.

What the worker's own loop costs next to the model, with Kafka (and the broker's share of
the CPU) out of the picture; and the one command that measures a GPU machine, where no
broker runs: ``streaminfer bench in-process [--device cuda]``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
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

# the model alone at these batch sizes, with decoding, the worker's contender the best of
# them: on a CPU a CNN is at its best near 2-4 and the MLP past 32, on a GPU both further up
MODEL_BATCHES = (1, 4, 32, 256)


@dataclass(frozen=True)
class Drain:
    per_s: float  # items a second from the first result on
    start_s: float  # from the worker's start to its first result: loading, warm-up, compiling


async def worker_drain(kind: str, payloads: list[bytes], device: str = "auto", **overrides: Any) -> Drain:
    """A ``Worker`` draining ``payloads`` from memory into memory. Its rate is counted from
    its first result, as the drains on the broker are: counted from the start, a frame
    worker's 2.1 s warm-up on this CPU made 64 frames drained in 0.5 s read as 22 frames/s,
    and ``--compile`` on a GPU spends far longer there."""
    source, sink = MemorySource(topic="in", partitions=4), MemorySink()
    for i, payload in enumerate(payloads):
        source.add(payload, partition=i % 4)
    model = load_model(default_model(kind), kind)  # type: ignore[arg-type]
    settings = WorkerSettings(input_topics="in", results_topic="out", dead_letter_topic="dlq", worker_id="bench",
                              commit_interval_ms=200, **overrides)
    runner = build_runner(settings, {kind: model}, resolve_device(device))  # type: ignore[dict-item]
    worker = Worker(settings, runner, source, sink)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    first: tuple[float, int] | None = None
    while len(sink.sent) < len(payloads):
        if task.done():
            task.result()
        await asyncio.sleep(0.001)
        if first is None and sink.sent:
            first = (time.perf_counter(), len(sink.sent))
    ended = time.perf_counter()
    stop.set()
    await task
    assert len(sink.on("out")) == len(payloads), "some items became dead letters"
    assert first is not None
    at, count = first
    if count == len(payloads) or ended <= at:  # gone in the first results' moment: the whole run, then
        return Drain(len(payloads) / (ended - started), at - started)
    return Drain((len(payloads) - count) / (ended - at), at - started)


def run_in_process(kind: str, n: int, reps: int, device: str = "auto", **acceleration: Any) -> dict[str, Any]:
    """``acceleration``: precision, channels_last, compile (as the worker's settings), for
    the worker and the model alone alike. Per contender, its rate each repetition; the
    workers' start-up seconds apart (``start_s``); ratios of the medians to the model
    alone at its best batch size (``ratios``)."""
    payloads = [encode(e) for e in items(kind, n)]
    settle_heap()  # as a worker process does once its models are loaded (its collector settings too)
    settings = WorkerSettings(**acceleration)
    model = ModelBench(kind, min(n, max(MODEL_BATCHES)), device=device, acceleration=settings.acceleration())
    threads = torch.get_num_threads()
    on_cpu = resolve_device(device).type == "cpu"
    starts: dict[str, list[float]] = {}

    def drained(name: str, **overrides: Any) -> Callable[[], float]:
        def measure() -> float:
            drain = asyncio.run(worker_drain(kind, payloads, device, **overrides, **acceleration))
            starts.setdefault(name, []).append(round(drain.start_s, 2))
            return drain.per_s
        return measure

    contenders: dict[str, Callable[[], float]] = {
        "worker, defaults (in memory)": drained("worker, defaults (in memory)"),
        "worker, --batching fixed (in memory)": drained("worker, --batching fixed (in memory)", batching="fixed"),
    }
    def alone(size: int, threads: int, streams: int) -> Callable[[], float]:
        return lambda: model.with_decoding_per_s(size, threads, streams)

    for size in MODEL_BATCHES:
        contenders[f"model alone, batch {size}, {threads} thread(s)"] = alone(size, threads, 1)
        # a model thread per CPU, as a worker runs a CNN on a CPU (on a GPU one thread feeds it)
        if on_cpu and threads > 1 and size <= 32:
            contenders[f"model alone, batch {size}, {threads} x 1 threads"] = alone(size, 1, threads)
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for rep in range(reps):
            for name, measure in contenders.items():
                value = measure()
                torch.set_num_threads(threads)  # the model alone sets its own
                runs[name].append(round(value, 1))
                print(f"  {kind:<11} rep {rep}: {name:<40} {value:>10,.1f}/s", flush=True)
    finally:
        model.runner.stop()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    best = max((name for name in medians if name.startswith("model alone")), key=medians.__getitem__)
    ratios = {f"{name} / {best}": round(medians[name] / medians[best], 3)
              for name in medians if name.startswith("worker")}
    for line, ratio in ratios.items():
        print(f"  {kind:<11} {line}: {ratio}", flush=True)
    return {"per_s": runs, "start_s": starts, "model_alone_best": best, "ratios": ratios}
