"""The one owner of input offset commits.

An offset is committed only when the outcome of every record up to it has been
delivered (``done``), contiguously per partition, and only into the cluster the worker
started on: before each commit the cluster id is asked again, so offsets read from one
cluster are never written into another (a wiped and restarted broker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import groupby
from operator import attrgetter
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)

from consumers.source import InputRecord, Source, topic_and_partition, topic_partition
from pipeline.exceptions import BrokerUnavailable, ClusterChanged, KafkaAccessDenied, WorkerExit
from pipeline.offsets import OffsetTracker
from pipeline.outage import Outage

_OFFSET = attrgetter("offset")

log = logging.getLogger("streaminfer.worker")

# the group moved on: the partition's new owner replays from the last committed offset
_GROUP_MOVED = (CommitFailedError, IllegalStateError, RebalanceInProgressError)
# how often an idle worker asks whether the cluster is still there (and still the same)
PROBE_INTERVAL_S = 5.0
# the longest a single request to the cluster (metadata, commit, committed offsets) may take
ASK_TIMEOUT_S = 10.0
RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0)

T = TypeVar("T")


def backoff_s(attempt: int) -> float:
    return RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]


async def ask(request: Awaitable[T], what: str) -> T:
    """``request``'s answer within ASK_TIMEOUT_S; no answer is a KafkaTimeoutError like any other."""
    try:
        return await asyncio.wait_for(request, ASK_TIMEOUT_S)
    except TimeoutError as exc:
        raise KafkaTimeoutError(f"{what}: no answer within {ASK_TIMEOUT_S:.0f}s") from exc


async def through_outage(
    outage: Outage, call: Callable[[], Awaitable[T]], retry_on: tuple[type[Exception], ...] = (KafkaError,),
) -> T:
    """Retry ``call`` while it fails with ``retry_on`` errors, up to the outage deadline.

    Refused credentials end it at once (exit 4), the deadline with exit 3.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            failure = exc
        if is_access_denied(failure):
            raise KafkaAccessDenied(failure) from failure
        outage.failed(failure)
        if outage.expired():
            raise BrokerUnavailable(outage.seconds(), failure) from failure
        await asyncio.sleep(backoff_s(attempt))
        attempt += 1


def is_access_denied(exc: BaseException | None) -> bool:
    """Credentials or permissions refused, here or in what this error wraps."""
    seen = 0
    while exc is not None and seen < 5:
        name = type(exc).__name__
        if "Authorization" in name or "Authentication" in name or name == "SaslAuthenticationFailed":
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False


class Checkpoint:
    def __init__(
        self,
        source: Source,
        outage: Outage,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._outage = outage
        self._interval_s = interval_s
        self._clock = clock
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._lock = asyncio.Lock()
        self._last_commit = clock()
        self._last_probe = clock()
        self.cluster_id: str | None = None
        # set when committing must stop the worker; the worker loop raises it
        self.fatal: WorkerExit | None = None

    async def begin(self) -> None:
        """Learn the cluster id, waiting out an outage up to the outage deadline."""
        self.cluster_id = await through_outage(self._outage, self._ask_cluster_id)
        self._outage.ok()

    def track_many(self, tp: TopicPartition, offsets: Sequence[int]) -> None:
        self._offsets.track_many(tp, offsets)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self._offsets.done(tp, offset)

    def done_all(self, records: Iterable[InputRecord]) -> None:
        """``done`` for each of a batch's records, a run of a partition's offsets at a time
        (a batch holds runs of each partition, in order)."""
        for (topic, partition), run in groupby(records, topic_and_partition):
            self._offsets.done_many(topic_partition(topic, partition), list(map(_OFFSET, run)))

    def pending(self) -> int:
        """Records tracked and not yet delivered (at-least-once bookkeeping)."""
        return self._offsets.pending()

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        self._offsets.forget(tps)

    def forget_all(self) -> None:
        """Drop every partition's bookkeeping: their records are about to be read again."""
        self._offsets = OffsetTracker()

    async def commit(self, force: bool = True) -> None:
        """Commit delivered offsets; unforced commits happen at most every ``interval_s``."""
        if not force and self._clock() - self._last_commit < self._interval_s:
            return
        async with self._lock:
            self._last_commit = self._clock()
            offsets = self._offsets.committable()
            if not offsets or self.fatal is not None:
                return
            try:
                if not self._same_cluster(await self._ask_cluster_id()):
                    return
                await ask(self._source.commit(offsets), "offset commit")
            except _GROUP_MOVED as exc:
                log.warning("commit of %s failed, the group moved on: %s", _names(offsets), exc)
                return
            except KafkaError as exc:
                self._failed(exc)  # offsets stay pending: the next commit carries them
                return
            self._outage.ok()
            self._offsets.mark_committed(offsets)

    async def probe(self) -> None:
        """Ask the cluster for its id at most every PROBE_INTERVAL_S, so an idle worker
        notices an outage (and its end, and a changed cluster) as a busy one does."""
        if self._clock() - self._last_probe < PROBE_INTERVAL_S or self.fatal is not None:
            return
        self._last_probe = self._clock()
        try:
            found = await self._ask_cluster_id()
        except KafkaError as exc:
            self._failed(exc)
            return
        if self._same_cluster(found):
            self._outage.ok()

    async def same_cluster(self) -> bool:
        """Ask now whether this is still the cluster the worker started on (exactly-once
        commits offsets in transactions, so it asks before each batch's transactions).
        Unreachable counts as yes: the transaction itself then fails and is replayed."""
        try:
            found = await self._ask_cluster_id()
        except KafkaError as exc:
            self._failed(exc)
            return self.fatal is None
        return self._same_cluster(found)

    async def _ask_cluster_id(self) -> str:
        return await ask(self._source.cluster_id(), "metadata request")

    def _same_cluster(self, found: str) -> bool:
        if found != self.cluster_id:
            self.fatal = ClusterChanged(str(self.cluster_id), found)
            log.error("%s", self.fatal)
            return False
        return True

    def _failed(self, exc: BaseException) -> None:
        if is_access_denied(exc):
            self.fatal = KafkaAccessDenied(exc)
            return
        self._outage.failed(exc)


def _names(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}:{tp.partition}@{off}" for tp, off in sorted(offsets.items()))
