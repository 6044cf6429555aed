"""The Docker tests: the project's own Dockerfile and docker-compose.yml on a real engine.

They run whenever a Docker engine answers and ``docker compose`` (v2) is there; otherwise
they are skipped with the reason (``make test`` prints it). Where the base images cannot be
pulled, stand-ins are built first (``tests/docker/standins.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_fixture import docker_engine_answers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / "test-artifacts"
_REPORT: dict[str, str] = {}


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    if not docker_engine_answers():
        return "no Docker engine answers (start one, or run .ci/run, which does)"
    version = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        return "`docker compose` (v2) is missing: tests/docker/compose_plugin.sh builds it"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = None
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.docker)
            if why is None:
                why = docker_unavailable() or ""
            if why:
                item.add_marker(pytest.mark.skip(reason=f"Docker tests skipped: {why}"))


def report(key: str, value: str) -> None:
    """A line for the end of the test run (image size and the like), also kept as JSON."""
    _REPORT[key] = value
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "docker.json").write_text(json.dumps(_REPORT, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("docker")
        for key, value in _REPORT.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def base_images() -> Iterator[None]:
    """The Dockerfile's and compose file's base images: present, pulled, or stand-ins."""
    from tests.docker.standins import ensure_all

    for image, how in ensure_all().items():
        if how in ("loaded", "built"):
            report(f"base image {image}", f"stand-in ({how}), for offline CI only")
    yield
