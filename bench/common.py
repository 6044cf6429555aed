"""What every part of the bench shares: the worker as a process, inputs, fresh topics, spreads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.config import WorkerSettings
from pipeline.topics import create_topics
from producers.publisher import MAX_REQUEST_BYTES, publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from schemas.models import Frame, Transaction

KINDS = ("transaction", "frame")
PARTITIONS = 4


def items(kind: str, n: int, seed: int = 1) -> list[Frame | Transaction]:
    """``n`` synthetic inputs: ~240 B transactions, or 640x480 JPEG frames."""
    if kind == "frame":
        return list(iter_video_frames("synthetic", stream_id=f"bench-{seed}", count=n))
    return list(iter_synthetic_transactions(n, seed=seed))


def default_model(kind: str) -> str:
    field = "frame_model" if kind == "frame" else "transaction_model"
    return str(WorkerSettings.model_fields[field].default)


def fresh_settings(bootstrap: str, name: str, input_topics: Sequence[str], **overrides: Any) -> WorkerSettings:
    """Worker settings with a results topic, dead-letter topic and group of their own."""
    suffix = uuid.uuid4().hex[:8]
    return WorkerSettings(
        kafka_bootstrap=bootstrap, input_topics=",".join(input_topics), results_topic=f"bench-{name}-out-{suffix}",
        dead_letter_topic=f"bench-{name}-dlq-{suffix}", group_id=f"bench-{name}-{suffix}", worker_id=f"bench-{name}",
        **overrides,
    )


async def backlog(bootstrap: str, kind: str, events: list[Frame | Transaction]) -> str:
    """A fresh topic of ``PARTITIONS`` partitions holding ``events``; its name."""
    topic = f"bench-{kind}-in-{uuid.uuid4().hex[:8]}"
    await create_topics(WorkerSettings(kafka_bootstrap=bootstrap), [topic], PARTITIONS)
    await publish(events, bootstrap=bootstrap, topic=topic, progress=False)
    return topic


@contextlib.asynccontextmanager
async def held_copy(bootstrap: str, topic: str) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """A fresh topic holding the records of ``topic`` (same bytes, keys, headers and
    partitions) in one transaction left open, and the coroutine that commits it. The
    worker reads committed records only, so several workers can all join their group
    before any of them sees a record: started on a backlog, the first to join drains it
    while the second is still importing torch (in one drain of 200,000 transactions on
    this 2-core machine, the second worker's first record came 2.5 s after the first's and
    it got 2,542 of them), and the throughput of "two workers" was then mostly one's."""
    copy = f"{topic}-held-{uuid.uuid4().hex[:8]}"
    await create_topics(WorkerSettings(kafka_bootstrap=bootstrap), [copy], PARTITIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"bench-{copy}", acks="all",
                                enable_idempotence=True, linger_ms=5, max_request_size=MAX_REQUEST_BYTES,
                                transaction_timeout_ms=600_000)
    held = False  # a transaction begun and not yet committed

    async def release() -> None:
        nonlocal held
        if held:
            await producer.commit_transaction()
            held = False

    try:
        await consumer.start()
        await producer.start()
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        await producer.begin_transaction()
        held = True
        pending = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for r in records:
                    pending.append(await producer.send(copy, r.value, key=r.key, partition=tp.partition,
                                                       headers=list(r.headers)))
        await asyncio.gather(*pending)
        yield copy, release
        await release()
    finally:
        try:
            if held:
                await producer.abort_transaction()
        finally:
            await consumer.stop()
            await producer.stop()


async def create_outputs(settings: WorkerSettings) -> None:
    await create_topics(settings, [settings.results_topic, settings.dead_letter_topic], PARTITIONS)


def worker_env(settings: WorkerSettings) -> dict[str, str]:
    """The settings given explicitly, as environment: a worker from another checkout then
    runs with its own defaults, not this one's."""
    given = settings.model_dump(exclude={"sasl_password"}, exclude_unset=True)
    return {**os.environ, **{f"STREAMINFER_{k.upper()}": ",".join(v) if isinstance(v, list) else str(v)
                             for k, v in given.items() if v is not None}}


@contextlib.asynccontextmanager
async def worker_processes(settings: WorkerSettings, count: int = 1, cwd: str | None = None,
                           env: dict[str, str] | None = None) -> AsyncIterator[None]:
    """``count`` ``streaminfer worker`` processes (as deployed) with ``settings`` as their
    environment, run from ``cwd`` (another checkout) when given; SIGTERM on the way out."""
    procs = []
    try:
        for i in range(count):
            worker_settings = settings.model_copy(update={"worker_id": f"{settings.worker_id}-{i}"})
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline", "worker", env=worker_env(worker_settings) | (env or {}), cwd=cwd,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            ))
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repetitions."""
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def spread_text(values: Sequence[float], unit: str = "/s") -> str:
    s = spread(values)
    return f"{s['median']:,.1f}{unit} (min {s['min']:,.1f}, max {s['max']:,.1f})"


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "platform": platform.platform()}


class Progress:
    """``[k/N, elapsed, ~left]`` before each step's line of a long bench run (the time left
    from the mean step so far)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done = total, 0
        self._clock = clock
        self._started = clock()

    def step(self, text: str) -> str:
        self.done += 1
        elapsed = self._clock() - self._started
        left = elapsed / self.done * (self.total - self.done)
        line = f"[{self.done}/{self.total}, {_mmss(elapsed)} elapsed, ~{_mmss(left)} left] {text}"
        print(line, flush=True)
        return line


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
