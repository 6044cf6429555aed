"""Create the pipeline's topics (idempotent)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config import KafkaSettings


async def create_topics(
    settings: KafkaSettings, names: list[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create missing topics; return the names that were created."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in wanted]
                )
            except TopicAlreadyExistsError:
                pass  # created concurrently by another replica's init
        return wanted
    finally:
        await admin.close()
