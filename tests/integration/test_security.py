"""TLS and SASL against a real broker: the project's local KRaft node with a SASL_SSL
listener, its certificate signed by a CA made in the test (openssl), users for PLAIN and
SCRAM. Worker, producer, results reader and the admin commands get in with the right
settings; a wrong password or an untrusted certificate ends each at once with exit 4 and
one line saying why, not a retry until the outage deadline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import LocalBroker
from tests.integration.workers import WorkerProcess, wait_until
from tests.tls import Pki, make_pki

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("openssl") is None,
    reason="the SASL_SSL broker is the project's local KRaft node (Java) with certificates made by openssl",
)

USER, PASSWORD = "alice", "alice-secret-1"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    """(SASL_SSL bootstrap, certificates) of a throwaway single-node broker."""
    root = tmp_path_factory.mktemp("sasl-ssl")
    pki = make_pki(root / "pki")
    broker = LocalBroker(root / "broker")
    broker.start(secure=(pki.keystore, {USER: PASSWORD}))
    config = broker.saved_config()
    assert config is not None and config.secure is not None
    try:
        yield config.secure.bootstrap, pki
    finally:
        broker.reset(timeout_s=30)


def _env(bootstrap: str, cafile: Path, mechanism: str = "SCRAM-SHA-256", password: str = PASSWORD) -> dict[str, str]:
    return {
        "STREAMINFER_KAFKA_BOOTSTRAP": bootstrap, "STREAMINFER_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMINFER_SASL_MECHANISM": mechanism, "STREAMINFER_SASL_USERNAME": USER,
        "STREAMINFER_SASL_PASSWORD": password, "STREAMINFER_SSL_CAFILE": str(cafile),
        # far beyond the test's patience: a refusal must not wait for the outage deadline
        "STREAMINFER_BROKER_OUTAGE_DEADLINE_S": "600",
    }


def _cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **env})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_sasl_mechanism_gets_in_over_tls(secure_broker: tuple[str, Pki], mechanism: str) -> None:
    bootstrap, pki = secure_broker
    topic = f"sec-{mechanism.lower()}"
    env = _env(bootstrap, pki.ca, mechanism)
    created = _cli(env, "topics", "create", "--topic", topic, "--partitions", "1", "--replication", "1")
    assert created.returncode == 0, created.stderr
    lag = _cli(env, "lag", "--group", "nobody", "--topic", topic, "--json")
    assert lag.returncode == 0, lag.stderr
    assert json.loads(lag.stdout)["partitions"][0]["end"] == 0


def test_worker_producer_and_results_reader_over_sasl_ssl(secure_broker: tuple[str, Pki], tmp_path: Path) -> None:
    bootstrap, pki = secure_broker
    env = _env(bootstrap, pki.ca)
    names = {"inputs": "sec-transactions", "results": "sec-results", "dead": "sec-dead-letters"}
    for topic in names.values():
        created = _cli(env, "topics", "create", "--topic", topic, "--partitions", "2", "--replication", "1")
        assert created.returncode == 0, created.stderr
    produced = _cli(env, "produce", "transactions", "--count", "200", "--topic", names["inputs"])
    assert produced.returncode == 0, produced.stderr
    worker = WorkerProcess("secure-worker", env, tmp_path, [
        "--input-topics", names["inputs"], "--results-topic", names["results"],
        "--dead-letter-topic", names["dead"], "--group-id", "sec-workers", "--frame-model", "none",
    ])
    try:
        got: list[dict[str, object]] = []

        def all_answered() -> bool:
            done = _cli(env, "results", "--topic", names["results"], "--json", "--limit", "201", timeout_s=60)
            assert done.returncode == 0, done.stderr
            got[:] = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            return len(got) >= 200

        wait_until(all_answered, 120, "200 results over SASL_SSL", [worker])
        assert len(got) == 200 and len({r["event_id"] for r in got}) == 200
        assert all(r["status"] == "ok" and r["kind"] == "transaction" for r in got)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert PASSWORD not in worker.log()


@pytest.mark.parametrize("command", ["worker", "produce", "results", "lag"])
def test_a_wrong_password_ends_the_command_at_once_with_exit_4(secure_broker: tuple[str, Pki], command: str) -> None:
    bootstrap, pki = secure_broker
    env = _env(bootstrap, pki.ca, password="not-the-password")
    started = time.monotonic()
    done = _cli(env, *_COMMANDS[command], timeout_s=90)
    took = time.monotonic() - started
    assert done.returncode == 4, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("streaminfer: fatal: Kafka refused the credentials"), done.stderr
    assert "Authentication failed" in last and "not-the-password" not in done.stderr + done.stdout
    assert took < 60, f"{command} took {took:.0f}s to give up"


@pytest.mark.parametrize("command", ["worker", "produce", "results", "lag"])
def test_an_untrusted_broker_certificate_ends_the_command_at_once_with_exit_4(
    secure_broker: tuple[str, Pki], command: str
) -> None:
    bootstrap, pki = secure_broker
    env = _env(bootstrap, pki.other_ca)  # trusts a CA that never signed the broker's certificate
    done = _cli(env, *_COMMANDS[command], timeout_s=90)
    assert done.returncode == 4, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"streaminfer: fatal: TLS to Kafka at {bootstrap} failed:"), done.stderr
    assert "certificate" in last and "ssl_cafile" in last


def test_a_plaintext_client_is_not_let_into_the_sasl_ssl_listener(secure_broker: tuple[str, Pki]) -> None:
    """A client left on PLAINTEXT (the default) against the secure port gives up at its
    deadline rather than hanging: the broker never answers it in plaintext."""
    bootstrap, _ = secure_broker
    done = _cli({"STREAMINFER_KAFKA_BOOTSTRAP": bootstrap, "STREAMINFER_BROKER_OUTAGE_DEADLINE_S": "5"},
                "worker", "--frame-model", "none", "--input-topics", "sec-transactions", timeout_s=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("streaminfer: fatal: the Kafka cluster has been unreachable")


_COMMANDS = {
    "worker": ["worker", "--frame-model", "none", "--input-topics", "sec-transactions", "--group-id", "sec-bad"],
    "produce": ["produce", "transactions", "--count", "5", "--topic", "sec-transactions"],
    "results": ["results", "--topic", "sec-results", "--limit", "1"],
    "lag": ["lag", "--group", "sec-workers", "--topic", "sec-transactions"],
}
