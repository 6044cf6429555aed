from __future__ import annotations

import asyncio
import uuid

import pytest

from pipeline.config import KafkaSettings
from pipeline.topics import create_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


class Topics:
    """Fresh uuid-named topics for one test."""

    def __init__(self, bootstrap: str, partitions: int, replication: int = 1) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.inputs = f"in-{suffix}"
        self.results = f"results-{suffix}"
        self.dead_letters = f"dlq-{suffix}"
        self.group = f"group-{suffix}"
        asyncio.run(create_topics(
            KafkaSettings(kafka_bootstrap=bootstrap),
            [self.inputs, self.results, self.dead_letters],
            partitions,
            replication=replication,
        ))

    def worker_env(self) -> dict[str, str]:
        return {
            "STREAMINFER_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMINFER_INPUT_TOPICS": self.inputs,
            "STREAMINFER_RESULTS_TOPIC": self.results,
            "STREAMINFER_DEAD_LETTER_TOPIC": self.dead_letters,
            "STREAMINFER_GROUP_ID": self.group,
            "STREAMINFER_TORCH_THREADS": "1",
        }


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    return Topics(kafka_bootstrap, partitions=4)
