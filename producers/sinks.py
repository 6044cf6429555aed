"""Where outcomes go: results and dead letters, over one idempotent producer.

``Sink.send`` never raises: it returns the delivery future, and a record the producer
refuses at once (too large, buffer timeout) comes back as an already-failed future. The
worker awaits every future of a batch before it commits the batch's input offsets
(at-least-once), and decides per failure whether it is the record's fault (its dead
letter) or the infrastructure's (retry until a deadline).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    for_code,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

log = logging.getLogger("streaminfer.sink")

_PLACED_MAX = 100_000  # keys whose partition is remembered (then forgotten all at once)

Delivery = asyncio.Future[Any]

# the producer's request limit leaves this much room above the largest payload for
# the key, headers and record framing
RECORD_OVERHEAD_BYTES = 65_536


# made per record: not frozen, whose __init__ costs four times as much (0.8 against 0.19 us for 7 fields)
@dataclass(slots=True)
class OutRecord:
    """One record to produce: a result or a dead letter."""

    topic: str
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class RecordsResent(Exception):
    """How a delivery shared by a record batch ends when the broker refused the batch for
    one record's size or content (a limit lowered since it was read, a record without a
    key on a compacted topic): its records are being sent again one by one, and ``of`` is
    each one's own delivery (``delivered`` follows it)."""

    def __init__(self, deliveries: dict[int, Delivery]) -> None:
        super().__init__(f"the record batch was refused: its {len(deliveries)} records are sent again one by one")
        self._deliveries = deliveries  # id(record) -> its own delivery

    def of(self, record: OutRecord) -> Delivery:
        return self._deliveries[id(record)]


async def delivered(record: OutRecord, delivery: Delivery) -> Any:
    """The ack of ``record``, sent with ``delivery``: raises what its delivery failed with,
    its own if the batch it went in was sent again one by one."""
    try:
        return await delivery
    except RecordsResent as resent:
        return await resent.of(record)


async def outcomes_of(records: Sequence[OutRecord], deliveries: Sequence[Delivery]) -> list[Any]:
    """Each record's ack, or the exception its delivery failed with, in order."""
    return list(await asyncio.gather(*map(delivered, records, deliveries), return_exceptions=True))


class Sink(Protocol):
    """What the worker produces through. ``send`` returns the delivery future and never raises."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, record: OutRecord) -> Delivery: ...

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        """One delivery per record, in order; like ``send`` for each, possibly cheaper.
        Records sent together may share one (the same future): if it fails with
        ``RecordsResent``, each record's own is ``RecordsResent.of(record)``. The records
        must be distinct objects."""
        ...


def is_record_fault(exc: BaseException) -> bool:
    """True when the record itself was refused (its size or content): retrying cannot help."""
    return isinstance(
        exc, MessageSizeTooLargeError | RecordTooLargeError | RecordListTooLargeError | CorruptRecordException
    )


def max_request_bytes(max_payload_bytes: int) -> int:
    return max(1_048_576, max_payload_bytes + RECORD_OVERHEAD_BYTES)


class KafkaSink:
    """One idempotent ``AIOKafkaProducer`` (acks=all) for results and dead letters.

    A record larger than its topic's ``max.message.bytes`` is refused here, before it is
    sent: refused by the broker, it would also break the idempotent producer's sequence
    numbers for its partition, and every later record there would fail
    (``OutOfOrderSequenceNumber``). The limit is read once per topic (DescribeConfigs);
    where it cannot be read, only the producer's own request limit is checked.
    """

    LIMIT_RETRY_S = 60.0

    def __init__(self, client_kwargs: dict[str, Any], client_id: str, max_payload_bytes: int,
                 linger_ms: int = 2, batch_bytes: int = 16_384, topics: Sequence[str] = (),
                 send_at_once: bool = True) -> None:
        """``topics``: where records will go; their limits are read at start, not on the first send.

        ``send_at_once``: ``send_many``'s record batches are closed, so aiokafka sends them at
        once; left open, it lets each linger ``linger_ms`` (for records ``send`` might add)
        and holds the partition's next batch until it has gone, so a caller that sends small
        batches often has them gathered for it. A worker's batches are its model batches'
        results, already as large as they will get: open or closed, one worker on the local
        broker drained 400,000 transactions at 62.9-65.4k and 63.7-69.3k/s (three interleaved
        each), and paced at 20,000/s it took 0.55-0.60 cores either way. A paced publisher's
        are the few events due since its last send: closed, they reached the broker in 1-2 ms
        (p50) against 11 at linger_ms=5, but at 20,000/s the publisher took 0.83 cores
        against 0.40, the broker 0.50 against 0.20 (2026-12-07)."""
        self._topics = tuple(topics)
        self._send_at_once = send_at_once
        self._client_kwargs = dict(client_kwargs)
        self._max_request = max_request_bytes(max_payload_bytes)
        self._kwargs = dict(
            client_kwargs,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=batch_bytes,
            max_request_size=self._max_request,
        )
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        # (topic, its partition count) -> key -> partition
        self._placed: dict[tuple[str, int], dict[bytes, int]] = {}
        self._retries: set[asyncio.Future[None]] = set()  # record batches being resent one by one
        # topic -> (largest record batch it takes, until when that is known: inf once read)
        self._limits: dict[str, tuple[int, float]] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._kwargs)
        await self._producer.start()
        if self._topics:
            await self._learn_limits(self._topics)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def missing_topics(self, topics: Sequence[str]) -> list[str]:
        """Those of ``topics`` the broker does not have now (one metadata request: no wait
        for them to appear, as a send to a missing topic waits out its request timeout)."""
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        cluster = await self._producer.client.fetch_all_metadata()
        return [topic for topic in topics if not cluster.partitions_for_topic(topic)]

    async def topic_limit(self, topic: str) -> int:
        """The largest record batch ``topic`` takes: its ``max.message.bytes``, at most the request limit."""
        known = self._limits.get(topic)
        if known is None or time.monotonic() >= known[1]:
            await self._learn_limits([topic])
        return self._limits[topic][0]

    async def _learn_limits(self, topics: Sequence[str]) -> None:
        """Read the topics' ``max.message.bytes`` in one DescribeConfigs request."""
        try:
            admin = AIOKafkaAdminClient(**self._client_kwargs)
            await admin.start()
            try:
                [response] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in topics]
                )
            finally:
                await admin.close()
            resources = response.to_object()["resources"]
        except Exception as exc:  # not allowed to describe configs, broker away
            resources = [{"resource_name": t, "error_code": -1, "error_message": describe_error(exc)} for t in topics]
        for resource in resources:
            topic = resource["resource_name"]
            entries = [e for e in resource.get("config_entries", ()) if e["config_names"] == "max.message.bytes"]
            if resource["error_code"] or not entries:  # e.g. the topic is not there yet: look again later
                why = resource["error_message"] or describe_error(for_code(resource["error_code"])())
                log.warning("could not read max.message.bytes of %r (%s); checking the producer's limit only",
                            topic, why)
                self._limits[topic] = (self._max_request, time.monotonic() + self.LIMIT_RETRY_S)
            else:
                self._limits[topic] = (min(self._max_request, int(entries[0]["config_value"])), math.inf)

    @staticmethod
    def _refusal(record: OutRecord, size: int, limit: int) -> Delivery | None:
        """An already-failed delivery if ``record`` (``size`` bytes alone in a batch) is over ``limit``."""
        if size <= limit:
            return None
        return _failed(MessageSizeTooLargeError(
            f"the record is {size} bytes, over the {limit} bytes topic {record.topic!r} takes (max.message.bytes)"
        ))

    async def send(self, record: OutRecord) -> Delivery:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        size = _size(record.key, record.value, list(record.headers))
        if (refused := self._refusal(record, size, await self.topic_limit(record.topic))) is not None:
            return refused
        try:
            return await self._producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        except KafkaError as exc:  # refused before it was queued: deliver the failure like a late one
            return _failed(exc)

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        """A batch's records in one record batch per output partition (``send_batch``),
        placed by the same partitioner ``send`` uses, so a key keeps its partition.

        Much cheaper per record than ``send``. The records of a record batch share its
        delivery: one future a batch, not a record, to make, settle, look at and free (in
        a worker draining transactions, making and settling them was about 2 % of its
        time). A record batch the broker refuses for its size or content is sent again
        record by record, so only the guilty record fails (``RecordsResent``).
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        # each filled in below: the record's batch's delivery, or its own failure
        deliveries: list[Delivery] = [None] * len(records)  # type: ignore[list-item]
        groups: dict[tuple[str, int], list[int]] = {}
        # per topic, not per record: its partitions and limit (or why they could not be had),
        # asked once a call whatever order its topics come in, and where its keys went
        learned: dict[str, tuple[list[int], int] | KafkaError] = {}
        topic, known, limit, placed, place = "", list[int](), 0, dict[bytes, int](), self._placed_keys
        failed: KafkaError | None = None
        headers, sizes = [], []
        shared, shared_list = None, list[tuple[str, bytes]]()  # one list for a run of the same headers
        framing = 0  # what a record with these headers and no key or value weighs alone in a batch
        for i, record in enumerate(records):
            if record.headers is not shared:
                shared, shared_list = record.headers, list(record.headers)
                framing = _size(b"", b"", shared_list) + _LENGTHS_SLACK
            headers.append(shared_list)
            key = record.key
            # at least the record's size alone in a batch (its key's and value's lengths
            # grow their varints by a few bytes at most): asked exactly only near the limit
            sizes.append(size := framing + len(record.value) + (len(key) if key is not None else 0))
            if record.topic != topic:
                topic = record.topic
                if (about := learned.get(topic)) is None:
                    try:
                        partitions = sorted(await producer.partitions_for(topic))
                    except KafkaError as exc:
                        about = learned[topic] = exc
                    else:
                        about = learned[topic] = (partitions, await self.topic_limit(topic))
                if isinstance(about, KafkaError):
                    failed = about
                else:
                    failed, (known, limit) = None, about
                    placed = place(topic, len(known))
            if failed is not None:
                deliveries[i] = _failed(failed)
                continue
            if size > limit and (refused := self._refusal(
                    record, _size(key, record.value, shared_list), limit)) is not None:
                deliveries[i] = refused
                continue
            if key is None:
                partition = int(self._partitioner(None, known, known))
            elif (partition := placed.get(key, -1)) < 0:
                if len(placed) >= _PLACED_MAX:
                    placed = place(topic, len(known), forget=True)
                partition = placed[key] = int(self._partitioner(key, known, known))
            group = groups.get((topic, partition))
            if group is None:
                group = groups[topic, partition] = []
            group.append(i)
        for (topic, partition), indices in groups.items():
            batch, members = producer.create_batch(), list[int]()
            # the usual group fits the topic's limit whole: no size asked per record
            about = learned[topic]
            assert not isinstance(about, KafkaError)  # a topic with a group was learned
            _, limit = about
            fits = sum(sizes[i] for i in indices) <= limit
            for i in indices:
                record = records[i]
                appended = (fits or not members or batch.size() + sizes[i] <= limit) and batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=headers[i]) is not None
                if not appended:  # full: send it, start the next
                    sent_together = await self._send_batch(batch, topic, partition, [records[j] for j in members])
                    for j in members:
                        deliveries[j] = sent_together
                    batch, members = producer.create_batch(), []
                    batch.append(key=record.key, value=record.value, timestamp=None, headers=headers[i])
                members.append(i)
            if members:
                sent_together = await self._send_batch(batch, topic, partition, [records[j] for j in members])
                for j in members:
                    deliveries[j] = sent_together
        return deliveries

    def _placed_keys(self, topic: str, partitions: int, forget: bool = False) -> dict[bytes, int]:
        """Key -> partition as ``send`` would choose (murmur2 of the key, in Python) for
        ``topic`` with ``partitions`` partitions: remembered while that count stays the same,
        up to ``_PLACED_MAX`` keys (then forgotten all at once)."""
        placed = self._placed.get((topic, partitions))
        if placed is None or forget:
            placed = self._placed[topic, partitions] = {}
        return placed

    async def _send_batch(self, batch: Any, topic: str, partition: int, records: list[OutRecord]) -> Delivery:
        """Send ``batch`` (``records``); the delivery its records share."""
        assert self._producer is not None
        if self._send_at_once:
            batch.close()
        try:
            sent = await self._producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            sent = _failed(exc)
        shared: Delivery = asyncio.get_running_loop().create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if shared.done():
                return
            exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
            if exc is None:
                shared.set_result(done.result())
            elif is_record_fault(exc) and len(records) > 1:
                # one record spoiled the batch: find it by sending them one by one
                create_future = asyncio.get_running_loop().create_future
                own: list[Delivery] = [create_future() for _ in records]
                retry = asyncio.ensure_future(self._one_by_one(records, own))
                self._retries.add(retry)
                retry.add_done_callback(self._retries.discard)
                fail(shared, RecordsResent({id(record): d for record, d in zip(records, own, strict=True)}))
            else:
                fail(shared, exc)

        sent.add_done_callback(settle)
        return shared

    async def _one_by_one(self, records: list[OutRecord], deliveries: list[Delivery]) -> None:
        # each acked before the next is sent: the producer would otherwise put them in
        # one record batch again (a rare path: a batch refused for its size or content)
        for record, delivery in zip(records, deliveries, strict=True):
            sent = await self.send(record)
            await asyncio.wait([sent])
            self._chain(sent, delivery)

    @staticmethod
    def _chain(source: Delivery, target: Delivery) -> None:
        def copy(done: Delivery) -> None:
            if target.done():
                return
            if done.cancelled():
                target.cancel()
            elif (exc := done.exception()) is not None:
                fail(target, exc)
            else:
                target.set_result(done.result())

        source.add_done_callback(copy)


_size = DefaultRecordBatchBuilder.estimate_size_in_bytes  # a record alone in a batch, framing included
# the most a key's and a value's length varints grow past those of empty ones (5 bytes each)
_LENGTHS_SLACK = 10


def _failed(exc: BaseException) -> Delivery:
    failed: Delivery = asyncio.get_running_loop().create_future()
    fail(failed, exc)
    return failed


def fail(delivery: Delivery, exc: BaseException) -> None:
    """Fail ``delivery`` with ``exc``, marked as seen: awaiting it still raises ``exc``.

    The worker looks at every delivery of each batch it delivers. The batches it never gets
    to (it is stopping on a fatal error, say the broker refusing its credentials) would
    otherwise each log "Future exception was never retrieved" for every record, after the
    one line that says why the worker stopped."""
    delivery.set_exception(exc)
    delivery.exception()


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
