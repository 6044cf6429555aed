"""Both broker paths of tests/integration/kafka_fixture.py, on a real engine."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from devtools.broker import listed_broker_ids
from devtools.kafka_version import KAFKA_IMAGE
from tests.integration.kafka_fixture import BrokerFallbackWarning, kafka_for_tests


@pytest.mark.skipif("STREAMINFER_KAFKA_BOOTSTRAP" in os.environ, reason="the tests use an existing cluster")
def test_the_suite_broker_is_a_testcontainers_kafka(kafka_bootstrap: str) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    published = subprocess.run(
        ["docker", "ps", "--filter", f"ancestor={KAFKA_IMAGE}", "--format", "{{.Ports}}"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert f":{port}->9092/tcp" in published, published


@pytest.mark.skipif("STREAMINFER_KAFKA_BOOTSTRAP" in os.environ, reason="the tests use an existing cluster")
def test_an_image_that_cannot_be_had_falls_back_to_the_local_broker(tmp_path: Path) -> None:
    with pytest.warns(BrokerFallbackWarning, match="the tests use the local broker instead"):
        with kafka_for_tests(tmp_path / "broker", image="streaminfer-test/no-such-kafka:0") as bootstrap:
            assert asyncio.run(listed_broker_ids(bootstrap)) == {1}
            assert (tmp_path / "broker" / "cluster.json").exists()  # the local broker's own state
