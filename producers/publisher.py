"""Publish frames or transactions to Kafka, keyed by stream/account, paced if asked."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from schemas.codec import MSGPACK, content_type_headers, encode
from schemas.models import Frame, Transaction

_MAX_IN_FLIGHT = 1000


@dataclass(frozen=True)
class PublishReport:
    count: int
    seconds: float

    @property
    def rate_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def pacing_delay_s(sent: int, started_at: float, now: float, rate_per_s: float | None) -> float:
    """How long to wait before message number ``sent`` (0-based) keeps to ``rate_per_s``."""
    if not rate_per_s:
        return 0.0
    return max(0.0, started_at + sent / rate_per_s - now)


class _Progress:
    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._last = 0.0

    def update(self, sent: int, elapsed_s: float, final: bool = False) -> None:
        if not self.enabled or (not final and time.monotonic() - self._last < 0.2):
            return
        self._last = time.monotonic()
        rate = sent / elapsed_s if elapsed_s > 0 else 0.0
        sys.stderr.write(f"\r{self.label}: {sent} sent ({rate:.0f}/s)" + ("\n" if final else ""))
        sys.stderr.flush()


async def publish(
    events: Iterable[Frame | Transaction],
    *,
    bootstrap: str,
    topic: str,
    rate_per_s: float | None = None,
    content_type: str = MSGPACK,
    progress: bool | None = None,
    label: str = "events",
) -> PublishReport:
    """Send every event and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=16 * 1024 * 1024,
    )
    show = _Progress(label, sys.stderr.isatty() if progress is None else progress)
    headers = content_type_headers(content_type)
    await producer.start()
    started = time.monotonic()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for event in events:
            if delay := pacing_delay_s(sent, started, time.monotonic(), rate_per_s):
                await asyncio.sleep(delay)
            pending.append(
                await producer.send(topic, encode(event, content_type), key=event.key.encode(), headers=headers)
            )
            sent += 1
            if len(pending) >= _MAX_IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
            show.update(sent, time.monotonic() - started)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    elapsed = time.monotonic() - started
    show.update(sent, elapsed, final=True)
    return PublishReport(sent, elapsed)
