"""Exactly-once delivery: one Kafka transaction per batch and input partition.

Each transaction holds the partition's results, its dead letters and its next input
offset. A batch holds a contiguous run of each partition's offsets and batches are
delivered in order, so each transaction's offset covers exactly its records.

Positions are the crux. A partition is read only from where its next transaction
starts: the later of the group's committed offset and this worker's own last commit
(the broker does not show a commit whose markers are still being written), else the
lowest offset read. They are set after the previous owners are fenced (on assignment)
and after a failed transaction (replay), with reading stopped meanwhile and every seek
done at once, so no poll sees a half-repositioned assignment.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumers.source import InputRecord, Source, record_tp
from pipeline.checkpoint import Checkpoint, ask, backoff_s, is_access_denied, through_outage
from pipeline.exceptions import BrokerUnavailable, KafkaAccessDenied, WorkerExit
from pipeline.inflight import InFlight, Sent, WorkerStats
from pipeline.outage import Outage, describe
from pipeline.outcomes import Outcome, Outcomes
from producers.sinks import is_record_fault
from producers.transactional import PartitionTransactions, TransactionFailed, TransactionFenced

log = logging.getLogger("streaminfer.worker")

class ExactlyOnce:
    def __init__(
        self,
        transactions: PartitionTransactions,
        *,
        source: Source,
        outcomes: Outcomes,
        checkpoint: Checkpoint,
        outage: Outage,
        inflight: InFlight,
        stats: WorkerStats,
    ) -> None:
        self.transactions = transactions
        self._source = source
        self._outcomes = outcomes
        self._checkpoint = checkpoint
        self._outage = outage
        self._inflight = inflight
        self._stats = stats
        self._first_offsets: dict[TopicPartition, int] = {}
        self._txn_next: dict[TopicPartition, int] = {}
        self._failures = 0  # transactions failed in a row

    async def close(self) -> None:
        await self.transactions.close()

    def note_polled(self, records: Iterable[InputRecord]) -> None:
        """Remember the lowest offset read per partition, before any record is dropped."""
        for record in records:
            first = self._first_offsets.get(tp := record_tp(record))
            if first is None or record.offset < first:
                self._first_offsets[tp] = record.offset

    # -- delivery --------------------------------------------------------------------

    async def deliver(self, sent: Sent) -> None:
        """Commit the batch, one transaction per input partition; replay what failed."""
        if not all(self._inflight.current(it) for it in sent.items):
            self._stats.dropped_after_revoke += len(sent.items)
            return
        if not await self._checkpoint.same_cluster() and self._checkpoint.fatal is not None:
            raise self._checkpoint.fatal
        by_partition: dict[TopicPartition, list[Outcome]] = {}
        for outcome in sent.outcomes:
            by_partition.setdefault(record_tp(outcome.source), []).append(self._outcomes.fit(outcome))
        done = await asyncio.gather(
            *(self._transact(tp, outcomes) for tp, outcomes in by_partition.items()), return_exceptions=True,
        )
        failed: dict[TopicPartition, BaseException] = {}
        for tp, result in zip(by_partition, done, strict=True):
            if isinstance(result, BaseException):
                failed[tp] = result
                continue
            self._txn_next[tp] = result[-1].source.offset + 1
            for outcome in result:
                self._stats.count(outcome)
        self._stats.batches += 1
        if failed:
            await self._replay(failed)
        else:
            self._failures = 0
            self._outage.ok()

    async def _transact(self, tp: TopicPartition, outcomes: list[Outcome], refusals: int = 0) -> list[Outcome]:
        """Commit ``outcomes`` and ``tp``'s next offset in one transaction; return what was committed.

        A record the broker refuses aborts its transaction without saying which record it
        was: the outcomes are then committed one transaction each, so only the refused one
        is replaced by its dead letter.
        """
        try:
            await self.transactions.commit(tp, [o.record for o in outcomes], outcomes[-1].source.offset + 1)
        except TransactionFailed as exc:
            if not (exc.aborted and exc.cause is not None and is_record_fault(exc.cause)):
                raise
            if len(outcomes) > 1:
                return [o for one in outcomes for o in await self._transact(tp, [one])]
            if refusals >= 2:
                raise WorkerExit(
                    f"the dead-letter topic refuses even a dead letter without its original: {exc}"
                ) from exc
            return await self._transact(tp, [self._outcomes.refused(outcomes[0], exc.cause)], refusals + 1)
        return outcomes

    async def _replay(self, failed: dict[TopicPartition, BaseException]) -> None:
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
        self._inflight.reading.clear()
        self._inflight.drop()
        self._failures += 1
        try:
            if self._outage.expired():
                raise BrokerUnavailable(self._outage.seconds(), self._outage.last_error)
            await asyncio.sleep(backoff_s(self._failures - 1))
            for tp, exc in failed.items():
                if isinstance(exc, TransactionFailed):
                    await self._through_outage(functools.partial(self._recover, tp))
            await self._through_outage(self._reposition)
        finally:
            self._inflight.reading.set()

    async def _recover(self, tp: TopicPartition) -> None:
        """A live producer for ``tp`` whose previous transaction is settled (the committed
        offset is final after this); a fenced partition is someone else's now."""
        try:
            await self.transactions.recover(tp)
        except TransactionFenced:
            pass

    async def _reposition(self) -> None:
        """Seek every assigned partition to where its next transaction starts (see the module)."""
        tps = self._source.assignment()
        committed = await ask(self._source.committed_offsets(tps), "committed offsets")
        targets: dict[TopicPartition, int] = {}
        for tp in tps:
            known = [o for o in (committed.get(tp), self._txn_next.get(tp)) if o is not None]
            target = max(known) if known else self._first_offsets.get(tp)
            if target is not None:
                targets[tp] = target
        self._source.seek(targets)

    async def _through_outage(self, call: Callable[[], Awaitable[None]]) -> None:
        await through_outage(self._outage, call, retry_on=(KafkaError, TransactionFailed))

    # -- rebalancing (called after the worker finished its in-flight work) --------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # nothing is read until the next assignment is fenced and positioned
        self._inflight.reading.clear()
        try:
            await self.transactions.revoke(revoked)
        finally:
            for tp in revoked:
                self._first_offsets.pop(tp, None)
                self._txn_next.pop(tp, None)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._fence_previous_owners(assigned)
            # the previous owners' transactions are settled now: committed offsets are final.
            # aiokafka may already have fetched positions (and records) from before that.
            await self._through_outage(self._reposition)
            self._inflight.drop()
        finally:
            self._inflight.reading.set()

    async def _fence_previous_owners(self, tps: set[TopicPartition]) -> None:
        """A transactional producer per partition: its start fences the previous owner and
        settles (aborts or completes) that owner's open transaction."""
        try:
            await self.transactions.assign(tps)
        except TransactionFailed:
            for tp in tps:
                await self._through_outage(functools.partial(self._recover, tp))
