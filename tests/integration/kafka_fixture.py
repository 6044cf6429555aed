"""Where the tests' real Kafka broker comes from.

1. ``STREAMINFER_KAFKA_BOOTSTRAP``: an existing cluster.
2. testcontainers with the ``apache/kafka`` image, when a Docker engine answers a ping.
3. Otherwise the project's own single-node KRaft broker from Maven Central jars.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.broker import LocalBroker, free_port, port_open
from pipeline.kafka_version import KAFKA_IMAGE


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


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_MESSAGE_MAX_BYTES", "16777216")
    )
    container.start()
    try:
        deadline = time.monotonic() + 90
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{KAFKA_IMAGE} did not listen on {port}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        container.stop()


@contextlib.contextmanager
def kafka_for_tests(home: Path) -> Iterator[str]:
    if bootstrap := os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP"):
        yield bootstrap
    elif docker_engine_answers():
        with _testcontainers_kafka() as bootstrap:
            yield bootstrap
    else:
        broker = LocalBroker(home)
        state = broker.start()
        try:
            yield state.bootstrap
        finally:
            broker.stop()
