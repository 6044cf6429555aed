from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.broker import BrokerError, LocalBroker, require_tool, resolve_jars


def test_missing_java_or_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java, no mvn
    with pytest.raises(BrokerError, match=r"`java` was not found on PATH: install a Java 17"):
        LocalBroker(tmp_path / "home").start()
    with pytest.raises(BrokerError, match=r"`mvn` was not found on PATH: install Apache Maven"):
        resolve_jars(tmp_path / "cache")
    with pytest.raises(BrokerError, match="nope"):
        require_tool("nope", "hint")


def test_status_of_a_broker_never_started_is_none(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    assert broker.status() is None
    assert broker.stop() is False


def test_single_node_settings_keep_internal_topics_at_replication_one(tmp_path: Path) -> None:
    props = LocalBroker._server_properties(9092, 9093, tmp_path)
    for line in (
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
    ):
        assert line in props.splitlines()


def test_cluster_ids_never_look_like_an_option() -> None:
    from pipeline.broker import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]  # about 1 in 64 raw ids starts with "-"
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
