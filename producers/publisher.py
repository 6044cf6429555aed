"""Publish frames or transactions to Kafka, keyed by stream/account, paced if asked.

Keys are the stream or account id so every event of one stream lands on one partition
and workers see it in order.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TextIO

from producers.sinks import RECORD_OVERHEAD_BYTES, Delivery, KafkaSink, OutRecord, RecordsResent
from schemas.codec import MSGPACK, content_type_headers, encode
from schemas.models import Frame, Transaction

# Bounds memory and the number of unacknowledged messages lost to a crash, while still
# letting the producer batch freely.
MAX_IN_FLIGHT = 4000
MAX_REQUEST_BYTES = 16 * 1024 * 1024
PROGRESS_INTERVAL_S = 0.2
# events made and sent together, as many as are due (unpaced: always this many), up to
# CHUNK_BYTES of them: a record batch per partition, not a send per event
CHUNK = 512
CHUNK_BYTES = 1024 * 1024


class TopicMissing(LookupError):
    """The topic to publish to does not exist (the broker does not create topics on first use)."""


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


def due_count(sent: int, started_at: float, now: float, rate_per_s: float | None, cap: int = CHUNK) -> int:
    """How many events to make and send at ``now``: those whose time has come (at least the
    next one, which ``pacing_delay_s`` waited for), at most ``cap``; unpaced, ``cap``."""
    if rate_per_s is None:
        return cap
    return max(1, min(cap, int((now - started_at) * rate_per_s) + 1 - sent))


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
    headers = tuple(content_type_headers(content_type))
    sink = KafkaSink(
        {**(security or {}), "bootstrap_servers": bootstrap},  # TLS/SASL: KafkaSettings.client_kwargs()
        "streaminfer-publisher", MAX_REQUEST_BYTES - RECORD_OVERHEAD_BYTES,
        # open batches, gathered over linger_ms as any producer's: at half the CPU of sending
        # each chunk at once (``KafkaSink``)
        linger_ms=5, batch_bytes=CHUNK_BYTES, send_at_once=False,
    )
    started = time.monotonic()
    sent = 0
    try:
        # inside the try: stop() also cleans up after a start() that failed half-way
        await sink.start()
        if await sink.missing_topics([topic]):
            raise TopicMissing(f"topic {topic!r} does not exist on {bootstrap} "
                               f"(create it: streaminfer topics create --topic {topic})")
        await sink.topic_limit(topic)  # learned now, not on the first send
        started = time.monotonic()
        in_flight: deque[tuple[list[OutRecord], list[Delivery]]] = deque()
        unacked = 0
        upcoming = iter(events)
        while True:
            # wait first, then take the events: a source that stamps its events when they are
            # made (a camera, a generator) stamps them when they go out, not a period earlier
            if delay := pacing_delay_s(sent, started, time.monotonic(), rate_per_s):
                await asyncio.sleep(delay)
            records, size = [], 0
            for event in islice(upcoming, due_count(sent, started, time.monotonic(), rate_per_s)):
                value = encode(event, content_type)
                records.append(OutRecord(topic, value, event.key.encode(), headers))
                if (size := size + len(value)) >= CHUNK_BYTES:
                    break
            if not records:
                break
            in_flight.append((records, await sink.send_many(records)))
            sent += len(records)
            unacked += len(records)
            while unacked > MAX_IN_FLIGHT:
                oldest = in_flight.popleft()
                unacked -= len(oldest[0])
                await _acknowledged(*oldest)
            show.update(sent, time.monotonic() - started)
        while in_flight:
            await _acknowledged(*in_flight.popleft())
    finally:
        try:
            await sink.stop()
        finally:
            elapsed = time.monotonic() - started
            show.finish(sent, elapsed)
    return PublishReport(sent, elapsed)


async def _acknowledged(records: Sequence[OutRecord], deliveries: Sequence[Delivery]) -> None:
    """Await every record's delivery, each shared one once; the first failure is raised
    (the sink marks the others seen)."""
    for delivery in dict.fromkeys(deliveries):
        try:
            await delivery
        except RecordsResent as resent:  # its record batch went again one by one
            for record, shared in zip(records, deliveries, strict=True):
                if shared is delivery:
                    await resent.of(record)
