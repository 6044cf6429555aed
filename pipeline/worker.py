"""One worker: consume -> decode -> batch -> infer -> produce -> commit.

Two tasks share the work: the consume loop decodes records and fills the batcher (and
sends dead letters for bad input); the infer loop runs closed batches through the model
and produces results. A bounded queue between them is the backpressure: when the model
falls behind, the consume loop stops polling.

Offsets are committed only after every outcome (result or dead letter) up to them has
been acknowledged by the broker. On a rebalance, work already consumed is finished and
committed before partitions move; anything consumed under the old assignment that is
still in flight afterwards is dropped and replayed by the partition's next owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from consumers.kafka_source import InputRecord, KafkaSource
from pipeline.batcher import Batch, Batcher
from pipeline.config import WorkerSettings
from pipeline.offsets import OffsetTracker
from pipeline.runner import Runner
from producers.sinks import DeadLetterSink, Delivery, ResultSink, make_producer
from schemas.codec import decode_input
from schemas.errors import DecodeError
from schemas.models import DeadLetter, Frame, InputRef, Result, Timings, Transaction

log = logging.getLogger("streaminfer.worker")

_POLL_MS = 100


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WorkItem:
    record: InputRecord
    event: Frame | Transaction
    received_ms: int
    generation: int


@dataclass
class WorkerStats:
    results: int = 0
    dead_letters: int = 0
    batches: int = 0
    dropped_after_revoke: int = 0
    partitions_seen: set[str] = field(default_factory=set)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "results": self.results,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "dropped_after_revoke": self.dropped_after_revoke,
            "partitions_seen": sorted(self.partitions_seen),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
        }


def event_id(event: Frame | Transaction) -> str:
    return event.id if isinstance(event, Transaction) else f"{event.stream_id}/{event.seq}"


def poll_timeout_ms(deadline: float | None, now: float) -> int:
    """Poll no longer than the open window may wait, and never longer than _POLL_MS."""
    if deadline is None:
        return _POLL_MS
    return max(0, min(_POLL_MS, int((deadline - now) * 1000) + 1))


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        runner: Runner,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self._clock = clock
        self._batcher: Batcher[WorkItem] = Batcher(
            settings.max_batch_size, settings.max_batch_bytes, settings.max_wait_ms
        )
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._queue: asyncio.Queue[tuple[Batch[WorkItem], int]] = asyncio.Queue(
            settings.queued_batches
        )
        # batches whose results are sent, waiting for their acks; the model meanwhile runs
        # the next batch, so broker round trips overlap inference
        self._deliveries: asyncio.Queue[tuple[list[WorkItem], list[Delivery]]] = asyncio.Queue(
            settings.queued_batches
        )
        self._generation = 0
        self._commit_lock = asyncio.Lock()
        self._last_commit = clock()
        self.stats = WorkerStats()
        self._source: KafkaSource | None = None
        self._results: ResultSink | None = None
        self._dead_letters: DeadLetterSink | None = None

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until ``stop`` is set; then finish in-flight work, commit and leave the group."""
        producer: AIOKafkaProducer = make_producer(self.settings)
        self._results = ResultSink(producer, self.settings.results_topic, self.settings.result_content_type)
        self._dead_letters = DeadLetterSink(producer, self.settings.dead_letter_topic)
        self._source = KafkaSource(self.settings, self._on_revoked, self._on_assigned)
        self.runner.start()
        await producer.start()
        try:
            await self._source.start()
            try:
                async with asyncio.TaskGroup() as tasks:
                    infer = tasks.create_task(self._infer_loop(), name="infer")
                    deliver = tasks.create_task(self._delivery_loop(), name="deliver")
                    await self._consume_loop(stop)
                    await self._finish_in_flight()
                    infer.cancel()
                    deliver.cancel()
                await self._commit()
            finally:
                await self._source.stop()
        finally:
            await producer.stop()
            self.runner.stop()
        log.info("worker %s stopped: %s", self.settings.worker_id, self.stats.as_dict())
        return self.stats

    # -- consume side -------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        assert self._source is not None
        # one window per poll: records wait in Kafka, not in this process, when the model is behind
        max_records = self.settings.max_batch_size
        while not stop.is_set():
            timeout = poll_timeout_ms(self._batcher.deadline(), self._clock())
            records = await self._source.poll(timeout, max_records)
            generation = self._generation
            deliveries: list[tuple[InputRecord, Delivery]] = []
            for record in records:
                if generation != self._generation:
                    break  # a rebalance ran meanwhile: the rest is replayed by the new owner
                self._offsets.track(record.tp, record.offset)
                event = decode_input(record.value, record.headers, self.settings.limits)
                if isinstance(event, DecodeError):
                    deliveries.append((record, await self._send_dead_letter(record, event)))
                    continue
                item = WorkItem(record, event, wall_ms(), generation)
                for closed in self._batcher.add(item, len(record.value or b""), self._clock()):
                    await self._enqueue(closed)
            if (expired := self._batcher.poll(self._clock())) is not None:
                await self._enqueue(expired)
            if deliveries:
                await asyncio.gather(*(d for _, d in deliveries))
                if generation == self._generation:
                    for record, _ in deliveries:
                        self._offsets.done(record.tp, record.offset)
            await self._commit(force=False)

    async def _enqueue(self, batch: Batch[WorkItem]) -> None:
        await self._queue.put((batch, wall_ms()))

    async def _finish_in_flight(self) -> None:
        """Close the open window and wait until everything consumed so far is delivered."""
        await self._flush_window()
        await self._queue.join()
        await self._deliveries.join()

    async def _flush_window(self) -> None:
        if (batch := self._batcher.flush(self._clock())) is not None:
            await self._enqueue(batch)

    async def _send_dead_letter(self, record: InputRecord, error: DecodeError) -> Delivery:
        assert self._dead_letters is not None
        self.stats.dead_letters += 1
        self.stats.dead_letter_reasons[str(error.reason)] += 1
        log.debug("dead letter %s:%d@%d: %s", record.topic, record.partition, record.offset, error)
        return await self._dead_letters.send(
            DeadLetter(
                original=record.value or b"",
                reason=error.reason,
                message=error.message,
                input=InputRef(topic=record.topic, partition=record.partition, offset=record.offset),
                key=record.key,
                worker_id=self.settings.worker_id,
            )
        )

    # -- infer side ---------------------------------------------------------------

    async def _infer_loop(self) -> None:
        while True:
            batch, closed_ms = await self._queue.get()
            try:
                await self._process(batch, closed_ms)
            finally:
                self._queue.task_done()

    async def _process(self, batch: Batch[WorkItem], closed_ms: int) -> None:
        assert self._results is not None
        live = [it for it in batch.items if it.generation == self._generation]
        self.stats.dropped_after_revoke += len(batch.items) - len(live)
        if not live:
            return
        outcomes = await self.runner.run([it.event for it in live])
        deliveries: list[Delivery] = []
        for item, outcome in zip(live, outcomes, strict=True):
            rec = item.record
            if outcome.error is not None:
                deliveries.append(await self._send_dead_letter(rec, outcome.error))
                continue
            assert outcome.outputs is not None
            # built from values this worker made itself: no need to validate them again
            result = Result.model_construct(
                key=rec.key.decode("utf-8", "replace") if rec.key is not None else None,
                kind=item.event.kind,
                input=InputRef.model_construct(topic=rec.topic, partition=rec.partition, offset=rec.offset),
                event_id=event_id(item.event),
                model_name=outcome.model_name,
                model_version=outcome.model_version,
                outputs=outcome.outputs,
                timings=Timings.model_construct(
                    event_ms=item.event.event_time_ms,
                    received_ms=item.received_ms,
                    batch_closed_ms=closed_ms,
                    inference_start_ms=outcome.inference_start_ms,
                    inference_end_ms=outcome.inference_end_ms,
                    produced_ms=wall_ms(),
                ),
                batch_size=len(live),
                worker_id=self.settings.worker_id,
            )
            deliveries.append(await self._results.send(result, rec.key))
            self.stats.results += 1
        await self._deliveries.put((live, deliveries))

    async def _delivery_loop(self) -> None:
        while True:
            items, deliveries = await self._deliveries.get()
            try:
                # a failed delivery raises here and stops the worker before it is committed
                await asyncio.gather(*deliveries)
                self.stats.batches += 1
                if all(it.generation == self._generation for it in items):
                    for item in items:
                        self._offsets.done(item.record.tp, item.record.offset)
                await self._commit(force=False)
            finally:
                self._deliveries.task_done()

    # -- offsets and rebalancing ----------------------------------------------------

    async def _commit(self, force: bool = True) -> None:
        """Commit delivered offsets; unforced commits happen at most every commit_interval_ms."""
        assert self._source is not None
        if not force and self._clock() - self._last_commit < self.settings.commit_interval_ms / 1000:
            return
        async with self._commit_lock:
            self._last_commit = self._clock()
            offsets = self._offsets.committable()
            if not offsets:
                return
            try:
                await self._source.commit(offsets)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                # the group moved on; the new owner replays from the last committed offset
                log.warning("commit of %s failed: %s", offsets, exc)
                return
            self._offsets.mark_committed(offsets)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("worker %s: partitions revoked: %s", self.settings.worker_id, _names(revoked))
        await self._finish_in_flight()
        await self._commit()
        self._generation += 1
        self._offsets.forget(revoked)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("worker %s: partitions assigned: %s", self.settings.worker_id, _names(assigned))
        self.stats.partitions_seen.update(_names(assigned))


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)
