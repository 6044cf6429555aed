"""The Kafka input side: one consumer in a group, manual commits, a rebalance hook."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.client import ConnectionGroup
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from consumers.source import InputRecord, PartitionsCallback
from pipeline.config import WorkerSettings

__all__ = ["InputRecord", "KafkaSource"]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._on_assigned(set(assigned))


class KafkaSource:
    """Owns the ``AIOKafkaConsumer``. ``on_revoked`` is awaited before partitions move."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        s = self._settings
        self._consumer = AIOKafkaConsumer(
            **s.client_kwargs(),
            group_id=s.group_id,
            client_id=s.worker_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            # revoking finishes in-flight batches (inference, acks, transactions) before the
            # partitions move: give it as long as a poll interval, not a session timeout
            rebalance_timeout_ms=s.max_poll_interval_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 4),
            # prefetch is bounded explicitly; the broker still returns a single record larger
            # than these limits whole, so no message is ever too big to be fetched
            fetch_max_bytes=s.max_prefetch_bytes,
            max_partition_fetch_bytes=min(s.max_prefetch_bytes, s.max_payload_bytes + 65_536),
            isolation_level="read_committed",
        )
        self._consumer.subscribe(s.input_topics, listener=_Listener(on_revoked, on_assigned))
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
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            InputRecord(
                r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp
            )
            for records in batches.values()
            for r in records
        ]

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
        if tps:
            self.consumer.pause(*tps)

    def resume(self, tps: set[TopicPartition]) -> None:
        if tps:
            self.consumer.resume(*tps)

    async def cluster_id(self) -> str:
        """Ask the broker which cluster this is (a metadata request for no topics).

        aiokafka's cluster metadata does not keep the id, so this goes through the
        consumer's client: the one place here that touches aiokafka internals.
        """
        client = self.consumer._client
        node_id = client.get_random_node()
        if node_id is None:
            raise KafkaConnectionError("no broker of the cluster is known")
        # on the coordination connection, like commits: on the default one it would queue
        # behind a fetch the broker holds for up to fetch_max_wait_ms (500 ms)
        response = await client.send(node_id, MetadataRequest([]), group=ConnectionGroup.COORDINATION)
        return str(response.to_object()["cluster_id"])
