"""The Kafka input side: one consumer in a group, manual commits, a rebalance hook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from pipeline.config import WorkerSettings


@dataclass(frozen=True, slots=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


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

    def __init__(
        self,
        settings: WorkerSettings,
        on_revoked: PartitionsCallback,
        on_assigned: PartitionsCallback,
    ) -> None:
        self._settings = settings
        self._listener = _Listener(on_revoked, on_assigned)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        s = self._settings
        self._consumer = AIOKafkaConsumer(
            **s.client_kwargs(),
            group_id=s.group_id,
            client_id=s.worker_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 4),
            fetch_max_bytes=max(52_428_800, s.max_payload_bytes * 2),
            max_partition_fetch_bytes=max(1_048_576, s.max_payload_bytes + 65_536),
            isolation_level="read_committed",
        )
        self._consumer.subscribe(s.input_topics, listener=self._listener)
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
