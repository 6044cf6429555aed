"""``make demo``: the whole pipeline on one machine, ending in a summary.

Uses ``$STREAMINFER_KAFKA_BOOTSTRAP`` if set, else a running local broker, else starts
one (and stops it again at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

from aiokafka import AIOKafkaProducer

from consumers.results_reader import read_dead_letters, read_results, until
from devtools.broker import LocalBroker
from pipeline.config import (
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_FRAMES_TOPIC,
    DEFAULT_RESULTS_TOPIC,
    DEFAULT_TOPICS,
    DEFAULT_TRANSACTIONS_TOPIC,
    KafkaSettings,
    WorkerSettings,
)
from pipeline.latency import latency_summary_ms
from pipeline.topics import create_topics, wait_for_group
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames

GROUP = WorkerSettings.model_fields["group_id"].default

FRAMES_PER_S = 5

MALFORMED = [
    (b"\x00\x01not msgpack at all\xff", "application/msgpack"),
    (b'{"kind": "transaction", "id": "t-bad"}', "application/json"),
    (b"\x81\xa4kind\xa5frame", "application/msgpack"),
]


def run_demo(transactions: int, frames: int, workers: int, partitions: int, timeout_s: float) -> int:
    broker = LocalBroker()
    started_broker = False
    bootstrap = os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        state = broker.status()
        if state is None:
            print("starting a local Kafka broker (first run resolves its jars with Maven)...", flush=True)
            state = broker.start()
            started_broker = True
        bootstrap = state.bootstrap
    print(f"kafka at {bootstrap}", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(create_topics(KafkaSettings(kafka_bootstrap=bootstrap), list(DEFAULT_TOPICS), partitions))
        env = {**os.environ, "STREAMINFER_KAFKA_BOOTSTRAP": bootstrap}
        for i in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker", "--worker-id", f"demo-worker-{i + 1}",
                 "--group-id", GROUP, "--torch-threads", "1"],
                env=env,
            ))
        print(f"waiting for {workers} workers to join the group...", flush=True)
        asyncio.run(wait_for_group(KafkaSettings(kafka_bootstrap=bootstrap), GROUP, workers, timeout_s=120))
        summary = asyncio.run(_drive(bootstrap, transactions, frames, timeout_s))
    finally:
        codes = _stop_all(procs)
        if started_broker:
            broker.stop()
    summary["worker_exit_codes"] = codes
    print(json.dumps(summary, indent=2))
    ok = summary["results"] == summary["expected_results"] and all(c == 0 for c in codes)
    print(
        f"demo {'OK' if ok else 'INCOMPLETE'}: {summary['results']}/{summary['expected_results']} results, "
        f"{summary['dead_letters']} dead letters, workers exited {codes}"
    )
    return 0 if ok else 1


async def _drive(bootstrap: str, transactions: int, frames: int, timeout_s: float) -> dict[str, object]:
    run = uuid.uuid4().hex[:8]
    seed = int(run, 16) % 1_000_000
    stream = f"demo-{run}"
    t0 = time.monotonic()
    cameras = [f"{stream}-cam{i}" for i in (1, 2)]  # two keys, so both workers see video
    await asyncio.gather(
        publish(iter_synthetic_transactions(transactions, seed=seed), bootstrap=bootstrap,
                topic=DEFAULT_TRANSACTIONS_TOPIC, label="transactions"),
        *(
            # a camera's pace that one CPU worker keeps up with
            publish(iter_video_frames("synthetic", stream_id=cam, count=frames // 2), bootstrap=bootstrap,
                    topic=DEFAULT_FRAMES_TOPIC, rate_per_s=FRAMES_PER_S, label=cam)
            for cam in cameras
        ),
        _publish_malformed(bootstrap, run),
    )
    ours = (f"tx-{seed}-", f"{stream}-")
    latencies: list[int] = []
    per_worker: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    expected = transactions + frames // 2 * 2
    deadline = time.monotonic() + timeout_s
    async with contextlib.aclosing(
        read_results(bootstrap=bootstrap, topic=DEFAULT_RESULTS_TOPIC, follow=True)
    ) as results:
        async for result in until(results, deadline):
            if not result.event_id.startswith(ours):
                continue
            per_worker[result.worker_id] += 1
            per_kind[result.kind] += 1
            latencies.append(result.timings.produced_ms - result.timings.received_ms)
            if len(latencies) >= expected:
                break
    dead = 0
    async with contextlib.aclosing(
        read_dead_letters(bootstrap=bootstrap, topic=DEFAULT_DEAD_LETTER_TOPIC, follow=False)
    ) as letters:
        async for dl in letters:
            dead += dl.key == run.encode()
    return {
        "expected_results": expected,
        "results": len(latencies),
        "by_kind": dict(per_kind),
        "by_worker": dict(per_worker),
        "dead_letters": dead,
        "pipeline_latency_ms": latency_summary_ms(latencies),
        "wall_s": round(time.monotonic() - t0, 1),
    }


async def _publish_malformed(bootstrap: str, run: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value, content_type in MALFORMED:
            await producer.send_and_wait(
                DEFAULT_TRANSACTIONS_TOPIC, value, key=run.encode(),
                headers=[("content-type", content_type.encode())],
            )
    finally:
        await producer.stop()


def _stop_all(procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes
