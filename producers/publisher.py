"""Publish frames or transactions to Kafka, keyed by stream/account, paced if asked.

Keys are the stream or account id so every event of one stream lands on one partition
and workers see it in order.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer

from schemas.codec import MSGPACK, content_type_headers, encode
from schemas.models import Frame, Transaction

# Bounds memory and the number of unacknowledged messages lost to a crash, while still
# letting the producer batch freely.
MAX_IN_FLIGHT = 1000
MAX_REQUEST_BYTES = 16 * 1024 * 1024
PROGRESS_INTERVAL_S = 0.2


@dataclass(frozen=True)
class PublishReport:
    count: int
    seconds: float

    @property
    def rate_per_s(self) -> float:
        """0.0 when no time was measured, so the report always formats and serialises."""
        return self.count / self.seconds if self.seconds > 0 else 0.0


def pacing_delay_s(sent: int, started_at: float, now: float, rate_per_s: float | None) -> float:
    """Seconds to wait before sending message number ``sent`` (0-based).

    Scheduling against the start time, not the previous send, means a slow send or a
    late wake-up is caught up instead of accumulating as drift.
    """
    if rate_per_s is None:
        return 0.0
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    return max(0.0, started_at + sent / rate_per_s - now)


BAR_WIDTH = 24


def progress_line(label: str, sent: int, elapsed_s: float, total: int | None = None) -> str:
    """``label: N sent (R/s)``; with a known ``total``, a bar, the share done and the time left."""
    rate = sent / elapsed_s if elapsed_s > 0 else 0.0
    if not total:
        return f"\r{label}: {sent} sent ({rate:.0f}/s)"
    done = min(1.0, sent / total)
    filled = round(done * BAR_WIDTH)
    left = f"{(total - sent) / rate:.0f}s left" if rate > 0 and sent < total else ("done" if sent >= total else "")
    return f"\r{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {sent}/{total} {done:4.0%} ({rate:.0f}/s) {left}"


class _Progress:
    """One self-overwriting stderr line, redrawn at most every PROGRESS_INTERVAL_S."""

    def __init__(
        self,
        label: str,
        enabled: bool,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        total: int | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        # looked up now, not at import, so a redirected or captured stderr is honoured
        self.stream = stream or sys.stderr
        self.clock = clock
        self._last: float | None = None

    def update(self, sent: int, elapsed_s: float) -> None:
        now = self.clock()
        if not self.enabled or (self._last is not None and now - self._last < PROGRESS_INTERVAL_S):
            return
        self._last = now
        self.stream.write(progress_line(self.label, sent, elapsed_s, self.total))
        self.stream.flush()

    def finish(self, sent: int, elapsed_s: float) -> None:
        if self.enabled:
            self.stream.write(progress_line(self.label, sent, elapsed_s, self.total) + "\n")
            self.stream.flush()


async def publish(
    events: Iterable[Frame | Transaction],
    *,
    bootstrap: str,
    topic: str,
    rate_per_s: float | None = None,
    content_type: str = MSGPACK,
    progress: bool | None = None,
    label: str = "events",
    security: Mapping[str, Any] | None = None,
    total: int | None = None,
) -> PublishReport:
    """Send every event and return only once the broker acknowledged all of them.

    Idempotence with ``acks="all"`` keeps retries from duplicating or reordering events
    within a key. Progress defaults to on for a terminal and off for logs and pipes; with
    ``total`` (the count expected) it is a bar with the time left.
    """
    if rate_per_s is not None and not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    show = _Progress(label, sys.stderr.isatty() if progress is None else progress, total=total)
    headers = content_type_headers(content_type)
    producer = AIOKafkaProducer(
        **{**(security or {}), "bootstrap_servers": bootstrap},  # TLS/SASL: KafkaSettings.client_kwargs()
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
        compression_type=None,
    )
    started = time.monotonic()
    sent = 0
    try:
        # inside the try: stop() also cleans up after a start() that failed half-way
        await producer.start()
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        upcoming = iter(events)
        while True:
            # wait first, then take the event: a source that stamps its events when they are
            # made (a camera, a generator) stamps them when they go out, not a period earlier
            if delay := pacing_delay_s(sent, started, time.monotonic(), rate_per_s):
                await asyncio.sleep(delay)
            if (event := next(upcoming, None)) is None:
                break
            pending.append(
                await producer.send(
                    topic, encode(event, content_type), key=event.key.encode(), headers=headers
                )
            )
            sent += 1
            if len(pending) >= MAX_IN_FLIGHT:
                await _acknowledged(pending)
            show.update(sent, time.monotonic() - started)
        await _acknowledged(pending)
    finally:
        try:
            await producer.stop()
        finally:
            elapsed = time.monotonic() - started
            show.finish(sent, elapsed)
    return PublishReport(sent, elapsed)


async def _acknowledged(pending: list[asyncio.Future[Any]]) -> None:
    """Await every delivery; all of them, so a failure leaves no exception unretrieved."""
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    pending.clear()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
