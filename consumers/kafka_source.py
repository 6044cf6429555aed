"""The Kafka input side: one consumer in a group, manual commits, a rebalance hook.

Pausing is done here, not with aiokafka's ``pause``: aiokafka throws away what it has
already fetched for a paused partition and fetches it again after ``resume`` (a worker
draining a backlog, its lane pausing and resuming all the time, read every transaction
about a hundred times over: 2.5 GB off the socket for 24 MB of input). A partition paused here is
left out of ``getmany``; its prefetched records stay where they are, one fetch's worth,
until it is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.client import ConnectionGroup
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from consumers.source import InputRecord, PartitionsCallback

__all__ = ["InputRecord", "KafkaSource"]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback,
                 paused: set[TopicPartition]) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._paused = paused

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._paused.clear()  # as aiokafka's own pause state: a new assignment starts unpaused
        await self._on_assigned(set(assigned))


class KafkaSource:
    """Owns the ``AIOKafkaConsumer``. ``on_revoked`` is awaited before partitions move."""

    def __init__(
        self,
        client_kwargs: Mapping[str, object],
        topics: Sequence[str],
        *,
        group_id: str,
        client_id: str,
        auto_offset_reset: str = "earliest",
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 45_000,
        max_prefetch_bytes: int = 16 * 1024 * 1024,
        max_payload_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        """``client_kwargs``: bootstrap and security, as every client of the project takes them."""
        self._client_kwargs = dict(client_kwargs)
        self._topics = list(topics)
        self._group_id, self._client_id = group_id, client_id
        self._auto_offset_reset = auto_offset_reset
        self._max_poll_interval_ms, self._session_timeout_ms = max_poll_interval_ms, session_timeout_ms
        self._max_prefetch_bytes, self._max_payload_bytes = max_prefetch_bytes, max_payload_bytes
        self._consumer: AIOKafkaConsumer | None = None
        self._paused: set[TopicPartition] = set()
        self._resumed = asyncio.Event()

    async def start(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._client_kwargs,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            max_poll_interval_ms=self._max_poll_interval_ms,
            session_timeout_ms=self._session_timeout_ms,
            # revoking finishes in-flight batches (inference, acks, transactions) before the
            # partitions move: give it as long as a poll interval, not a session timeout
            rebalance_timeout_ms=self._max_poll_interval_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 4),
            # prefetch is bounded explicitly; the broker still returns a single record larger
            # than these limits whole, so no message is ever too big to be fetched
            fetch_max_bytes=self._max_prefetch_bytes,
            max_partition_fetch_bytes=min(self._max_prefetch_bytes, self._max_payload_bytes + 65_536),
            isolation_level="read_committed",
        )
        self._consumer.subscribe(self._topics, listener=_Listener(on_revoked, on_assigned, self._paused))
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group (triggers a rebalance for the others) and close."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("KafkaSource.start() was not called")
        return self._consumer

    async def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        if not self._paused:
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        elif not (partitions := tuple(self.consumer.assignment() - self._paused)):
            # all paused: wait for a resume (or the timeout), read nothing; counted as a poll,
            # as aiokafka's getmany on paused partitions is: a worker whose lanes are all
            # behind is busy, not stuck past max_poll_interval_ms
            self._resumed.clear()
            with self.consumer._subscription.fetch_context(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resumed.wait(), timeout_ms / 1000)
            return []
        else:
            batches = await self._getmany_until_resumed(partitions, timeout_ms, max_records)
        if len(batches) == 1:
            [records] = batches.values()
            return records  # type: ignore[return-value]
        return list(chain.from_iterable(batches.values()))  # type: ignore[arg-type]

    async def _getmany_until_resumed(self, partitions: tuple[TopicPartition, ...], timeout_ms: int,
                                     max_records: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The unpaused partitions' records, read until the timeout or a resume, whichever
        comes first: a lane's partitions come back as soon as it has room, not a poll later.
        Waiting the poll out (up to 100 ms while nothing came for the unpaused ones), a
        worker reading 30,000 transactions/s beside an idle frames topic fell 3-6 s behind
        within 8 s (one-offs of 2026-12-07; with this wait, p99 11-20 ms to the worker)."""
        self._resumed.clear()
        fetch = asyncio.ensure_future(
            self.consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records))
        resumed = asyncio.ensure_future(self._resumed.wait())
        try:
            await asyncio.wait({fetch, resumed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            resumed.cancel()
            fetch.cancel()  # a no-op once it is done; while it waits it has taken nothing yet
        await asyncio.wait({fetch})
        return {} if fetch.cancelled() else fetch.result()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if offsets:
            await self.consumer.commit(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    async def committed_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        return {tp: await self.consumer.committed(tp) for tp in tps}

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)

    def highwater(self, tp: TopicPartition) -> int | None:
        if self._consumer is None:
            return None
        return self._consumer.highwater(tp)  # type: ignore[no-any-return]

    def pause(self, tps: set[TopicPartition]) -> None:
        self._paused |= tps & self.consumer.assignment()

    def resume(self, tps: set[TopicPartition]) -> None:
        if tps & self._paused:
            self._paused -= tps
            self._resumed.set()

    async def cluster_id(self) -> str:
        """Ask the broker which cluster this is (a metadata request for no topics).

        aiokafka's cluster metadata does not keep the id, so this goes through the
        consumer's client: with the fetch context of ``poll`` when every partition is
        paused, the places here that touch aiokafka internals.
        """
        client = self.consumer._client
        node_id = client.get_random_node()
        if node_id is None:
            raise KafkaConnectionError("no broker of the cluster is known")
        # on the coordination connection, like commits: on the default one it would queue
        # behind a fetch the broker holds for up to fetch_max_wait_ms (500 ms)
        response = await client.send(node_id, MetadataRequest([]), group=ConnectionGroup.COORDINATION)
        return str(response.to_object()["cluster_id"])
