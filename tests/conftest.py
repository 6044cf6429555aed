from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.kafka_fixture import kafka_for_tests


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The one real Kafka broker of a test run (see tests/integration/kafka_fixture.py)."""
    with kafka_for_tests(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap
