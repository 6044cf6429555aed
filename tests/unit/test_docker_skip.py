"""Without a Docker engine the Docker tests are skipped with a reason, not failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docker.conftest import docker_unavailable
from tests.integration.kafka_fixture import docker_engine_answers


def test_no_engine_is_a_reason_to_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert not docker_engine_answers()
    why = docker_unavailable()
    assert why is not None and ("no Docker engine answers" in why or "no docker CLI" in why)


def test_an_engine_address_nobody_listens_on_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert not docker_engine_answers()
