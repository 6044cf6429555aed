"""Create the pipeline's topics (idempotent), describe topics, a consumer group's lag."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    TopicAlreadyExistsError,
    for_code,
)

from pipeline.config import KafkaSettings
from pipeline.outage import describe as describe_error


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


async def group_members(settings: KafkaSettings, group_id: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, e.g. ("Stable", 2)."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
        group = response.groups[0]
        # DescribeGroups v0+: (error_code, group_id, state, protocol_type, protocol, members, ...)
        return str(group[2]), len(group[5])
    finally:
        await admin.close()


async def wait_for_group(
    settings: KafkaSettings, group_id: str, members: int, timeout_s: float = 60.0
) -> None:
    """Wait until the group is stable with ``members`` members (all workers hold partitions)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    state, count = "", 0
    while asyncio.get_running_loop().time() < deadline:
        try:
            state, count = await group_members(settings, group_id)
        except Exception:  # coordinator still loading: ask again
            state, count = "unknown", 0
        if state == "Stable" and count >= members:
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"group {group_id!r} is {state} with {count} members, wanted {members}")


# what `topics describe` shows of each topic's configuration (and any other set on the topic itself)
SHOWN_CONFIGS = ("retention.ms", "retention.bytes", "cleanup.policy", "max.message.bytes", "min.insync.replicas")
_TOPIC_CONFIG_SOURCE = 1  # DescribeConfigs: DYNAMIC_TOPIC_CONFIG, set on this topic
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


async def describe_topics(settings: KafkaSettings, names: list[str]) -> list[dict[str, Any]]:
    """Per topic: partitions (leader, replicas, in-sync replicas, end offset), replication
    factor and configuration; ``error`` instead for a topic that cannot be described."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    config_of = {r["resource_name"]: r for r in configs.to_object()["resources"]}
    present = [n for n in names if not described.get(n, {"error_code": -1})["error_code"]]
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(n, p["partition"]) for n in present for p in described[n]["partitions"]]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    report: list[dict[str, Any]] = []
    for name in names:
        topic = described.get(name)
        if topic is None or topic["error_code"]:
            code = topic["error_code"] if topic else -1
            why = "no such topic" if code == _UNKNOWN_TOPIC else describe_error(for_code(code)()) if code > 0 else "?"
            report.append({"topic": name, "error": why})
            continue
        partitions = sorted(topic["partitions"], key=lambda p: p["partition"])
        entries = config_of.get(name, {}).get("config_entries", [])
        report.append({
            "topic": name,
            "replication_factor": len(partitions[0]["replicas"]) if partitions else 0,
            "partitions": [{"partition": p["partition"], "leader": p["leader"], "replicas": p["replicas"],
                            "isr": p["isr"], "end_offset": ends[TopicPartition(name, p["partition"])]}
                           for p in partitions],
            "configs": {e["config_names"]: e["config_value"] for e in entries
                        if e["config_names"] in SHOWN_CONFIGS or e["config_source"] == _TOPIC_CONFIG_SOURCE},
        })
    return report


async def _committed_offsets(admin: AIOKafkaAdminClient, group_id: str,
                             timeout_s: float = 15.0) -> dict[TopicPartition, int]:
    """The group's committed offsets. A cluster that never had a consumer group has no
    coordinator until its offsets topic is made (on this first request): retried meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            offsets = await admin.list_consumer_group_offsets(group_id)
            return {tp: meta.offset for tp, meta in offsets.items()}
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def group_lag(
    settings: KafkaSettings, group_id: str, topics: list[str] | None = None
) -> list[tuple[str, int, int | None, int, int]]:
    """(topic, partition, committed offset or None, end offset, lag) for each partition of
    the topics the group has committed offsets on (or of ``topics``), sorted."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        committed = await _committed_offsets(admin, group_id)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        names = topics or sorted({tp.topic for tp in committed})
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        if topics and not tps:  # metadata not fetched yet for these topics
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    rows = []
    for tp in sorted(tps):
        done = committed.get(tp)
        end = ends[tp]
        rows.append((tp.topic, tp.partition, done, end, end - (done if done is not None and done >= 0 else 0)))
    return rows
