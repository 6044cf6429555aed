"""docker-compose.yml cannot drift from the CLI: its commands parse, and the worker
service's command and environment run against the test broker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import yaml

from devtools.kafka_version import KAFKA_IMAGE
from pipeline.cli import build_parser
from pipeline.config import WorkerSettings
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def services() -> dict[str, dict]:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _env(service: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


def test_compose_kafka_image_is_the_pinned_version() -> None:
    assert services()["kafka"]["image"] == KAFKA_IMAGE


def test_every_compose_command_parses_with_the_cli() -> None:
    ours = {name: service for name, service in services().items() if service.get("image") == "streaminfer:latest"}
    assert {"topics", "worker", "viewer", "results"} <= set(ours)
    for name, service in ours.items():
        command = service.get("command")
        if command is None:
            continue
        assert command[0] == "streaminfer", name
        build_parser().parse_args(command[1:])  # SystemExit on an unknown flag


def test_compose_worker_has_replicas_and_valid_settings() -> None:
    worker = services()["worker"]
    assert worker["deploy"]["replicas"] >= 2
    settings = WorkerSettings(**{k.removeprefix("STREAMINFER_").lower(): v for k, v in _env(worker).items()})
    assert settings.kafka_bootstrap == "kafka:9092"


def test_compose_worker_command_runs_against_the_broker(topics: Topics, tmp_path: Path) -> None:
    worker = services()["worker"]
    env = _env(worker) | topics.worker_env()  # same settings, but this test's broker and topics
    command = [sys.executable, "-m", "pipeline", *worker["command"][1:]]
    proc = WorkerProcess("compose-worker", env, tmp_path, command=command)
    try:
        wait_until(lambda: len(proc.assigned()) == 4, 60, "the compose worker to join", [proc])
        events = [*iter_synthetic_transactions(40, seed=3), *iter_video_frames("synthetic", stream_id="c", count=10)]
        asyncio.run(publish(events, bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, len(events), timeout_s=90)
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-2000:]
    assert sorted(r.event_id for r in results) == sorted(
        e.id if e.kind == "transaction" else f"{e.stream_id}/{e.seq}" for e in events  # type: ignore[union-attr]
    )
