"""The local broker's plans and files, without starting Kafka."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from devtools.broker import (
    BrokerError,
    BrokerState,
    ClusterConfig,
    LocalBroker,
    NodePorts,
    NodeState,
    _cluster_id,
    free_ports,
    require_tool,
    resolve_jars,
    server_properties,
)

THREE_NODES = ClusterConfig(
    "AAAAAAAAAAAAAAAAAAAAAA",
    (NodePorts(1, 9092, 9093), NodePorts(2, 9094, 9095), NodePorts(3, 9096, 9097)),
)


def _props(config: ClusterConfig, node_id: int, data_dir: Path) -> list[str]:
    return server_properties(config, node_id, data_dir).splitlines()


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
    config = ClusterConfig("AAAAAAAAAAAAAAAAAAAAAA", (NodePorts(1, 9092, 9093),))
    props = _props(config, 1, tmp_path)
    for line in (
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "min.insync.replicas=1",
        "group.initial.rebalance.delay.ms=0",
        "node.id=1",
        "controller.quorum.voters=1@127.0.0.1:9093",
        "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
    ):
        assert line in props


def test_three_node_settings_replicate_everything_three_times(tmp_path: Path) -> None:
    for node in THREE_NODES.nodes:
        props = _props(THREE_NODES, node.node_id, tmp_path / f"node-{node.node_id}")
        for line in (
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            "controller.quorum.voters=1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097",
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            f"log.dirs={tmp_path / f'node-{node.node_id}'}",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "message.max.bytes=16777216",
            "group.initial.rebalance.delay.ms=0",
        ):
            assert line in props, line


def test_a_state_shows_every_node_and_bootstraps_from_all_of_them() -> None:
    state = BrokerState("home", "AAAAAAAAAAAAAAAAAAAAAA", (
        NodeState(1, 9092, 9093, None),  # down
        NodeState(2, 9094, 9095, 22),
        NodeState(3, 9096, 9097, 33),
    ))
    assert state.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert [n.node_id for n in state.running] == [2, 3]
    assert (state.pid, state.port, state.controller_port) == (22, 9094, 9095)  # the first node up
    assert state.describe().splitlines()[1:] == [
        "  node 1: down, port 9092",
        "  node 2: pid 22, port 9094",
        "  node 3: pid 33, port 9096",
    ]


def test_saved_config_round_trips(tmp_path: Path) -> None:
    assert ClusterConfig.from_json(THREE_NODES.to_json()) == THREE_NODES
    broker = LocalBroker(tmp_path)
    planned = broker.plan(nodes=3)
    assert broker.saved_config() == planned
    assert LocalBroker(tmp_path).saved_config() == planned


def test_a_new_plan_picks_distinct_free_ports_and_honours_the_asked_port(tmp_path: Path) -> None:
    [asked] = free_ports(1)
    config = LocalBroker(tmp_path).plan(nodes=3, port=asked)
    ports = [p for n in config.nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert config.nodes[0].port == asked
    assert [n.node_id for n in config.nodes] == [1, 2, 3]


def test_a_second_start_plan_reuses_the_saved_ports_and_cluster_id(tmp_path: Path) -> None:
    first = LocalBroker(tmp_path).plan(nodes=3)
    again = LocalBroker(tmp_path).plan()  # what `start()` without arguments runs
    assert again == first
    assert LocalBroker(tmp_path).plan(nodes=3, port=first.nodes[0].port) == first


def test_a_saved_cluster_is_never_reshaped_silently(tmp_path: Path) -> None:
    saved = LocalBroker(tmp_path).plan()
    with pytest.raises(BrokerError, match=r"holds a 1-node cluster, not 3: `streaminfer broker reset`"):
        LocalBroker(tmp_path).plan(nodes=3)
    with pytest.raises(BrokerError, match=rf"serves on port {saved.nodes[0].port}, not 1"):
        LocalBroker(tmp_path).plan(port=1)


def test_a_taken_saved_port_is_an_error_naming_it(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    config = broker.plan()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.nodes[0].port))
        squatter.listen()
        with pytest.raises(BrokerError, match=rf"port {config.nodes[0].port} \(node 1's client listener"):
            broker.start()
    assert broker.saved_config() == config  # not moved


def test_reset_deletes_data_and_saved_config(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    first = broker.plan(nodes=3)
    for node in first.nodes:
        broker.data_dir(node.node_id).mkdir(parents=True)
        (broker.data_dir(node.node_id) / "meta.properties").write_text("cluster.id=x\n")
    (tmp_path / "unrelated.txt").write_text("kept")
    assert broker.reset() is False  # nothing was running
    assert broker.saved_config() is None
    assert not list(tmp_path.glob("node-*"))
    assert (tmp_path / "unrelated.txt").exists()
    assert broker.plan().cluster_id != first.cluster_id


def test_a_new_cluster_starts_from_empty_node_directories(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    stale = broker.data_dir(1)  # data from a cluster whose config is gone
    stale.mkdir(parents=True)
    (stale / "meta.properties").write_text("cluster.id=old\n")
    broker.plan()
    assert not stale.exists()


def test_a_stale_pid_file_naming_another_process_is_not_a_running_node(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    broker.plan()
    broker.node_dir(1).mkdir()
    (broker.node_dir(1) / "kafka.pid").write_text(str(os.getpid()))  # alive, but not Kafka
    assert broker.status() is None
    assert broker.kill_node(1) is False


def test_single_node_controls_name_a_node_of_the_cluster(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    with pytest.raises(BrokerError, match="no cluster in"):
        broker.start_node(1)
    broker.plan(nodes=3)
    with pytest.raises(BrokerError, match=r"no node 4: this cluster's nodes are 1..3"):
        broker.kill_node(4)


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = [_cluster_id() for _ in range(2000)]  # about 1 in 64 raw ids starts with "-"
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
