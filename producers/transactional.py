"""Exactly-once building block: one Kafka transaction per (input partition, batch).

aiokafka's ``send_offsets_to_transaction(offsets, group_id)`` speaks TxnOffsetCommit v0: the
group coordinator gets the group id only, no generation or member id, so it cannot fence a
consumer that lost its partitions (no KIP-447). The sound scheme is the classic one, used here:

* one transactional producer per assigned INPUT partition, its ``transactional_id`` derived
  from the consumer group, the input topic and the partition (:func:`transactional_id`);
* the producer is created and started (InitProducerId) on assign; that bumps the id's epoch,
  which fences a zombie previous owner and aborts any transaction it left open;
* it is stopped on revoke.

Invariants of :class:`PartitionTransactions`:

* Every record passed to one :meth:`PartitionTransactions.commit` call, and the input offset
  commit ``{tp: next_offset}``, are in ONE transaction: a ``read_committed`` reader sees all of
  them or none, and the group's committed offset moves iff the records become visible.
* Transactions of one input partition never overlap (a per-partition lock), and a transaction
  never outlives the ``commit`` call that began it: between calls a partition's producer is
  either READY (no open transaction) or absent (to be re-created before the next transaction).
* Every await on the broker is bounded (``commit_timeout_s``, ``control_timeout_s``): a broker
  lost mid-transaction ends the call with :class:`TransactionFailed`, never a hang. A producer
  whose transaction outcome is unknown is never reused (aiokafka can stay stuck after a broker
  loss, aio-libs/aiokafka#1145): it is retired and replaced by a fresh one with the same
  transactional id, whose InitProducerId completes (commits or aborts) whatever it left open.
* ``commit_timeout_s`` is below ``transaction_timeout_ms``, so the broker never times out one of
  our own transactions (its epoch bump would look exactly like a fence).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import TopicPartition

from producers.sinks import OutRecord

log = logging.getLogger(__name__)

MAX_TRANSACTIONAL_ID_CHARS = 200
_DIGEST_CHARS = 32

# Producer settings this module owns; a caller's client kwargs may not override them.
_RESERVED = frozenset({
    "client_id", "transactional_id", "enable_idempotence", "acks", "transaction_timeout_ms",
    "max_request_size", "key_serializer", "value_serializer",
})
# Errors after which the producer cannot even abort (aiokafka moves it to FATAL_ERROR).
_UNRECOVERABLE: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber, TransactionalIdAuthorizationFailed, InvalidTxnState,
    InvalidProducerIdMapping, TimeoutError,
)
_FENCED: tuple[type[BaseException], ...] = (ProducerFenced, InvalidProducerEpoch)


class TransactionError(Exception):
    """Base of this module's errors; ``tp`` is the INPUT partition whose transaction failed."""

    def __init__(self, tp: TopicPartition, message: str) -> None:
        super().__init__(f"{tp.topic}[{tp.partition}]: {message}")
        self.tp = tp


class TransactionFenced(TransactionError):
    """Another owner initialised this partition's transactional id.

    Nothing of the failed transaction becomes visible. Drop all work for ``tp``, do not retry:
    the partition now belongs to someone else (expect a revoke).
    """

    def __init__(self, tp: TopicPartition, cause: BaseException | None = None) -> None:
        super().__init__(tp, f"fenced by a newer owner ({cause!r})" if cause else "fenced by a newer owner")
        self.cause = cause


class TransactionFailed(TransactionError):
    """The transaction did not commit, or its outcome is unknown.

    ``aborted`` is True when the abort was confirmed. When False (timeout, broker lost) the
    transaction's outcome is settled only once the partition's producer is re-initialised:
    call :meth:`PartitionTransactions.recover` (the next ``commit`` also does it), THEN read the
    group's committed offset for ``tp`` and replay the work from there: if the lost transaction
    did commit, the committed offset already includes it, so nothing is produced twice.
    """

    def __init__(self, tp: TopicPartition, cause: BaseException, *, aborted: bool = False) -> None:
        state = "aborted" if aborted else "outcome unknown, producer replaced"
        super().__init__(tp, f"transaction failed ({state}): {cause!r}")
        self.cause = cause
        self.aborted = aborted


class TransactionalProducer(Protocol):
    """The slice of :class:`aiokafka.AIOKafkaProducer` this module uses."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def begin_transaction(self) -> None: ...
    async def send(
        self, topic: str, value: Any = None, key: Any = None, partition: int | None = None,
        timestamp_ms: int | None = None, headers: Any = None,
    ) -> asyncio.Future[Any]: ...
    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None: ...
    async def commit_transaction(self) -> None: ...
    async def abort_transaction(self) -> None: ...


ProducerFactory = Callable[..., TransactionalProducer]


def transactional_id(group_id: str, tp: TopicPartition, prefix: str = "streaminfer") -> str:
    """``prefix:group:topic:partition``, hashed down to MAX_TRANSACTIONAL_ID_CHARS when longer.

    Deterministic (every owner of ``tp`` in ``group_id`` derives the same id, which is what
    fences zombies) and injective for a fixed prefix: topic names cannot contain ``:`` and the
    partition is an integer, so the last two fields parse back unambiguously. A long id keeps a
    readable head and ends with ``~`` and 128 bits of SHA-256 of the full id.
    """
    if not group_id:
        raise ValueError("group_id must be non-empty")
    if not prefix:
        raise ValueError("prefix must be non-empty")
    if tp.partition < 0:
        raise ValueError(f"invalid partition {tp.partition}")
    full = f"{prefix}:{group_id}:{tp.topic}:{tp.partition}"
    if len(full) <= MAX_TRANSACTIONAL_ID_CHARS:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{full[: MAX_TRANSACTIONAL_ID_CHARS - _DIGEST_CHARS - 1]}~{digest}"


def _is_fenced(exc: BaseException) -> bool:
    return isinstance(exc, _FENCED)


@dataclass(eq=False)
class _Slot:
    """One assigned input partition. ``producer`` is None when it must be (re)created."""

    tp: TopicPartition
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    producer: TransactionalProducer | None = None
    fenced: bool = False


class PartitionTransactions:
    """Transactional producers, one per assigned input partition.

    Call :meth:`assign` from the consumer's ``on_partitions_assigned`` (before positions are
    fetched, so a zombie is fenced first) and :meth:`revoke` from ``on_partitions_revoked``.
    """

    def __init__(
        self,
        client_kwargs: Mapping[str, object],
        group_id: str,
        *,
        client_id: str = "streaminfer-txn",
        prefix: str = "streaminfer",
        transaction_timeout_ms: int = 60_000,
        commit_timeout_s: float = 30.0,
        control_timeout_s: float = 10.0,
        max_request_size: int = 1_048_576,
        producer_factory: ProducerFactory = AIOKafkaProducer,
    ) -> None:
        if clash := _RESERVED & set(client_kwargs):
            raise ValueError(f"client_kwargs may not set {sorted(clash)}: PartitionTransactions owns them")
        if not group_id:
            raise ValueError("group_id must be non-empty")
        if commit_timeout_s <= 0 or control_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if commit_timeout_s * 1000 >= transaction_timeout_ms:
            raise ValueError(
                "commit_timeout_s must be below transaction_timeout_ms: otherwise the broker may time out "
                "a transaction we still run, and its epoch bump is indistinguishable from a fence"
            )
        self._client_kwargs = dict(client_kwargs)
        self.group_id = group_id
        self._client_id = client_id
        self._prefix = prefix
        self._transaction_timeout_ms = transaction_timeout_ms
        self._commit_timeout_s = commit_timeout_s
        self._control_timeout_s = control_timeout_s
        self._max_request_size = max_request_size
        self._factory = producer_factory
        self._slots: dict[TopicPartition, _Slot] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    # -- assignment -------------------------------------------------------------------------

    def assigned(self) -> set[TopicPartition]:
        """Input partitions assigned and not fenced (their producer may be pending re-creation)."""
        return {tp for tp, slot in self._slots.items() if not slot.fenced}

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Create and start (InitProducerId: fences the previous owner) a producer per new tp.

        Already assigned partitions are left alone; a fenced one gets a fresh producer. Starts run
        concurrently. If some start fails the partition stays assigned without a producer (the
        next commit retries) and the first failure is raised as :class:`TransactionFailed`
        after all starts ended: the caller then knows the old owner may not be fenced yet.
        """
        todo: list[_Slot] = []
        for tp in dict.fromkeys(tps):
            slot = self._slots.get(tp)
            if slot is None:
                slot = self._slots[tp] = _Slot(tp)
            elif not slot.fenced:
                continue
            slot.fenced = False
            todo.append(slot)
        results = await asyncio.gather(*(self._prepare(slot) for slot in todo), return_exceptions=True)
        _raise_first(results)

    async def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Stop and drop the producers of ``tps`` (unknown partitions are ignored).

        An in-flight commit of a revoked partition is awaited first (it is bounded), so no
        transaction is cut short: each ends committed or aborted, or its producer was already
        retired (the next owner's InitProducerId then aborts what it left open).
        """
        slots = [self._slots.pop(tp) for tp in dict.fromkeys(tps) if tp in self._slots]
        await asyncio.gather(*(self._release(slot) for slot in slots))

    async def recover(self, tp: TopicPartition) -> None:
        """Make sure ``tp`` has a live producer, re-creating it after an unknown outcome.

        When this returns, the previous transaction of ``tp`` is settled on the broker and the
        group's committed offset for ``tp`` is final: read it, then replay from there.
        """
        slot = self._slot(tp)
        async with slot.lock:
            if slot.fenced:
                raise TransactionFenced(tp)
            await self._ensure_producer(slot)

    async def close(self) -> None:
        """Revoke everything and wait (bounded) for retired producers to stop."""
        await self.revoke(list(self._slots))
        if not self._retiring:
            return
        _, pending = await asyncio.wait(set(self._retiring), timeout=self._control_timeout_s)
        for task in pending:
            log.warning("a transactional producer did not stop within %.1fs; abandoning it", self._control_timeout_s)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- the transaction ----------------------------------------------------------------------

    async def commit(self, tp: TopicPartition, records: Sequence[OutRecord], next_offset: int) -> None:
        """Produce ``records`` and commit ``{tp: next_offset}`` for the group in ONE transaction.

        begin; send every record (any topic and partition) and await every delivery;
        ``send_offsets_to_transaction({tp: next_offset}, group_id)``; commit. The whole call is
        bounded by ``commit_timeout_s`` (plus ``control_timeout_s`` for a needed re-init/abort).

        Raises :class:`TransactionFenced` (drop ``tp``'s work) or :class:`TransactionFailed`
        (replay ``tp`` from its committed offset, see there). On cancellation the producer is
        retired, as after an unknown outcome.
        """
        if next_offset < 0:
            raise ValueError(f"next_offset must be >= 0, got {next_offset}")
        slot = self._slot(tp)
        async with slot.lock:
            if slot.fenced:
                raise TransactionFenced(tp)
            producer = await self._ensure_producer(slot)
            try:
                async with asyncio.timeout(self._commit_timeout_s):
                    await self._transact(producer, tp, records, next_offset)
            except asyncio.CancelledError:
                self._discard(slot)
                raise
            except Exception as exc:
                await self._fail(slot, producer, exc)

    async def _transact(
        self, producer: TransactionalProducer, tp: TopicPartition, records: Sequence[OutRecord], next_offset: int,
    ) -> None:
        await producer.begin_transaction()
        await _send_all(producer, records)
        await producer.send_offsets_to_transaction({tp: next_offset}, self.group_id)
        await producer.commit_transaction()

    async def _fail(self, slot: _Slot, producer: TransactionalProducer, exc: Exception) -> None:
        """Turn a failed transaction into TransactionFenced/TransactionFailed; always raises.

        Abort when the producer can still abort; otherwise (timeout, fatal state, failed abort)
        retire it so the next transaction starts on a fresh one.
        """
        if _is_fenced(exc):
            self._fence(slot)
            raise TransactionFenced(slot.tp, exc) from exc
        aborted = False
        if not isinstance(exc, _UNRECOVERABLE):
            try:
                async with asyncio.timeout(self._control_timeout_s):
                    await producer.abort_transaction()
                aborted = True
            except asyncio.CancelledError:
                self._discard(slot)
                raise
            except Exception as abort_exc:  # includes aiokafka's AssertionError from a FATAL state
                if _is_fenced(abort_exc):
                    self._fence(slot)
                    raise TransactionFenced(slot.tp, abort_exc) from exc
                log.warning("abort of %s failed (%r): replacing its producer", slot.tp, abort_exc)
        if not aborted:
            self._discard(slot)
        raise TransactionFailed(slot.tp, exc, aborted=aborted) from exc

    # -- producers ------------------------------------------------------------------------------

    def _slot(self, tp: TopicPartition) -> _Slot:
        try:
            return self._slots[tp]
        except KeyError:
            raise ValueError(f"{tp} is not assigned to this PartitionTransactions") from None

    async def _prepare(self, slot: _Slot) -> None:
        async with slot.lock:
            await self._ensure_producer(slot)

    async def _ensure_producer(self, slot: _Slot) -> TransactionalProducer:
        """The slot's producer, started now if absent. Caller holds ``slot.lock``."""
        if slot.producer is None:
            slot.producer = await self._start_producer(slot.tp)
        return slot.producer

    async def _start_producer(self, tp: TopicPartition) -> TransactionalProducer:
        producer = self._factory(**self._producer_kwargs(tp))
        try:
            async with asyncio.timeout(self._control_timeout_s):
                await producer.start()
        except BaseException as exc:
            self._retire(producer)
            if isinstance(exc, Exception):
                raise TransactionFailed(tp, exc) from exc
            raise
        return producer

    def _producer_kwargs(self, tp: TopicPartition) -> dict[str, object]:
        return {
            **self._client_kwargs,
            "client_id": f"{self._client_id}-{tp.topic}-{tp.partition}",
            "transactional_id": transactional_id(self.group_id, tp, self._prefix),
            "enable_idempotence": True,
            "acks": "all",
            "transaction_timeout_ms": self._transaction_timeout_ms,
            "max_request_size": self._max_request_size,
        }

    def _fence(self, slot: _Slot) -> None:
        slot.fenced = True
        self._discard(slot)

    def _discard(self, slot: _Slot) -> None:
        """Forget the slot's producer without waiting; it stops in the background."""
        if slot.producer is not None:
            self._retire(slot.producer)
            slot.producer = None

    async def _release(self, slot: _Slot) -> None:
        async with slot.lock:
            producer, slot.producer = slot.producer, None
        if producer is not None:
            await asyncio.wait({self._retire(producer)}, timeout=self._control_timeout_s)

    def _retire(self, producer: TransactionalProducer) -> asyncio.Task[None]:
        """Stop ``producer`` in a tracked background task.

        ``stop()`` waits for undelivered batches, so it hangs while the broker is away; it ends
        once the broker is back and the replacement's InitProducerId fenced this producer.
        """
        _silence_transaction_waiter(producer)
        task = asyncio.get_running_loop().create_task(_stop_quietly(producer))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task


async def _send_all(producer: TransactionalProducer, records: Sequence[OutRecord]) -> None:
    """Send every record and await every delivery; raise the first delivery error.

    Awaiting all deliveries matters: aiokafka commits a transaction even when one of its
    batches failed, so a record could silently be missing from a committed transaction.
    """
    futures: list[asyncio.Future[Any]] = []
    try:
        for record in records:
            futures.append(await producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers),
            ))
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        for future in futures:
            future.add_done_callback(_retrieve)  # no "exception never retrieved" for the leftovers
    _raise_first(results)


def _raise_first(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _silence_transaction_waiter(producer: TransactionalProducer) -> None:
    """Mark aiokafka's internal transaction waiter as retrieved once it completes.

    On a fatal error (a fence) aiokafka fails that future and nothing ever awaits it, so asyncio
    logs "Future exception was never retrieved" with a traceback. Cosmetic only; a no-op when
    the private attributes are absent (a fake producer, another aiokafka version).
    """
    waiter = getattr(getattr(producer, "_txn_manager", None), "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future):
        waiter.add_done_callback(_retrieve)


async def _stop_quietly(producer: TransactionalProducer) -> None:
    try:
        await producer.stop()
    except asyncio.CancelledError:
        _drop_connections(producer)
        raise
    except Exception as exc:
        log.debug("stopping a retired transactional producer failed: %r", exc)
        _drop_connections(producer)


def _drop_connections(producer: TransactionalProducer) -> None:
    """Close what an unfinished ``stop()`` left open: the sender task and every broker socket.

    ``stop()`` closes the client only after the sender has flushed; abandoned before that (the
    broker is away, or the control timeout passed), the producer's sockets would stay open until
    garbage collection finds them. A no-op for a fake producer without these attributes.
    """
    sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if isinstance(sender_task, asyncio.Task) and not sender_task.done():
        sender_task.cancel()
    client = getattr(producer, "client", None)
    sync_task = getattr(client, "_sync_task", None)
    if isinstance(sync_task, asyncio.Task) and not sync_task.done():
        sync_task.cancel()
    for conn in list(getattr(client, "_conns", {}).values()):
        conn.close()
