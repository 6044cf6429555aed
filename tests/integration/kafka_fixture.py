"""Where the tests' real Kafka broker comes from.

1. ``STREAMINFER_KAFKA_BOOTSTRAP``: an existing cluster.
2. testcontainers with the ``apache/kafka`` image, when a Docker engine answers a ping and
   the image is there or can be pulled (offline CI builds a stand-in under that name:
   ``tests/docker/standins.py``).
3. Otherwise the project's own single-node KRaft broker from Maven Central jars; when an
   engine answers but the image cannot be had, with a warning saying so.

testcontainers' reaper (Ryuk) is an image too: where it cannot be had, it is turned off
with a warning, and the fixture removes its container itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from devtools.broker import LocalBroker, free_port, listed_broker_ids
from devtools.kafka_version import KAFKA_IMAGE


def docker_engine_answers() -> bool:
    """Ping the engine itself: a ``docker`` CLI on PATH does not mean an engine runs."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            hostname, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (hostname, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except (OSError, ValueError):
        return False


class BrokerFallbackWarning(UserWarning):
    """The tests' broker is not the one the environment suggested."""


def warn(message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always", BrokerFallbackWarning)  # the suite turns warnings into errors
        warnings.warn(message, BrokerFallbackWarning, stacklevel=3)


def image_unavailable(image: str, pull_timeout_s: float = 120) -> str | None:
    """None when ``image`` is on the engine or was pulled now, else why not."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    client = docker.from_env(timeout=int(pull_timeout_s))
    try:
        client.images.get(image)
        return None
    except ImageNotFound:
        pass
    except DockerException as exc:
        return f"the engine did not answer for {image}: {exc}"
    try:
        client.images.pull(image)
        return None
    except DockerException as exc:
        detail = getattr(exc, "explanation", None) or str(exc)
        return f"{image} is not on the engine and could not be pulled ({str(detail).splitlines()[0][:120]})"
    finally:
        client.close()


def _reaper_or_warning() -> None:
    from testcontainers.core.config import testcontainers_config as config

    if not config.ryuk_disabled and (why := image_unavailable(config.ryuk_image)) is not None:
        warn(f"testcontainers' reaper is off ({why}); the fixture removes its containers itself")
        config.ryuk_disabled = True


@contextlib.contextmanager
def _testcontainers_kafka(image: str = KAFKA_IMAGE) -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    _reaper_or_warning()
    port = free_port()
    container = (
        DockerContainer(image)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        # clients on the host's published port; the broker's own connections (transaction
        # markers) on a listener that resolves inside the container
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,BROKER://:9094,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port},BROKER://localhost:9094")
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_MESSAGE_MAX_BYTES", "16777216")
    )
    try:
        container.start()
        # the published port accepts connections before Kafka does: wait for its metadata
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while not asyncio.run(listed_broker_ids(bootstrap)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{image} did not answer on {port}:\n{container.get_logs()[0].decode()[-2000:]}")
            time.sleep(0.5)
        yield bootstrap
    finally:
        container.stop()


@contextlib.contextmanager
def kafka_for_tests(home: Path, image: str = KAFKA_IMAGE) -> Iterator[str]:
    if bootstrap := os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    if docker_engine_answers():
        if (why := image_unavailable(image)) is None:
            with _testcontainers_kafka(image) as bootstrap:
                yield bootstrap
            return
        warn(f"a Docker engine answers but {why}: the tests use the local broker instead")
    broker = LocalBroker(home)
    state = broker.start()
    try:
        yield state.bootstrap
    finally:
        broker.stop()
