"""``streaminfer lag`` and ``streaminfer config show`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_lag_shows_committed_end_and_lag_per_partition(kafka_bootstrap: str) -> None:
    topics = Topics(kafka_bootstrap, partitions=2)
    asyncio.run(publish(iter_synthetic_transactions(40, seed=3), bootstrap=kafka_bootstrap, topic=topics.inputs))

    async def commit_some() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=topics.group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topics.inputs, p) for p in range(2)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tps[0]: OffsetAndMetadata(3, "")})  # partition 1: nothing committed
        finally:
            await consumer.stop()
        return {tp.partition: end for tp, end in ends.items()}

    ends = asyncio.run(commit_some())
    done = _cli("lag", "--bootstrap", kafka_bootstrap, "--group", topics.group, "--topic", topics.inputs, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["state"] == "Empty" and report["members"] == 0
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in report["partitions"]] == [
        (0, 3, ends[0], ends[0] - 3), (1, None, ends[1], ends[1])]
    text = _cli("lag", "--bootstrap", kafka_bootstrap, "--group", topics.group, "--topic", topics.inputs)
    assert text.returncode == 0 and text.stdout.splitlines()[-1].split() == ["total", str(40 - 3)], text.stdout


def test_config_show_names_each_setting_its_source_and_masks_the_password() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "show", "--max-batch-size", "64"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "STREAMINFER_SASL_PASSWORD": "hunter2", "STREAMINFER_MAX_WAIT_MS": "7",
             "STREAMINFER_KAFKA_BOOTSTRAP": "broker:9092"},
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "hunter2" not in done.stdout and "***" in lines["sasl_password"]
    assert lines["max_batch_size"].split()[1:] == ["64", "(flag)"]
    assert lines["max_wait_ms"].split()[1:] == ["7", "(env)"]
    assert lines["batching"].split()[1:] == ["adaptive", "(default)"]


def test_topics_describe_shows_partitions_end_offsets_and_configuration(kafka_bootstrap: str) -> None:
    topics = Topics(kafka_bootstrap, partitions=3)
    events = list(iter_synthetic_transactions(30, seed=4))
    asyncio.run(publish(events, bootstrap=kafka_bootstrap, topic=topics.inputs))
    done = _cli("topics", "describe", "--bootstrap", kafka_bootstrap, "--topic", topics.inputs, "--json")
    assert done.returncode == 0, done.stderr
    [topic] = json.loads(done.stdout)
    assert topic["topic"] == topics.inputs and topic["replication_factor"] == 1
    assert [p["partition"] for p in topic["partitions"]] == [0, 1, 2]
    assert sum(p["end_offset"] for p in topic["partitions"]) == 30
    assert all(p["isr"] == p["replicas"] and p["leader"] in p["replicas"] for p in topic["partitions"])
    assert topic["configs"]["cleanup.policy"] == "delete" and int(topic["configs"]["max.message.bytes"]) > 0
    text = _cli("topics", "describe", "--bootstrap", kafka_bootstrap, "--topic", topics.inputs,
                "--topic", "no-such-topic-here")
    assert text.returncode == 1  # one of them does not exist
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{topics.inputs}: 3 partitions, replication 1")
    assert lines[-1] == "no-such-topic-here: no such topic"
