"""``streaminfer bench``: pipeline throughput next to the model's own, in one run.

For each input kind: the runner alone on in-memory batches (decode, preprocess, forward,
postprocess: what the model can do without Kafka), then the same items through Kafka and
a worker, then the runner alone again (this machine is noisy; the two model-alone figures
bracket the pipeline run). Then latency: input paced at half the pipeline's throughput
for about ten seconds, so the figures show what a worker adds when it keeps up.
Pipeline throughput is taken from the results' own timings: items / (last produced -
first received), with the worker in its own process as deployed and a backlog waiting for
it. Writes JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch

from consumers.results_reader import read_results
from pipeline.config import WorkerSettings
from pipeline.latency import latency_summary_ms
from pipeline.models import load_model, resolve_device
from pipeline.runner import Runner
from pipeline.topics import create_topics, wait_for_group
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from schemas.models import Frame, Transaction

PACED_S = 10.0


def _items(kind: str, n: int) -> list[Frame | Transaction]:
    if kind == "frame":
        return list(iter_video_frames("synthetic", stream_id="bench", count=n))
    return list(iter_synthetic_transactions(n, seed=1))


@contextlib.asynccontextmanager
async def worker_process(settings: WorkerSettings, cwd: str | None = None) -> AsyncIterator[None]:
    """``streaminfer worker`` in its own process (as deployed) with ``settings`` as its
    environment, run from ``cwd`` (another checkout) when given; SIGTERM on the way out."""
    env = {**os.environ, **{f"STREAMINFER_{k.upper()}": ",".join(v) if isinstance(v, list) else str(v)
                            for k, v in settings.model_dump(exclude={"sasl_password"}).items() if v is not None}}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "worker", env=env, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 60)


def model_alone_per_s(runner: Runner, items: list[Frame | Transaction], batch_size: int) -> float:
    runner.run_sync(items[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        outcomes = runner.run_sync(items[i : i + batch_size])
        assert all(o.error is None for o in outcomes)
    return len(items) / (time.perf_counter() - start)


async def run_pipeline(bootstrap: str, spec: str, items: list[Frame | Transaction], batch_size: int,
                       max_wait_ms: int, rate_per_s: float | None = None) -> dict[str, Any]:
    """One worker process (as deployed) on fresh topics.

    Without a rate: a backlog is published first and the worker drains it (throughput).
    With a rate: the worker runs first and input arrives at that pace (latency when the
    pipeline keeps up). Latency is the worker's own: received -> result produced.
    """
    suffix = uuid.uuid4().hex[:8]
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap, input_topics=f"bench-in-{suffix}", results_topic=f"bench-out-{suffix}",
        dead_letter_topic=f"bench-dlq-{suffix}", group_id=f"bench-{suffix}", worker_id="bench",
        max_batch_size=batch_size, max_wait_ms=max_wait_ms,
        frame_model=spec if items[0].kind == "frame" else "none",
        transaction_model=spec if items[0].kind == "transaction" else "none",
    )
    await create_topics(settings, [*settings.input_topics, settings.results_topic, settings.dead_letter_topic], 4)
    if rate_per_s is None:
        await publish(items, bootstrap=bootstrap, topic=settings.input_topics[0], progress=False)
    received, produced, latency = [], [], []
    async with worker_process(settings):
        if rate_per_s is not None:
            await wait_for_group(settings, settings.group_id, 1, timeout_s=120)
            feeder = asyncio.create_task(publish(
                items, bootstrap=bootstrap, topic=settings.input_topics[0], rate_per_s=rate_per_s, progress=False,
            ))
        stream = read_results(bootstrap=bootstrap, topic=settings.results_topic, follow=True)
        async with contextlib.aclosing(stream):
            async for result in stream:
                received.append(result.timings.received_ms)
                produced.append(result.timings.produced_ms)
                latency.append(result.timings.produced_ms - result.timings.received_ms)
                if len(received) == len(items):
                    break
        if rate_per_s is not None:
            await feeder
    span_s = max(1, max(produced) - min(received)) / 1000
    return {"per_s": len(items) / span_s, "latency_ms": latency_summary_ms(latency)}


def run_bench(
    bootstrap: str, out: Path, frames: int, transactions: int, batch_size: int, max_wait_ms: int
) -> dict[str, Any]:
    device = resolve_device("auto")
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                    "torch_threads": torch.get_num_threads()},
        "batch_size": batch_size, "max_wait_ms": max_wait_ms, "kinds": {},
    }
    defaults = WorkerSettings.model_fields
    for kind, n, spec in (
        ("transaction", transactions, str(defaults["transaction_model"].default)),
        ("frame", frames, str(defaults["frame_model"].default)),
    ):
        model = load_model(spec, kind)  # type: ignore[arg-type]
        assert model is not None
        runner = Runner({kind: model}, device)  # type: ignore[dict-item]
        runner.start()
        try:
            items = _items(kind, n)
            before = model_alone_per_s(runner, items, batch_size)
            pipe = asyncio.run(run_pipeline(bootstrap, spec, items, batch_size, max_wait_ms))
            after = model_alone_per_s(runner, items, batch_size)
            paced_rate = pipe["per_s"] / 2
            paced_items = items[: max(batch_size, int(paced_rate * PACED_S))]
            paced = asyncio.run(run_pipeline(bootstrap, spec, paced_items, batch_size, max_wait_ms, paced_rate))
        finally:
            runner.stop()
        alone = (before + after) / 2
        row = {
            "model": spec, "items": n, "model_alone_per_s": [round(before, 1), round(after, 1)],
            "pipeline_per_s": round(pipe["per_s"], 1), "ratio_pipeline_to_model": round(pipe["per_s"] / alone, 3),
            "backlog_latency_ms": pipe["latency_ms"],
            "paced_rate_per_s": round(paced_rate, 1), "paced_items": len(paced_items),
            "paced_latency_ms": paced["latency_ms"],
        }
        report["kinds"][kind] = row
        print(
            f"{kind:<12} model alone {before:9.1f} / {after:9.1f} items/s   pipeline {pipe['per_s']:9.1f} items/s   "
            f"ratio {row['ratio_pipeline_to_model']:.2f}   at half that rate: worker latency "
            f"p50 {paced['latency_ms']['p50']:.0f} ms p99 {paced['latency_ms']['p99']:.0f} ms "
            f"max {paced['latency_ms']['max']} ms",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report
