"""What the broker fault tests ask of a cluster: leaders, in-sync replicas, replicated topics,
and a plain produce/consume pair that counts every message."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

POLL_MS = 200


async def _describe_topics(bootstrap: str) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.describe_topics())
    finally:
        await admin.close()


async def cluster_id(bootstrap: str) -> str:
    """The cluster id the brokers report in their metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()


def topic_names(bootstrap: str) -> set[str]:
    return {str(t["topic"]) for t in asyncio.run(_describe_topics(bootstrap))}


def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node id leading ``topic``/``partition`` now (-1 while it has none)."""
    for t in asyncio.run(_describe_topics(bootstrap)):
        if t["topic"] == topic:
            for p in t["partitions"]:  # type: ignore[attr-defined]
                if p["partition"] == partition:
                    return int(p["leader"])
    raise LookupError(f"{topic}/{partition} is not in the cluster's metadata")


def wait_until_in_sync(bootstrap: str, replicas: int, timeout_s: float) -> None:
    """Wait until every partition of every topic has a leader and ``replicas`` in-sync replicas.

    A node restarted after a kill counts only once it has caught up: before that, killing
    another node would leave partitions below ``min.insync.replicas``.
    """
    deadline = time.monotonic() + timeout_s
    lagging: list[str] = ["(not asked yet)"]
    while lagging:
        if time.monotonic() > deadline:
            raise AssertionError(f"partitions not fully in sync after {timeout_s}s: {lagging[:10]}")
        lagging = [
            f"{t['topic']}/{p['partition']} leader {p['leader']} isr {p['isr']}"
            for t in asyncio.run(_describe_topics(bootstrap))
            for p in t["partitions"]  # type: ignore[attr-defined]
            if p["leader"] < 0 or len(p["isr"]) < replicas
        ]
        if lagging:
            time.sleep(0.5)


def broker_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline broker ARGS --home HOME``, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "broker", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=240, check=False,
    )


def idempotent_producer(bootstrap: str) -> AIOKafkaProducer:
    """``acks="all"`` and idempotence: aiokafka retries a batch until it is acknowledged."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)


async def produce(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    """Send every value (keyed by itself) and return once all are acknowledged."""
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=value) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, expected: set[bytes], timeout_s: float) -> Counter[bytes]:
    """Every value on ``topic`` from the start, counted, until all of ``expected`` were seen
    or ``timeout_s`` passed. No group: nothing is committed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    seen: Counter[bytes] = Counter()
    deadline = time.monotonic() + timeout_s
    await consumer.start()
    try:
        while not expected <= seen.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=POLL_MS)).values():
                seen.update(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return seen
