"""An in-memory ``Sink`` for testing the worker loop without a broker.

Every ``send`` is recorded. Acks come at once unless held (``hold``), or are released
per topic, so a test decides the order in which deliveries complete; ``refuse`` makes
the broker refuse matching records with an error, as a real one would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from producers.sinks import Delivery, OutRecord


class MemorySink:
    def __init__(self) -> None:
        self.sent: list[OutRecord] = []
        self.acked: list[OutRecord] = []
        self.held = False
        self._pending: list[tuple[OutRecord, Delivery]] = []
        self._refusals: list[tuple[Callable[[OutRecord], bool], Callable[[], BaseException], int]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, record: OutRecord) -> Delivery:
        self.sent.append(record)
        future: Delivery = asyncio.get_running_loop().create_future()
        for i, (matches, error, times) in enumerate(self._refusals):
            if matches(record) and times != 0:
                self._refusals[i] = (matches, error, times - 1)
                future.set_exception(error())
                return future
        if self.held:
            self._pending.append((record, future))
        else:
            self._ack(record, future)
        return future

    def hold(self) -> None:
        """Keep acks back until ``release``."""
        self.held = True

    def release(self, topic: str | None = None) -> int:
        """Ack the held records (of ``topic`` only, if given), in send order; return how many."""
        keep, done = [], 0
        for record, future in self._pending:
            if topic is None or record.topic == topic:
                self._ack(record, future)
                done += 1
            else:
                keep.append((record, future))
        self._pending = keep
        if topic is None:
            self.held = False
        return done

    def refuse(self, matches: Callable[[OutRecord], bool], error: Callable[[], BaseException], times: int = -1) -> None:
        """Fail the delivery of records that match, ``times`` times (-1: always)."""
        self._refusals.append((matches, error, times))

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.acked if r.topic == topic]

    def _ack(self, record: OutRecord, future: Delivery) -> None:
        if not future.done():
            self.acked.append(record)
            future.set_result(None)
