"""One worker: consume -> decode -> batch -> infer -> produce -> commit.

The work is shared by tasks. The consume loop polls the source, decodes each record and
fills the batcher of the record's lane; a record that does not decode travels through the
batcher too, as its dead letter to be, so every batch covers a contiguous run of each
partition's offsets. There is one lane per input topic (a batcher, a queue, an infer loop
and a model thread): topics are per kind, so a transaction never waits behind a frame
batch, and a partition lives in one lane, so its batches stay in order. Each infer loop
runs its closed batches through the model and sends one outcome per record
(``pipeline.outcomes``). The delivery loop awaits the broker's acks in batch
order, replaces a record the broker refused with its dead letter, retries through an
outage, and hands delivered offsets to the ``Checkpoint``, the one owner of commits; in
exactly-once mode it commits each batch in transactions instead (``pipeline.exactly_once``).
Bounded queues between the loops are the backpressure: when the model falls behind,
the consume loop stops polling and records wait in Kafka, not in this process.

On a rebalance, work already consumed is finished and committed before partitions
move; anything consumed under the old assignment that is still in flight afterwards is
dropped and replayed by the partition's next owner.

Only the infrastructure ends a worker (``pipeline.exceptions``): the cluster gone past
the outage deadline, credentials refused, the cluster id changed, or a bug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumers.source import InputRecord, Source, topic_and_partition, topic_partition
from pipeline.batch_sizing import START_SIZE, BatchSizer, candidate_sizes
from pipeline.batcher import Batch, Batcher, split
from pipeline.checkpoint import Checkpoint, backoff_s, is_access_denied
from pipeline.config import WorkerSettings
from pipeline.exactly_once import ExactlyOnce
from pipeline.exceptions import BrokerUnavailable, KafkaAccessDenied, WorkerExit
from pipeline.inflight import InFlight, Sent, WorkerStats, WorkItem
from pipeline.metrics import Histogram, LaneMetrics
from pipeline.outage import Outage, describe
from pipeline.outcomes import Outcome, Outcomes
from pipeline.runner import Outcome as Inference
from pipeline.runner import Prepared, Runner
from pipeline.tracing import OtelTracer
from producers.sinks import Delivery, RecordsResent, Sink, is_record_fault
from producers.transactional import PartitionTransactions
from schemas.errors import DecodeError
from schemas.models import Frame, Transaction, wall_ms

log = logging.getLogger("streaminfer.worker")

_POLL_MS = 100
_RECORD, _EVENT, _RECEIVED_MS = attrgetter("record"), attrgetter("event"), attrgetter("received_ms")
_TIMESTAMP_MS = attrgetter("timestamp_ms")  # a transaction's event time (``event_time_ms``, without the call)
_POLL_GRACE_S = 5.0



def poll_timeout_ms(deadline: float | None, now: float) -> int:
    """Poll no longer than the open window may wait, and never longer than _POLL_MS."""
    if deadline is None:
        return _POLL_MS
    return max(0, min(_POLL_MS, int((deadline - now) * 1000) + 1))


@dataclass(slots=True)
class _Ahead:
    """A batch taken from its lane's queue, with its preparation if it is prepared ahead."""

    batch: Batch[WorkItem]
    closed_ms: int
    prepared: asyncio.Future[Prepared] | None
    # ran beside a batch of another size in the lane's other model threads: its time says
    # little about its size (``_Lane.enter_model``)
    mixed: bool = False


@dataclass
class _Lane:
    topic: str
    batcher: Batcher[WorkItem]
    queue: asyncio.Queue[tuple[Batch[WorkItem], int]]
    # adaptive batching: learns the cap on the batch size; None: fixed windows
    sizer: BatchSizer | None = None
    # closed batches the full queue could not take yet; while there are any, the lane's
    # partitions are paused, so the other lanes go on reading
    held: list[tuple[Batch[WorkItem], int]] = field(default_factory=list)
    streams: int = 1  # batches of this lane its model runs at once (the runner's model threads per lane)
    # batches of this lane in its model threads (not those only sending their results)
    in_model: list[_Ahead] = field(default_factory=list)
    # done when a batch leaves a model thread (a new one each time the infer loop waits):
    # the loop starts the next one then, not once the batch's results are out (they wait
    # for those of the batch before)
    model_freed: asyncio.Future[None] | None = None
    # the lane's batches under way (in a model thread, or waiting to send their results),
    # oldest first; they end in batch order, each sending its results after the one before
    # it has (``Worker._process``)
    running: list[asyncio.Future[None]] = field(default_factory=list)
    ahead: _Ahead | None = None  # a closed batch taken from the queue, being prepared, not started yet
    # the infer loop waits on the queue: a batch its get took may not be in ``ahead`` yet,
    # so a batch leaving its thread takes nothing from the queue (it would go out first)
    taking: bool = False

    def idle(self) -> bool:
        """A model thread of the lane is free, and no closed batch waits for one."""
        return self.model_free() and not self.held and self.queue.empty()

    def model_free(self) -> bool:
        return len(self.in_model) < self.streams

    def enter_model(self, ahead: _Ahead) -> None:
        """``ahead``'s batch into a model thread. It and any batch of another size in the
        others are marked mixed: a batch's time depends on what runs beside it
        (EfficientNet-Lite0 on two threads here, before ``pipeline.allocator``: in adaptive
        drains that mixed sizes the median batch of 4 took 39-47 ms and of 2, 22; windows of
        4 alone drained at 120-134 frames/s with both threads 92 % busy, about 55-61 ms a
        batch, against 165-181 for windows of 2)."""
        size = len(ahead.batch.items)
        for other in self.in_model:
            if len(other.batch.items) != size:
                other.mixed = ahead.mixed = True
        self.in_model.append(ahead)

    def leave_model(self, ahead: _Ahead) -> None:
        """``ahead``'s batch is out of the model (once; again is a no-op)."""
        if ahead in self.in_model:
            self.in_model.remove(ahead)
            if self.model_freed is not None and not self.model_freed.done():
                self.model_freed.set_result(None)


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        runner: Runner,
        source: Source,
        sink: Sink | None,
        clock: Callable[[], float] = time.monotonic,
        transactions: PartitionTransactions | None = None,
    ) -> None:
        """``transactions`` given: exactly-once (one transaction per batch and input
        partition); else at-least-once through ``sink``."""
        if (sink is None) == (transactions is None):
            raise ValueError("give a sink (at-least-once) or transactions (exactly-once), not both")
        self.settings = settings
        self.runner = runner
        self._source = source
        self._sink = sink
        self._clock = clock
        # one lane per input topic (topics are per kind: frames, transactions): a batcher,
        # a queue and an inference thread each, so a transaction never waits behind a frame batch
        self._lanes = {topic: self._new_lane(topic) for topic in dict.fromkeys(settings.input_topics)}
        self._outcomes = Outcomes(
            results_topic=settings.results_topic,
            dead_letter_topic=settings.dead_letter_topic,
            worker_id=settings.worker_id,
            content_type=settings.result_media_type,
            limits=settings.limits,
            tracer=OtelTracer() if settings.tracing == "otel" else None,
        )
        self._outage = Outage(settings.broker_outage_deadline_s, clock=clock)
        self.checkpoint = Checkpoint(source, self._outage, settings.commit_interval_ms / 1000, clock)
        # batches whose outcomes are sent, waiting for their acks; the model meanwhile runs
        # the next batch, so broker round trips overlap inference
        self._deliveries: asyncio.Queue[Sent] = asyncio.Queue(settings.queued_batches)
        self._inflight = InFlight()
        self._paused: set[TopicPartition] = set()
        self.stats = WorkerStats()
        self._exactly_once = None if transactions is None else ExactlyOnce(
            transactions, source=source, outcomes=self._outcomes, checkpoint=self.checkpoint,
            outage=self._outage, inflight=self._inflight, stats=self.stats,
        )
        # set when the infer or delivery loop died: nothing waits for them to drain any more
        self._loops_dead = asyncio.Event()
        # for /metrics: per lane, end to end per kind, where each partition was read up to
        self._lane_metrics = {topic: LaneMetrics() for topic in self._lanes}
        self.end_to_end: dict[str, Histogram] = {}
        # a batch's outcomes handed to the producer -> every one acked (or committed in its transaction)
        self.produce_s = Histogram()
        self._positions: dict[tuple[str, int], int] = {}
        self._running = False
        self._finishing = 0  # _finish_in_flight calls under way

    def _new_lane(self, topic: str) -> _Lane:
        s = self.settings
        sizer = (BatchSizer(s.max_batch_size, s.latency_slo_ms, set_up_batches=self.runner.streams)
                 if s.batching == "adaptive" else None)
        batcher: Batcher[WorkItem] = Batcher(
            sizer.cap if sizer else s.max_batch_size, s.max_batch_bytes, s.max_wait_ms
        )
        return _Lane(topic, batcher, asyncio.Queue(s.queued_batches), sizer, streams=self.runner.streams)

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until ``stop`` is set; then finish in-flight work, commit and leave the group.

        A ``WorkerExit`` raised on the way is what the caller sees: closing the clients
        afterwards is bounded and cannot replace it with an error of its own.
        """
        self.runner.start()
        try:
            await self._warm_up()
            if self._sink is not None and not await self._start_client(self._sink.start, self._sink.stop, stop):
                return self.stats
            try:
                if not await self._start_client(lambda: self._source.start(self._on_revoked, self._on_assigned),
                                                self._source.stop, stop):
                    return self.stats
                try:
                    await self.checkpoint.begin()
                    self._running = True
                    await self._run_loops(stop)
                    if self._exactly_once is None:
                        await self.checkpoint.commit()
                finally:
                    await _close(self._source.stop(), "the consumer")
            finally:
                if self._sink is not None:
                    await _close(self._sink.stop(), "the producer")
                if self._exactly_once is not None:
                    await _close(self._exactly_once.close(), "the transactional producers")
        finally:
            self._running = False
            self.runner.stop()
        log.info("worker %s stopped: %s", self.settings.worker_id, self.stats.as_dict())
        return self.stats

    async def _warm_up(self) -> None:
        """Each lane's model threads set up the sizes its first batches take, before the
        worker joins its group (``Runner.warm_up``): a record's first batch is not the one
        that pays for it. With adaptive batching, the lane's sizer counts those sizes' live
        batches from the first and starts its cap at the cheapest of them, given a single
        model (a lane of a worker with both runs whichever kind its topic carries)."""
        started = time.perf_counter()
        lanes = list(self._lanes.values())
        timings = await asyncio.gather(*(self.runner.warm_up(lane.topic, _warm_up_sizes(lane, self.settings))
                                         for lane in lanes))
        for lane, per_kind in zip(lanes, timings, strict=True):
            if lane.sizer is not None and per_kind:
                timed = list(per_kind.values())
                lane.sizer.warmed(set.intersection(*map(set, timed)), timed[0] if len(timed) == 1 else None)
                lane.batcher.max_batch_size = lane.sizer.cap
        if any(timings):
            lines = [f"{lane.topic} {kind} " + ", ".join(f"{size}: {s * 1000:.2f}" for size, s in sizes.items())
                     for lane, per_kind in zip(lanes, timings, strict=True) for kind, sizes in per_kind.items()]
            log.info("warmed up in %.2f s (ms an item by batch size): %s", time.perf_counter() - started,
                     "; ".join(lines))

    async def _start_client(self, start: Callable[[], Awaitable[None]], stop_client: Callable[[], Awaitable[None]],
                            stop: asyncio.Event) -> bool:
        """Start a Kafka client, retrying while the cluster does not answer (a worker may come
        up before its broker) until the outage deadline; False if ``stop`` came meanwhile."""
        attempt = 0
        while True:
            try:
                await start()
            except KafkaError as exc:
                await _close(stop_client(), "a client that did not start")
                if is_access_denied(exc):
                    raise KafkaAccessDenied(exc) from exc
                self._outage.failed(exc)
                if self._outage.expired():
                    raise BrokerUnavailable(self._outage.seconds(), exc) from exc
                try:
                    await asyncio.wait_for(stop.wait(), backoff_s(attempt))
                    return False
                except TimeoutError:
                    attempt += 1
                    continue
            self._outage.ok()
            return True

    async def _run_loops(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                loops = [tasks.create_task(self._infer_loop(lane), name=f"infer {lane.topic}")
                         for lane in self._lanes.values()]
                loops.append(tasks.create_task(self._delivery_loop(), name="deliver"))
                for task in loops:
                    task.add_done_callback(self._on_loop_done)
                await self._consume_loop(stop)
                await self._finish_in_flight()
                for task in loops:
                    task.cancel()
        except BaseExceptionGroup as group:
            # one clear reason to stop, not a group of tracebacks
            raise _first(group) from None

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._loops_dead.set()

    # -- consume side -------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        # one window per poll: records wait in Kafka, not in this process, when the model is
        # behind; with adaptive batching, a window as large as the largest lane's cap (polled
        # at the bound, a backlog would be cut into many batches at a cap still being learned)
        while not stop.is_set():
            max_records = max(lane.batcher.max_batch_size for lane in self._lanes.values())
            self._raise_if_fatal()
            self._release_held()
            deadlines = [d for lane in self._lanes.values() if (d := lane.batcher.deadline()) is not None]
            timeout = poll_timeout_ms(min(deadlines, default=None), self._clock())
            await self._inflight.reading.wait()
            records = await self._poll(timeout, max_records)
            if self._exactly_once is not None:
                self._exactly_once.note_polled(records)  # before any record is dropped
            if not self._inflight.reading.is_set():
                continue  # positions are being reset (exactly-once): these are read again
            # after the poll, not before: a rebalance during the poll has already moved
            # positions, and what the poll returns is read from the new ones
            generation = self._inflight.generation
            received_ms, now = wall_ms(), self._clock()  # one poll, one moment: not a clock read per record
            self.stats.consumed += len(records)
            tracking = self._exactly_once is None  # exactly-once commits offsets in transactions
            decode = self._outcomes.decode_many
            # a partition's records at a time (a poll returns them so): bookkeeping and
            # batching once a partition, decoding once a record. Nothing here awaits, so no
            # rebalance or replay can come between the records of one poll.
            for (topic, partition), group in groupby(records, topic_and_partition):
                run = list(group)
                self._positions[topic, partition] = run[-1].offset + 1
                if tracking:
                    self.checkpoint.track_many(topic_partition(topic, partition), [record.offset for record in run])
                lane = self._lane(topic)
                items = [WorkItem(record, event, received_ms, generation)
                         for record, event in zip(run, decode(run), strict=True)]
                # a transaction weighs its payload: asked here, not of _item_bytes (this is per record)
                weights = [len(it.record.value) if type(it.event) is Transaction else _item_bytes(it)  # type: ignore[arg-type]
                           for it in items]
                for closed in lane.batcher.extend(items, weights, now):
                    self._hand_over(lane, closed)
            for lane in self._lanes.values():
                if (expired := lane.batcher.poll(self._clock())) is not None:
                    self._hand_over(lane, expired)
                self._dispatch_if_idle(lane)

    async def _poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        try:
            # a poll waits without limit while the group rebalances: bound it, so stop and
            # the outage deadline are still looked at
            async with asyncio.timeout(timeout_ms / 1000 + _POLL_GRACE_S):
                records = await self._source.poll(timeout_ms, max_records)
        except TimeoutError:
            return []
        except KafkaError as exc:
            if is_access_denied(exc):
                raise KafkaAccessDenied(exc) from exc
            self._outage.failed(exc)
            await asyncio.sleep(backoff_s(0))
            return []
        return records

    def _raise_if_fatal(self) -> None:
        if self.checkpoint.fatal is not None:
            raise self.checkpoint.fatal
        if self._outage.expired():
            raise BrokerUnavailable(self._outage.seconds(), self._outage.last_error)

    def _lane(self, topic: str) -> _Lane:
        # a topic outside the subscription cannot come; if it did, the first lane serves it
        return self._lanes.get(topic) or next(iter(self._lanes.values()))

    async def _enqueue(self, lane: _Lane, batch: Batch[WorkItem]) -> None:
        await lane.queue.put((batch, wall_ms()))

    def _hand_over(self, lane: _Lane, batch: Batch[WorkItem]) -> None:
        """Queue a closed batch, or hold it while the lane's queue is full (never waits:
        a lane whose model is behind must not stop the consume loop for the others)."""
        if lane.held or lane.queue.full():
            lane.held.append((batch, wall_ms()))
        else:
            lane.queue.put_nowait((batch, wall_ms()))

    def _dispatch_if_idle(self, lane: _Lane) -> None:
        """Adaptive batching: close the open window now if its model has nothing to do
        (at low load an item goes out at once; under load the window grows meanwhile)."""
        if lane.sizer is not None and lane.idle() and (batch := lane.batcher.take(self._clock())) is not None:
            lane.queue.put_nowait((batch, wall_ms()))

    def _release_held(self) -> None:
        """Move held batches into queues with room; pause the partitions of lanes that
        still hold some, resume the others (backpressure per lane: their records wait in
        Kafka)."""
        for lane in self._lanes.values():
            while lane.held and not lane.queue.full():
                lane.queue.put_nowait(lane.held.pop(0))
        behind = {lane.topic for lane in self._lanes.values() if lane.held}
        if not behind and not self._paused:
            return  # the usual case: nothing to pause or resume
        assigned = self._source.assignment()
        want = {tp for tp in assigned if tp.topic in behind}
        # set both ways each time: a rebalance hands partitions back unpaused
        self._source.resume(assigned - want)
        self._source.pause(want)
        self._paused = want

    async def _finish_in_flight(self) -> None:
        """Close the open window and wait until everything consumed so far is delivered.

        Returns at once if the infer or delivery loop has died (the worker is stopping with
        its error): a rebalance callback waiting here would otherwise hold up the exit.
        """
        self._finishing += 1  # no re-cut meanwhile: a batch waiting in put() would lose its place
        try:
            for lane in self._lanes.values():
                while lane.held:
                    await self._unless_loops_dead(lane.queue.put(lane.held.pop(0)))
                if (batch := lane.batcher.flush(self._clock())) is not None:
                    await self._unless_loops_dead(self._enqueue(lane, batch))
            for lane in self._lanes.values():
                await self._unless_loops_dead(lane.queue.join())
            await self._unless_loops_dead(self._deliveries.join())
        finally:
            self._finishing -= 1

    async def _unless_loops_dead(self, waiting: Awaitable[None]) -> None:
        task = asyncio.ensure_future(waiting)
        dead = asyncio.ensure_future(self._loops_dead.wait())
        await asyncio.wait({task, dead}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, dead):
            pending.cancel()

    # -- infer side ---------------------------------------------------------------

    async def _infer_loop(self, lane: _Lane) -> None:
        """Feed the lane's model threads: batches start as threads free (``_start_ready``,
        also called by a batch the moment it leaves its thread), held batches and the open
        window go out when one is free, and what a batch raised ends the loop."""
        try:
            while True:
                while lane.running and lane.running[0].done():
                    lane.running.pop(0).result()  # what a batch raised ends the loop
                free = self._start_ready(lane)
                if free:
                    # a model thread is free: what waits goes next, without waiting for the
                    # consume loop's poll to end: held batches first (they are older, and
                    # their partitions resume when the last goes), then (adaptive) the open
                    # window, whatever its size
                    self._release_held()
                    self._dispatch_if_idle(lane)
                    if not lane.queue.empty():
                        continue  # started at once
                if lane.ahead is None and (free or self.runner.pool_kinds):
                    # frames, every model thread busy: the next closed batch is decoded and
                    # preprocessed on the runner's pool meanwhile (overlap, not reordering: it
                    # reaches the model, and its results the producer, after those before it)
                    await self._take_ahead(lane)
                else:
                    await self._until_model_freed(lane)
        finally:
            for batch in lane.running:  # the loop is dying: what it started goes with it
                batch.cancel()
            lane.running.clear()
            if lane.ahead is not None:  # the loop is dying with a batch taken ahead
                if lane.ahead.prepared is not None:
                    lane.ahead.prepared.cancel()
                lane.ahead = None
                lane.queue.task_done()

    def _start_ready(self, lane: _Lane) -> bool:
        """Start the lane's batch taken ahead, then its queued batches, while a model thread
        is free; whether one still is (nothing was left to start). Up to twice as many
        batches as model threads are under way (``lane.running``), as those that left their
        thread wait to send their results after the batch before them has. Called by a batch
        as it leaves its thread, not only by the infer loop: the next batch is in the thread
        before this one's results are built and sent. Started from the loop, after those
        results and a few loop passes, each of two model threads of EfficientNet-Lite0
        waited a median 0.99-1.34 ms for its next batch, against 0.83-0.95 now (drains of
        1,200 frames, 2026-12-07)."""
        while lane.model_free() and len(lane.running) < 2 * lane.streams:
            if lane.ahead is None:
                if lane.queue.empty() or lane.taking:
                    return True
                batch, closed_ms = lane.queue.get_nowait()
                lane.ahead = _Ahead(batch, closed_ms, self._prepare(lane, batch))
            ahead, lane.ahead = lane.ahead, None
            lane.running.append(self._start(lane, ahead, lane.running[-1] if lane.running else None))
        return False

    def _start(self, lane: _Lane, ahead: _Ahead, before: asyncio.Future[None] | None) -> asyncio.Future[None]:
        """``ahead``'s batch into a model thread of ``lane``, its results sent after ``before``'s."""
        lane.enter_model(ahead)
        processing = asyncio.ensure_future(self._process(ahead, lane, before))

        def done(_: asyncio.Future[None]) -> None:
            lane.leave_model(ahead)  # if it never got there (cancelled before it ran)
            lane.queue.task_done()

        processing.add_done_callback(done)
        return processing

    def _prepare(self, lane: _Lane, batch: Batch[WorkItem]) -> asyncio.Future[Prepared] | None:
        """Start preprocessing ``batch`` on the runner's pool if its model opts in (frames)."""
        if not self.runner.pool_kinds:
            return None  # no model of this worker does (transactions only): not asked per item
        events = [it.event for it in batch.items if not isinstance(it.event, DecodeError)]
        if not events or not self.runner.prepares_apart(events):  # type: ignore[arg-type]
            return None
        started = time.perf_counter()
        metrics = self._lane_metrics[lane.topic]
        future = asyncio.ensure_future(self.runner.prepare(events))  # type: ignore[arg-type]
        future.add_done_callback(lambda _: metrics.preprocess_s.observe(time.perf_counter() - started))
        return future

    @staticmethod
    async def _until_model_freed(lane: _Lane, *also: asyncio.Future[Any]) -> None:
        """Until a batch leaves a model thread of ``lane``, the oldest under way ends, or one
        of ``also`` is done."""
        lane.model_freed = freed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait([freed, *lane.running[:1], *also], return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            lane.model_freed = None

    async def _take_ahead(self, lane: _Lane) -> None:
        """The next closed batch of ``lane`` into ``lane.ahead``, started on its preparation,
        if one comes before a model thread frees or the oldest batch under way ends; nothing
        if one of those comes first."""
        getter = asyncio.ensure_future(lane.queue.get())
        lane.taking = True
        try:
            await self._until_model_freed(lane, getter)  # with nothing under way, only the get ends it
            if getter.done():
                batch, closed_ms = getter.result()
                lane.ahead = _Ahead(batch, closed_ms, self._prepare(lane, batch))
        finally:
            getter.cancel()  # a no-op once done; a cancelled Queue.get takes nothing from the queue
            lane.taking = False

    async def _process(self, ahead: _Ahead, lane: _Lane, before: asyncio.Future[None] | None = None) -> None:
        """Run one batch and send its outcomes, after ``before`` (the lane's batch before it,
        in a model thread of its own meanwhile) has sent its: results keep the order of
        their inputs, per key and per partition."""
        batch, closed_ms = ahead.batch, ahead.closed_ms
        # a batch's generations never fall (a drop bumps it for what is read after): its first
        # item current, every item is, and the batch need not be looked at per item
        live = batch.items if batch.items and self._inflight.current(batch.items[0]) else tuple(
            it for it in batch.items if self._inflight.current(it))
        self.stats.dropped_after_revoke += len(batch.items) - len(live)
        metrics = self._lane_metrics[lane.topic]
        metrics.items += len(batch.items)
        metrics.batches[batch.reason] = metrics.batches.get(batch.reason, 0) + 1
        metrics.wait_s.observe(batch.closed_at - batch.opened_at)
        try:
            if not live:
                return
            started = time.perf_counter()  # the lane's time on this batch, for adaptive batching (_learn)
            stale = self._stale_frames(live, wall_ms())
            decoded = ([it for it in live if not isinstance(it.event, DecodeError) and id(it) not in stale] if stale
                       else [it for it in live if not isinstance(it.event, DecodeError)])
            inferences, in_thread_s = await self._infer(lane, decoded, ahead.prepared) if decoded else ([], 0.0)
        finally:
            lane.leave_model(ahead)
        self._start_ready(lane)  # the next batch into the thread this one left, before its results
        waited = 0.0  # on the batch before: not this batch's cost (_learn)
        if before is not None and not before.done():
            waited = time.perf_counter()
            await asyncio.wait([before])  # not cancelled with this one: it has its own owner
            waited = time.perf_counter() - waited
        if before is not None and (before.cancelled() or before.exception() is not None):
            return  # the loop ends with the batch before: nothing of this one goes out ahead of it
        produced_ms = wall_ms()  # the batch's outcomes go to the producer together
        batch_size = len(decoded)
        if len(decoded) == len(live):  # the usual batch: every item decoded, none stale
            outcomes = self._results(live, inferences, closed_ms, produced_ms, batch_size)
        else:
            outcomes = self._outcomes_of(live, iter(inferences), stale, closed_ms, produced_ms, batch_size)
        if self._sink is None:  # exactly-once: the delivery loop sends them in transactions
            self._learn(lane, ahead, batch_size, time.perf_counter() - started - waited, in_thread_s)
            await self._deliveries.put(Sent(live, outcomes, None, time.perf_counter()))
            return
        sent_at = time.perf_counter()
        deliveries = await self._sink.send_many([outcome.record for outcome in outcomes])
        self._learn(lane, ahead, batch_size, time.perf_counter() - started - waited, in_thread_s)
        await self._deliveries.put(Sent(live, outcomes, deliveries, sent_at))

    def _results(self, items: tuple[WorkItem, ...], inferences: list[Inference], closed_ms: int,
                 produced_ms: int, batch_size: int) -> list[Outcome]:
        """The outcomes of a batch whose every item ran: built in one loop (``Outcomes.results``)."""
        # attrgetters mapped, not comprehensions: no bytecode run per item (this is per record)
        events: list[Frame | Transaction] = list(map(_EVENT, items))
        outcomes = self._outcomes.results(list(map(_RECORD, items)), events, inferences,
                                          list(map(_RECEIVED_MS, items)), closed_ms=closed_ms,
                                          produced_ms=produced_ms, batch_size=batch_size)
        kinds = set(map(type, events))
        if kinds == {Transaction}:  # a lane's batch is of one kind, mostly transactions: their own field
            self._end_to_end("transaction").observe_many(
                [(produced_ms - ms) / 1000 for ms in map(_TIMESTAMP_MS, events)])
        else:
            for event in events:
                self._end_to_end(event.kind).observe((produced_ms - event.event_time_ms) / 1000)
        return outcomes

    def _outcomes_of(self, live: tuple[WorkItem, ...], inferences: Iterator[Inference], stale: dict[int, int],
                     closed_ms: int, produced_ms: int, batch_size: int) -> list[Outcome]:
        """The outcomes of a batch with dead letters or stale frames among its items, one by one."""
        outcomes: list[Outcome] = []
        frame_model = self.runner.models.get("frame") if stale else None
        e2e_kind, e2e = "", None  # the histogram of the kind last seen: a batch is mostly one kind
        for item in live:
            event = item.event
            if isinstance(event, DecodeError):
                outcomes.append(self._outcomes.dead_letter(item.record, event.reason, event.message))
            elif stale and id(item) in stale:
                assert isinstance(event, Frame)
                outcomes.append(self._outcomes.skipped_stale(
                    item.record, event, age_ms=stale[id(item)], max_age_ms=self.settings.max_frame_age_ms,
                    model_name=frame_model.name if frame_model else "",
                    model_version=frame_model.version if frame_model else "",
                    received_ms=item.received_ms, closed_ms=closed_ms, produced_ms=produced_ms,
                ))
            else:
                outcomes.append(self._outcomes.result(
                    item.record, event, next(inferences), received_ms=item.received_ms, closed_ms=closed_ms,
                    produced_ms=produced_ms, batch_size=batch_size,
                ))
                if e2e is None or event.kind != e2e_kind:
                    e2e_kind, e2e = event.kind, self._end_to_end(event.kind)
                e2e.observe((produced_ms - event.event_time_ms) / 1000)
        return outcomes

    def _learn(self, lane: _Lane, ahead: _Ahead, size: int, lane_s: float, in_thread_s: float) -> None:
        """Adaptive batching: the lane's sizer learns from the time its batch of ``size``
        took. With one model thread, ``lane_s``: from the model being free for it to its
        outcomes handed to the producer, the model and the work per batch around it (results,
        the produce request). Timed on the model alone, the transaction MLP looked about as
        cheap per item at 64 as at 256 (flat, then noisy), and adaptive drains ran at
        0.80-0.85x of fixed windows of 256 (30.4k and 32.2k against 35.6k and 37.9k
        transactions/s, the suite's run of 27e1123), whose work outside the model is spread
        over more items. With several, ``in_thread_s``, the batch's time in its model thread:
        the rest overlaps the next batch in that thread (``_start_ready``), and the threads
        bound the lane. Timed as one thread's, batches of 2 frames of EfficientNet-Lite0 cost
        13.6-15.6 ms a frame against 11 in the model, and 4 looked the cheaper (10-11), while
        windows of 4 drained at 120-134 frames/s against 165-181 for windows of 2. A batch
        that ran beside one of another size (``_Lane.enter_model``) only ends a try of its
        size that it shows to be far dearer (``BatchSizer.observe_beside``)."""
        if lane.sizer is None or size < 1:
            return
        seconds = lane_s if lane.streams == 1 else in_thread_s
        cap = lane.sizer.observe_beside(size, seconds) if ahead.mixed else lane.sizer.observe(size, seconds)
        if cap != lane.batcher.max_batch_size:
            log.debug("lane %s: batch cap %d -> %d (ms an item by size: %s)", lane.topic,
                      lane.batcher.max_batch_size, cap, lane.sizer.per_item_ms())
        if cap < lane.batcher.max_batch_size:
            self._recut(lane, cap)
        lane.batcher.max_batch_size = cap

    def _end_to_end(self, kind: str) -> Histogram:
        return self.end_to_end.get(kind) or self.end_to_end.setdefault(kind, Histogram())

    async def _infer(self, lane: _Lane, items: list[WorkItem],
                     prepared: asyncio.Future[Prepared] | None) -> tuple[list[Inference], float]:
        """Run ``items`` on the lane's model thread (their batch ``prepared`` ahead, or
        preprocessed there); and the seconds that took in the thread."""
        events: list[Frame | Transaction] = [it.event for it in items]  # type: ignore[misc]
        ready = await prepared if prepared is not None else None
        if ready is None:
            inferences, seconds = await self.runner.run_timed(events, lane.topic)
        else:  # the items still to run (not revoked nor stale since) among those prepared
            at = {id(event): i for i, event in enumerate(ready.items)}
            inferences, seconds = await self.runner.infer_timed(ready.select([at[id(event)] for event in events]),
                                                                lane.topic)
        self._lane_metrics[lane.topic].inference_s.observe(seconds)
        return inferences, seconds

    def _recut(self, lane: _Lane, cap: int) -> None:
        """The cap came down (a probe of a larger size is over, or a smaller one starts):
        the batches already closed at the old cap and waiting are cut to the new one.
        Left whole, they ran at the size just found dearer: for frames on a CPU, a probe of
        batch 8 ran 7 batches at 59-74 ms a frame against 38-40 at batch 2, since the
        batches closed while it ran were still queued when it ended. Not while in-flight work
        is being finished (a rebalance, the stop): that moves held batches into the queue
        one await at a time, and the batch it is putting would end up behind later ones."""
        if self._finishing:
            return
        queued = [lane.queue.get_nowait() for _ in range(lane.queue.qsize())]
        waiting, lane.held = queued + lane.held, []
        parts = [(part, closed_ms) for batch, closed_ms in waiting for part in split(batch, cap, _item_bytes)]
        # the open window's full part last (already cut to the cap): its items came after every closed batch's
        parts += [(part, wall_ms()) for part in lane.batcher.resize(cap, self._clock(), _item_bytes)]
        for part in parts:
            if lane.held or lane.queue.full():
                lane.held.append(part)  # its partitions pause until there is room
            else:
                lane.queue.put_nowait(part)
        # the gets are marked done after the puts, so the count of unfinished batches never
        # falls meanwhile (a join() waiting on the queue must not see it empty)
        for _ in queued:
            lane.queue.task_done()
        self._release_held()

    def _stale_frames(self, items: tuple[WorkItem, ...], now_ms: int) -> dict[int, int]:
        """id(item) -> age in ms of each frame older than ``max_frame_age_ms`` (0: none is)."""
        limit = self.settings.max_frame_age_ms
        if not limit:
            return {}
        stale = {}
        for item in items:
            if isinstance(item.event, Frame) and (age := now_ms - item.event.captured_at_ms) > limit:
                stale[id(item)] = age
        if stale:
            self.stats.skipped_stale += len(stale)
        return stale

    # -- delivery side --------------------------------------------------------------

    async def _delivery_loop(self) -> None:
        # when no batch comes, still commit what is delivered (e.g. after a failed commit)
        idle_s = max(self.settings.commit_interval_ms / 1000, 0.2)
        while True:
            try:
                sent = await asyncio.wait_for(self._deliveries.get(), idle_s)
            except TimeoutError:
                await self.checkpoint.commit(force=False)
                await self.checkpoint.probe()
                continue
            try:
                if self._exactly_once is None:
                    await self._deliver_at_least_once(sent)
                else:
                    await self._exactly_once.deliver(sent)
                    self.produce_s.observe(time.perf_counter() - sent.sent_at)
            finally:
                self._deliveries.task_done()

    async def _deliver_at_least_once(self, sent: Sent) -> None:
        assert sent.deliveries is not None
        # the records of a record batch share its delivery (``Sink.send_many``): each
        # delivery is waited for and looked at once, and the records one by one only if
        # one of them failed
        deliveries = dict.fromkeys(sent.deliveries)
        if waiting := [delivery for delivery in deliveries if not delivery.done()]:
            await asyncio.wait(waiting)
        outcomes = sent.outcomes
        if any(delivery.cancelled() or delivery.exception() is not None for delivery in deliveries):
            outcomes = [await self._delivered(outcome, delivery)
                        if delivery.cancelled() or delivery.exception() is not None else outcome
                        for outcome, delivery in zip(outcomes, sent.deliveries, strict=True)]
        results = [outcome.reason for outcome in outcomes].count(None)
        if results < len(outcomes):
            for outcome in outcomes:
                if outcome.reason is not None:
                    self.stats.count(outcome)
        self.stats.results += results
        self.produce_s.observe(time.perf_counter() - sent.sent_at)  # before any await: counted with the results
        self._outage.ok()  # once per batch: every outcome of it got through
        self.stats.batches += 1
        if self._inflight.current(sent.items[0]):  # a batch's live items share one generation
            self.checkpoint.done_all(map(_RECORD, sent.items))
        await self.checkpoint.commit(force=False)

    async def _delivered(self, outcome: Outcome, delivery: Delivery) -> Outcome:
        """Wait for ``outcome``'s ack; return what was finally delivered for its input.

        A record the broker refuses is replaced by its dead letter (and a refused dead
        letter by one without the original). Anything else is the infrastructure's:
        the record is sent again until the outage deadline.
        """
        refusals = 0
        attempt = 0
        while True:
            try:
                await delivery
                return outcome
            except RecordsResent as resent:  # its batch was refused: it went again on its own
                delivery = resent.of(outcome.record)
                continue
            except KafkaError as exc:
                if is_record_fault(exc) and refusals < 2:
                    refusals += 1
                    log.warning("%s:%d@%d: %s", outcome.source.topic, outcome.source.partition,
                                outcome.source.offset, exc)
                    outcome = self._outcomes.refused(outcome, exc)
                elif is_access_denied(exc):
                    raise KafkaAccessDenied(exc) from exc
                elif is_record_fault(exc):
                    raise WorkerExit(
                        f"the dead-letter topic {outcome.record.topic!r} refuses even a dead letter "
                        f"without its original: {exc}"
                    ) from exc
                else:
                    self._outage.failed(exc)
                    if self._outage.expired():
                        raise BrokerUnavailable(self._outage.seconds(), exc) from exc
                    self.stats.produce_retries += 1
                    await asyncio.sleep(backoff_s(attempt))
                    attempt += 1
            assert self._sink is not None
            delivery = await self._sink.send(outcome.record)

    # -- what /metrics and the probes read (pipeline.metrics) ---------------------------

    def lane_metrics(self) -> dict[str, LaneMetrics]:
        return self._lane_metrics

    def lane_cap(self, topic: str) -> int:
        return self._lanes[topic].batcher.max_batch_size

    def in_flight(self) -> int:
        return self.checkpoint.pending()

    def lags(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: its end offset less where this worker has read up to."""
        if not self._running:
            return {}
        lags = {}
        for tp in self._source.assignment():
            end = self._source.highwater(tp)
            read = self._positions.get((tp.topic, tp.partition))
            if end is not None and read is not None:
                lags[tp.topic, tp.partition] = max(0, end - read)
        return lags

    def lag_known(self) -> bool:
        """Whether every assigned partition's end offset is known (not before its first
        fetch came back): until then ``lags`` leaves it out, and would read as no lag."""
        return self._running and all(self._source.highwater(tp) is not None for tp in self._source.assignment())

    def ready(self) -> bool:
        """Models loaded (the worker runs) and partitions assigned."""
        return self._running and bool(self._source.assignment())

    # -- rebalancing ----------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("worker %s: partitions revoked: %s", self.settings.worker_id, _names(revoked))
        try:
            await self._finish_in_flight()
            if self._exactly_once is None:
                await self.checkpoint.commit()
            else:
                await self._exactly_once.on_revoked(revoked)
        except Exception as exc:  # aiokafka would swallow it: stop the worker with it instead
            self.checkpoint.fatal = self.checkpoint.fatal or _as_worker_exit(exc)
        finally:
            self._inflight.drop()
            self.checkpoint.forget(revoked)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("worker %s: partitions assigned: %s", self.settings.worker_id, _names(assigned))
        self.stats.partitions_seen.update(_names(assigned))
        if self._exactly_once is None:
            return
        try:
            await self._exactly_once.on_assigned(assigned)
        except Exception as exc:  # aiokafka would swallow it: stop the worker with it instead
            self.checkpoint.fatal = self.checkpoint.fatal or _as_worker_exit(exc)


_CLOSE_TIMEOUT_S = 30.0


async def _close(closing: Awaitable[None], what: str) -> None:
    """Close a client on the way out, within a bound, whatever state the cluster is in.

    aiokafka's ``stop()`` can raise (a fetch it cancels surfaces as CancelledError) or wait
    on a broker that is gone; neither may hide why the worker is stopping.
    """
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await closing
    except (Exception, asyncio.CancelledError) as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker itself is being cancelled: not ours to swallow
        log.warning("closing %s: %s", what, describe(exc))




def _item_bytes(item: WorkItem) -> int:
    """What an item weighs against ``max_batch_bytes``: its payload, and a frame what it holds
    decoded (width x height x channels), not its JPEG. Counted by their JPEGs, fixed windows
    of the bench's paced 320x240 frames held 764-921 on average at 1x and 2x of a worker's
    capacity, and a worker reached 21.5 GB and was killed for memory (the suite's run of
    d676ff2); counted decoded, 32 MiB holds 145 of them, 36 of 640x480."""
    event = item.event
    if type(event) is Frame:
        return max(len(item.record.value or b""), event.width * event.height * event.channels)
    return len(item.record.value or b"")


def _as_worker_exit(exc: BaseException) -> WorkerExit:
    if isinstance(exc, WorkerExit):
        return exc
    return WorkerExit(f"rebalance callback failed: {describe(exc)}")


def _warm_up_sizes(lane: _Lane, settings: WorkerSettings) -> list[int]:
    """The sizes a lane's first batches take, and those its sizer may rule out by their
    warm-up timings (``BatchSizer.warmed``): up to four times the sizer's start."""
    sizes = lane.sizer.sizes if lane.sizer is not None else candidate_sizes(settings.max_batch_size)
    return [s for s in sizes if s <= 4 * START_SIZE]


def _first(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    """The exception that ended a task group: a WorkerExit if there is one, else the first."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, WorkerExit)), leaves[0])


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)
