"""One worker: consume -> decode -> batch -> infer -> produce -> commit.

Three tasks share the work. The consume loop polls the source, decodes each record and
fills the batcher; a record that does not decode travels through the batcher too, as
its dead letter to be, so every batch covers a contiguous run of each partition's
offsets. The infer loop runs closed batches through the model and sends one outcome per
record (``pipeline.outcomes``). The delivery loop awaits the broker's acks in batch
order, replaces a record the broker refused with its dead letter, retries through an
outage, and hands delivered offsets to the ``Checkpoint``, the one owner of commits.
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
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from consumers.source import InputRecord, Source
from pipeline.batcher import Batch, Batcher
from pipeline.checkpoint import Checkpoint, is_access_denied
from pipeline.config import WorkerSettings
from pipeline.exceptions import BrokerUnavailable, KafkaAccessDenied, WorkerExit
from pipeline.outage import Outage, describe
from pipeline.outcomes import Outcome, Outcomes
from pipeline.runner import Runner
from producers.sinks import Delivery, Sink, is_record_fault
from producers.transactional import PartitionTransactions, TransactionFailed, TransactionFenced
from schemas.errors import DecodeError
from schemas.models import Frame, Transaction

log = logging.getLogger("streaminfer.worker")

_POLL_MS = 100
_RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0)
_POLL_GRACE_S = 5.0
_ASK_TIMEOUT_S = 10.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WorkItem:
    record: InputRecord
    event: Frame | Transaction | DecodeError
    received_ms: int
    generation: int


@dataclass(frozen=True, slots=True)
class Sent:
    """A batch's outcomes on their way: one delivery future per outcome."""

    items: tuple[WorkItem, ...]
    # exactly-once: no delivery yet (None), the outcomes go out in a transaction
    outcomes: tuple[tuple[Outcome, Delivery | None], ...]


@dataclass
class WorkerStats:
    results: int = 0
    dead_letters: int = 0
    batches: int = 0
    dropped_after_revoke: int = 0
    produce_retries: int = 0
    partitions_seen: set[str] = field(default_factory=set)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: Outcome) -> None:
        if outcome.is_result:
            self.results += 1
        else:
            self.dead_letters += 1
            self.dead_letter_reasons[str(outcome.reason)] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "results": self.results,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "dropped_after_revoke": self.dropped_after_revoke,
            "produce_retries": self.produce_retries,
            "partitions_seen": sorted(self.partitions_seen),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
        }


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
        self._transactions = transactions
        self._clock = clock
        self._batcher: Batcher[WorkItem] = Batcher(
            settings.max_batch_size, settings.max_batch_bytes, settings.max_wait_ms
        )
        self._outcomes = Outcomes(
            results_topic=settings.results_topic,
            dead_letter_topic=settings.dead_letter_topic,
            worker_id=settings.worker_id,
            content_type=settings.result_content_type,
            limits=settings.limits,
        )
        self._outage = Outage(settings.broker_outage_deadline_s, clock=clock)
        self.checkpoint = Checkpoint(source, self._outage, settings.commit_interval_ms / 1000, clock)
        self._queue: asyncio.Queue[tuple[Batch[WorkItem], int]] = asyncio.Queue(settings.queued_batches)
        # batches whose outcomes are sent, waiting for their acks; the model meanwhile runs
        # the next batch, so broker round trips overlap inference
        self._deliveries: asyncio.Queue[Sent] = asyncio.Queue(settings.queued_batches)
        self._generation = 0
        # exactly-once positions: the lowest offset read per partition (where a replay starts
        # when nothing is committed yet) and the next offset of this worker's last commit
        self._first_offsets: dict[TopicPartition, int] = {}
        self._txn_next: dict[TopicPartition, int] = {}
        self._txn_failures = 0
        # cleared while exactly-once positions are being (re)set: nothing is read meanwhile
        self._reading = asyncio.Event()
        self._reading.set()
        # set when the infer or delivery loop died: nothing waits for them to drain any more
        self._loops_dead = asyncio.Event()
        self.stats = WorkerStats()

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until ``stop`` is set; then finish in-flight work, commit and leave the group."""
        self.runner.start()
        try:
            if self._sink is not None:
                await self._sink.start()
            try:
                await self._source.start(self._on_revoked, self._on_assigned)
                try:
                    await self.checkpoint.begin()
                    await self._run_loops(stop)
                    if self._transactions is None:
                        await self.checkpoint.commit()
                finally:
                    await self._source.stop()
            finally:
                if self._sink is not None:
                    await self._sink.stop()
                if self._transactions is not None:
                    await self._transactions.close()
        finally:
            self.runner.stop()
        log.info("worker %s stopped: %s", self.settings.worker_id, self.stats.as_dict())
        return self.stats

    async def _run_loops(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                infer = tasks.create_task(self._infer_loop(), name="infer")
                deliver = tasks.create_task(self._delivery_loop(), name="deliver")
                for task in (infer, deliver):
                    task.add_done_callback(self._on_loop_done)
                await self._consume_loop(stop)
                await self._finish_in_flight()
                infer.cancel()
                deliver.cancel()
        except BaseExceptionGroup as group:
            # one clear reason to stop, not a group of tracebacks
            raise _first(group) from None

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._loops_dead.set()

    # -- consume side -------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        # one window per poll: records wait in Kafka, not in this process, when the model is behind
        max_records = self.settings.max_batch_size
        while not stop.is_set():
            self._raise_if_fatal()
            timeout = poll_timeout_ms(self._batcher.deadline(), self._clock())
            await self._reading.wait()
            records = await self._poll(timeout, max_records)
            for record in records:  # before any record is dropped: a replay may start here
                first = self._first_offsets.get(record.tp)
                if first is None or record.offset < first:
                    self._first_offsets[record.tp] = record.offset
            if not self._reading.is_set():
                continue  # positions are being reset (exactly-once): these are read again
            # after the poll, not before: a rebalance during the poll has already moved
            # positions, and what the poll returns is read from the new ones
            generation = self._generation
            for record in records:
                if generation != self._generation:
                    break  # a rebalance or a replay ran meanwhile: the rest is read again
                if self._transactions is None:  # exactly-once commits offsets in transactions
                    self.checkpoint.track(record.tp, record.offset)
                item = WorkItem(record, self._outcomes.decode(record), wall_ms(), generation)
                for closed in self._batcher.add(item, len(record.value or b""), self._clock()):
                    await self._enqueue(closed)
            if (expired := self._batcher.poll(self._clock())) is not None:
                await self._enqueue(expired)

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
            await asyncio.sleep(_RETRY_BACKOFF_S[0])
            return []
        return records

    def _raise_if_fatal(self) -> None:
        if self.checkpoint.fatal is not None:
            raise self.checkpoint.fatal
        if self._outage.expired():
            raise BrokerUnavailable(self._outage.seconds(), self._outage.last_error)

    async def _enqueue(self, batch: Batch[WorkItem]) -> None:
        await self._queue.put((batch, wall_ms()))

    async def _finish_in_flight(self) -> None:
        """Close the open window and wait until everything consumed so far is delivered.

        Returns at once if the infer or delivery loop has died (the worker is stopping with
        its error): a rebalance callback waiting here would otherwise hold up the exit.
        """
        if (batch := self._batcher.flush(self._clock())) is not None:
            await self._unless_loops_dead(self._enqueue(batch))
        await self._unless_loops_dead(self._queue.join())
        await self._unless_loops_dead(self._deliveries.join())

    async def _unless_loops_dead(self, waiting: Awaitable[None]) -> None:
        task = asyncio.ensure_future(waiting)
        dead = asyncio.ensure_future(self._loops_dead.wait())
        await asyncio.wait({task, dead}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, dead):
            pending.cancel()

    # -- infer side ---------------------------------------------------------------

    async def _infer_loop(self) -> None:
        while True:
            batch, closed_ms = await self._queue.get()
            try:
                await self._process(batch, closed_ms)
            finally:
                self._queue.task_done()

    async def _process(self, batch: Batch[WorkItem], closed_ms: int) -> None:
        live = tuple(it for it in batch.items if it.generation == self._generation)
        self.stats.dropped_after_revoke += len(batch.items) - len(live)
        if not live:
            return
        decoded = [it for it in live if not isinstance(it.event, DecodeError)]
        inferences = iter(await self.runner.run([it.event for it in decoded]) if decoded else ())  # type: ignore[misc]
        outcomes: list[Outcome] = []
        for item in live:
            if isinstance(item.event, DecodeError):
                outcomes.append(self._outcomes.dead_letter(item.record, item.event.reason, item.event.message))
            else:
                outcomes.append(self._outcomes.result(
                    item.record, item.event, next(inferences),
                    received_ms=item.received_ms, closed_ms=closed_ms, produced_ms=wall_ms(),
                    batch_size=len(decoded),
                ))
        if self._sink is None:  # exactly-once: the delivery loop sends them in transactions
            await self._deliveries.put(Sent(live, tuple((o, None) for o in outcomes)))
            return
        sent = [(outcome, await self._sink.send(outcome.record)) for outcome in outcomes]
        await self._deliveries.put(Sent(live, tuple(sent)))

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
                if self._transactions is None:
                    await self._deliver_at_least_once(sent)
                else:
                    await self._deliver_exactly_once(sent, self._transactions)
            finally:
                self._deliveries.task_done()

    async def _deliver_at_least_once(self, sent: Sent) -> None:
        for outcome, delivery in sent.outcomes:
            assert delivery is not None
            self.stats.count(await self._delivered(outcome, delivery))
        self.stats.batches += 1
        if all(it.generation == self._generation for it in sent.items):
            for item in sent.items:
                self.checkpoint.done(item.record.tp, item.record.offset)
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
                self._outage.ok()
                return outcome
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
                    await asyncio.sleep(_RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)])
                    attempt += 1
            assert self._sink is not None
            delivery = await self._sink.send(outcome.record)

    # -- exactly-once ----------------------------------------------------------------

    async def _deliver_exactly_once(self, sent: Sent, transactions: PartitionTransactions) -> None:
        """One transaction per input partition of the batch: its outcomes and its next offset.

        A batch holds a contiguous run of each partition's offsets, and batches are
        delivered in order, so each transaction's offset covers exactly its records. A
        transaction that fails is aborted; then everything in flight is dropped and every
        partition is read again from where its next transaction starts, so nothing is lost
        or doubled.
        """
        if any(it.generation != self._generation for it in sent.items):
            self.stats.dropped_after_revoke += len(sent.items)
            return
        if not await self.checkpoint.same_cluster():
            self._raise_if_fatal()
        by_partition: dict[TopicPartition, list[Outcome]] = {}
        for outcome, _ in sent.outcomes:
            by_partition.setdefault(outcome.source.tp, []).append(self._outcomes.fit(outcome))
        done = await asyncio.gather(
            *(self._transact(transactions, tp, outcomes) for tp, outcomes in by_partition.items()),
            return_exceptions=True,
        )
        failed: dict[TopicPartition, BaseException] = {}
        for tp, result in zip(by_partition, done, strict=True):
            if isinstance(result, BaseException):
                failed[tp] = result
                continue
            self._txn_next[tp] = result[-1].source.offset + 1
            for outcome in result:
                self.stats.count(outcome)
        self.stats.batches += 1
        if failed:
            await self._replay(transactions, failed)
        else:
            self._txn_failures = 0
            self._outage.ok()

    async def _transact(
        self, transactions: PartitionTransactions, tp: TopicPartition, outcomes: list[Outcome], refusals: int = 0,
    ) -> list[Outcome]:
        """Commit ``outcomes`` and ``tp``'s next offset in one transaction; return what was committed.

        A record the broker refuses aborts its transaction without saying which record it
        was: the outcomes are then committed one transaction each, so only the refused one
        is replaced by its dead letter.
        """
        try:
            await transactions.commit(tp, [o.record for o in outcomes], outcomes[-1].source.offset + 1)
        except TransactionFailed as exc:
            if not (exc.aborted and exc.cause is not None and is_record_fault(exc.cause)):
                raise
            if len(outcomes) > 1:
                return [o for one in outcomes for o in await self._transact(transactions, tp, [one])]
            if refusals >= 2:
                raise WorkerExit(
                    f"the dead-letter topic refuses even a dead letter without its original: {exc}"
                ) from exc
            return await self._transact(
                transactions, tp, [self._outcomes.refused(outcomes[0], exc.cause)], refusals + 1
            )
        return outcomes

    async def _replay(self, transactions: PartitionTransactions, failed: dict[TopicPartition, BaseException]) -> None:
        """After failed transactions: drop what is in flight and read every partition again
        from where its next transaction starts. Repeated failures back off and count as an
        outage, so a fault that never clears ends the worker at the outage deadline."""
        for tp, exc in failed.items():
            if not isinstance(exc, TransactionFailed | TransactionFenced):
                raise exc
            if is_access_denied(exc):
                raise KafkaAccessDenied(exc)
            what = "another member took it over (fenced)" if isinstance(exc, TransactionFenced) else "aborted"
            log.warning("transaction for %s:%d %s: %s; reading again from the last commit",
                        tp.topic, tp.partition, what, describe(getattr(exc, "cause", None) or exc))
            self._outage.failed(exc)
        self._reading.clear()
        self._generation += 1
        self.checkpoint.forget_all()
        self._txn_failures += 1
        try:
            if self._outage.expired():
                raise BrokerUnavailable(self._outage.seconds(), self._outage.last_error)
            await asyncio.sleep(_RETRY_BACKOFF_S[min(self._txn_failures - 1, len(_RETRY_BACKOFF_S) - 1)])
            for tp, exc in failed.items():
                if isinstance(exc, TransactionFailed):
                    await self._through_outage(functools.partial(self._recover, transactions, tp))
            await self._through_outage(self._reposition)
        finally:
            self._reading.set()

    @staticmethod
    async def _recover(transactions: PartitionTransactions, tp: TopicPartition) -> None:
        """A live producer for ``tp`` whose previous transaction is settled (the committed
        offset is final after this); a fenced partition is someone else's now."""
        try:
            await transactions.recover(tp)
        except TransactionFenced:
            pass

    async def _reposition(self) -> None:
        """Seek every assigned partition to where its next transaction starts.

        That is the later of the group's committed offset and this worker's own last
        commit (the broker does not show a commit whose markers are still being written),
        else the lowest offset read. Every offset is asked first and all seeks happen at
        once, so no poll sees a half-repositioned assignment.
        """
        tps = self._source.assignment()
        try:
            committed = await asyncio.wait_for(self._source.committed_offsets(tps), _ASK_TIMEOUT_S)
        except TimeoutError as exc:
            raise KafkaTimeoutError(f"no committed offsets within {_ASK_TIMEOUT_S:.0f}s") from exc
        targets: dict[TopicPartition, int] = {}
        for tp in tps:
            known = [o for o in (committed.get(tp), self._txn_next.get(tp)) if o is not None]
            target = max(known) if known else self._first_offsets.get(tp)
            if target is not None:
                targets[tp] = target
        self._source.seek(targets)

    async def _through_outage(self, call: Callable[[], Awaitable[None]]) -> None:
        """Retry ``call`` while Kafka is unreachable, up to the outage deadline."""
        attempt = 0
        while True:
            try:
                await call()
                return
            except (KafkaError, TransactionFailed) as exc:
                if is_access_denied(exc):
                    raise KafkaAccessDenied(exc) from exc
                self._outage.failed(exc)
                if self._outage.expired():
                    raise BrokerUnavailable(self._outage.seconds(), exc) from exc
                await asyncio.sleep(_RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)])
                attempt += 1

    # -- rebalancing ----------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("worker %s: partitions revoked: %s", self.settings.worker_id, _names(revoked))
        try:
            await self._finish_in_flight()
            if self._transactions is None:
                await self.checkpoint.commit()
            else:
                # nothing is read until the next assignment is fenced and positioned
                self._reading.clear()
                await self._transactions.revoke(revoked)
        except Exception as exc:  # aiokafka would swallow it: stop the worker with it instead
            self.checkpoint.fatal = self.checkpoint.fatal or _as_worker_exit(exc)
        finally:
            self._generation += 1
            self.checkpoint.forget(revoked)
            for tp in revoked:
                self._first_offsets.pop(tp, None)
                self._txn_next.pop(tp, None)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("worker %s: partitions assigned: %s", self.settings.worker_id, _names(assigned))
        self.stats.partitions_seen.update(_names(assigned))
        if self._transactions is None:
            return
        try:
            await self._fence_previous_owners(self._transactions, assigned)
            # the previous owners' transactions are settled now: committed offsets are final.
            # aiokafka may already have fetched positions (and records) from before that.
            await self._through_outage(self._reposition)
            self._generation += 1
        except Exception as exc:  # aiokafka would swallow it: stop the worker with it instead
            self.checkpoint.fatal = self.checkpoint.fatal or _as_worker_exit(exc)
        finally:
            self._reading.set()

    async def _fence_previous_owners(self, transactions: PartitionTransactions, tps: set[TopicPartition]) -> None:
        """A transactional producer per partition: its start fences the previous owner and
        settles (aborts or completes) that owner's open transaction."""
        try:
            await transactions.assign(tps)
        except TransactionFailed:
            for tp in tps:
                await self._through_outage(functools.partial(self._recover, transactions, tp))


def _as_worker_exit(exc: BaseException) -> WorkerExit:
    if isinstance(exc, WorkerExit):
        return exc
    return WorkerExit(f"rebalance callback failed: {describe(exc)}")


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
