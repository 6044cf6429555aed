"""A local KRaft Apache Kafka on 127.0.0.1 (one node, or a few), run from jars resolved from Maven Central.

This is the no-Docker path for users and tests: Java 17+ and Maven are the only
requirements. The jar cache is shared by every home in ``~/.cache/streaminfer``; a
cluster's state lives in one directory (``--home``)::

    cluster.json     what a restart needs: the cluster id and every node's ports
    node-<id>/       server.properties, log4j2.properties, kafka.pid, broker.log,
                     kafka-server.log and data/ (the node's log dir)

Invariants:

- ``node-<id>/data`` always belongs to the cluster in ``cluster.json``: a new cluster
  (a home without ``cluster.json``) starts from empty node directories, and a data dir
  is formatted once, when it has no ``meta.properties`` yet.
- A restart reuses ``cluster.json``: same ports, same cluster id, same topics and data.
  A saved port held by another process is a ``BrokerError`` naming it, never a silent move.
- Only ``reset`` forgets a cluster: it stops it and deletes the node directories and
  ``cluster.json``; the next start is a new cluster with a new id and new ports.
- Node ids are 1..N. Every node is ``broker,controller`` and every node votes; the
  replication settings let the cluster lose one node (replication 3 and
  ``min.insync.replicas=2`` from three nodes up, 1 and 1 for a single node).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from devtools.kafka_version import KAFKA_VERSION, LOG4J_VERSION, SCALA_VERSION

HOST = "127.0.0.1"
CONFIG_FILE = "cluster.json"
PID_FILE = "kafka.pid"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
SINGLE_NODE_HEAP_MB = 512
MULTI_NODE_HEAP_MB = 384  # three JVMs share a small machine
METADATA_REQUEST_TIMEOUT_MS = 5000
POLL_INTERVAL_S = 0.25


class BrokerError(RuntimeError):
    """The local broker could not be resolved, started or reached."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streaminfer" / f"kafka-{KAFKA_VERSION}"


def default_home() -> Path:
    return Path(os.environ.get("STREAMINFER_BROKER_HOME", ".streaminfer/broker"))


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streaminfer</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` was not found on PATH: {hint}")
    return path


def java_major_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    for token in text.split():
        token = token.strip('"')
        if token[:1].isdigit():
            head = token.split(".")[0]
            major = int(token.split(".")[1]) if head == "1" else int(head.split("-")[0])
            return major
    raise BrokerError(f"could not read the Java version from: {text.strip()!r}")


def resolve_jars(cache_dir: Path | None = None) -> Path:
    """Download the broker's jars once with Maven; return the directory holding them."""
    cache_dir = cache_dir or default_cache_dir()
    libs = cache_dir / "libs"
    marker = cache_dir / "resolved.ok"
    pom_text = _POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION)
    pom = cache_dir / "pom.xml"
    if marker.exists() and pom.exists() and pom.read_text() == pom_text:
        return libs
    mvn = require_tool("mvn", "install Apache Maven (e.g. `apt-get install maven`) to resolve Kafka")
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    pom.write_text(pom_text)
    tmp = cache_dir / "libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise BrokerError(
            f"Maven could not resolve Kafka {KAFKA_VERSION}:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(KAFKA_VERSION)
    return libs


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, none of them in ``avoid``.

    Every picked port stays bound until all are picked, so the kernel cannot hand out
    the same one twice.
    """
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_taken(port: int) -> bool:
    """Whether a socket listens on (or otherwise holds) 127.0.0.1:``port``.

    SO_REUSEADDR, as the JVM's server sockets use, so connections of a stopped broker
    lingering in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


# -- the cluster a home runs ----------------------------------------------------------


@dataclass(frozen=True)
class NodePorts:
    """One node's two listeners on 127.0.0.1, fixed for the life of its cluster."""

    node_id: int
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener on node 1 beside its PLAINTEXT one, to try (and test) the clients'
    security settings: TLS with a PEM keystore, users for PLAIN, SCRAM-SHA-256 and -512.

    ``keystore``: a PEM file holding the broker's unencrypted private key and its
    certificate chain. ``users``: name -> password, stored in the node's properties and
    its SCRAM credentials (a local, throwaway broker: not how to keep production secrets).
    """

    port: int
    keystore: str
    users: tuple[tuple[str, str], ...]

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class ClusterConfig:
    """Everything a restart needs, saved as ``cluster.json``. Node ids are 1..N, in order."""

    cluster_id: str
    nodes: tuple[NodePorts, ...]
    secure: SecureListener | None = None

    @classmethod
    def new(cls, nodes: int, port: int = 0, secure: tuple[Path, dict[str, str]] | None = None) -> ClusterConfig:
        """A new cluster: a new id and free ports; ``port``, when not 0, is node 1's client port;
        ``secure`` (a PEM keystore and users) adds a SASL_SSL listener on a port of its own."""
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {nodes}")
        if secure is not None and nodes != 1:
            raise BrokerError("a SASL_SSL listener is offered on single-node clusters only")
        picked = free_ports(2 * nodes + 1, avoid={port})
        clients, controllers = picked[:nodes], picked[nodes:2 * nodes]
        if port:
            clients[0] = port
        listener = None
        if secure is not None:
            keystore, users = secure
            if not users:
                raise BrokerError("a SASL_SSL listener needs at least one user")
            listener = SecureListener(picked[-1], str(Path(keystore).resolve()), tuple(sorted(users.items())))
        return cls(
            _cluster_id(),
            tuple(NodePorts(i + 1, clients[i], controllers[i]) for i in range(nodes)),
            listener,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        raw = json.loads(text)
        secure = raw.get("secure")
        return cls(
            str(raw["cluster_id"]), tuple(NodePorts(**node) for node in raw["nodes"]),
            SecureListener(secure["port"], secure["keystore"], tuple((u, p) for u, p in secure["users"]))
            if secure else None,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    def node(self, node_id: int) -> NodePorts:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no node {node_id}: this cluster's nodes are 1..{len(self.nodes)}")

    @property
    def replication_factor(self) -> int:
        return min(3, len(self.nodes))

    @property
    def min_insync_replicas(self) -> int:
        """One below the replication factor (at least 1): ``acks=all`` survives one lost node."""
        return max(1, self.replication_factor - 1)

    @property
    def quorum_voters(self) -> str:
        return ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)


def server_properties(config: ClusterConfig, node_id: int, data_dir: Path) -> str:
    """One node's ``server.properties``: broker and controller, every node a voter."""
    node = config.node(node_id)
    replication, min_isr = config.replication_factor, config.min_insync_replicas
    secure = config.secure if node_id == 1 else None
    extra = f",SASL_SSL://{HOST}:{secure.port}" if secure else ""
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={config.quorum_voters}",
        f"listeners=PLAINTEXT://{HOST}:{node.port}{extra},CONTROLLER://{HOST}:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{node.port}{extra}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        + (",SASL_SSL:SASL_SSL" if secure else ""),
        "inter.broker.listener.name=PLAINTEXT",
        *(_secure_properties(secure) if secure else []),
        f"log.dirs={data_dir}",
        "num.partitions=1",
        f"default.replication.factor={replication}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replication}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replication}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=4",
        f"share.coordinator.state.topic.replication.factor={replication}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        "message.max.bytes=16777216",
        "",
    ])


def _secure_properties(secure: SecureListener) -> list[str]:
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in secure.users)
    prefix = "listener.name.sasl_ssl"
    return [
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f"{plain_users};",
        *(f"{prefix}.{mechanism}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
          for mechanism in ("scram-sha-256", "scram-sha-512")),
        f"{prefix}.ssl.keystore.type=PEM",
        f"{prefix}.ssl.keystore.location={secure.keystore}",
    ]


def _scram_arguments(secure: SecureListener | None) -> list[str]:
    """``kafka-storage format`` arguments that store each user's SCRAM credentials."""
    if secure is None:
        return []
    return [arg for name, password in secure.users for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]


# -- what runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    node_id: int
    port: int
    controller_port: int
    pid: int | None  # None: the node is down

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class BrokerState:
    """A cluster and each of its nodes, up or down; ``LocalBroker.status`` only returns
    one with at least one node up.

    ``bootstrap`` lists every node, so it stays the same string across restarts and
    single-node failures. ``pid``, ``port`` and ``controller_port`` are those of the
    first node that is up: in single-node mode, the node.
    """

    home: str
    cluster_id: str
    nodes: tuple[NodeState, ...]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def running(self) -> tuple[NodeState, ...]:
        return tuple(node for node in self.nodes if node.pid is not None)

    @property
    def pid(self) -> int:
        return next(node.pid for node in self.nodes if node.pid is not None)

    @property
    def port(self) -> int:
        return self.running[0].port

    @property
    def controller_port(self) -> int:
        return self.running[0].controller_port

    def describe(self) -> str:
        """A headline with the bootstrap, then one line per node."""
        lines = [f"kafka running at {self.bootstrap} (cluster {self.cluster_id}, home {self.home})"]
        for node in self.nodes:
            up = f"pid {node.pid}" if node.pid is not None else "down"
            lines.append(f"  node {node.node_id}: {up}, port {node.port}")
        return "\n".join(lines)


class LocalBroker:
    """Start, stop and query the KRaft cluster (one node unless asked) whose state lives under ``home``.

    Synchronous: call it from a thread, not from inside a running event loop (with
    several nodes, starting asks the cluster for its metadata with ``asyncio.run``).
    """

    def __init__(self, home: Path | None = None, cache_dir: Path | None = None) -> None:
        self.home = (home or default_home()).resolve()
        self.cache_dir = cache_dir
        # node id -> the process this object started, kept so it is reaped, not leaked
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- layout

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    def node_dir(self, node_id: int) -> Path:
        return self.home / f"node-{node_id}"

    def data_dir(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "data"

    def log_file(self, node_id: int = 1) -> Path:
        """The node's stdout and stderr; its log4j output is ``kafka-server.log`` beside it."""
        return self.node_dir(node_id) / "broker.log"

    def _props_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / PID_FILE

    # -- saved config

    def saved_config(self) -> ClusterConfig | None:
        """The cluster saved in this home, or None when there is none yet (or since ``reset``)."""
        try:
            return ClusterConfig.from_json(self.config_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise BrokerError(
                f"{self.config_file} is unreadable ({exc}); `streaminfer broker reset` starts a new cluster"
            ) from exc

    def plan(self, nodes: int | None = None, port: int = 0,
             secure: tuple[Path, dict[str, str]] | None = None) -> ClusterConfig:
        """The cluster this home runs: the saved one, else a new one, saved at once.

        ``nodes`` (default 1) and ``port`` (node 1's client port; 0 for a free one) shape
        a new cluster only. A saved cluster is never changed here: asking it for another
        node count or port is a ``BrokerError`` that points at ``reset``.
        """
        saved = self.saved_config()
        if saved is None:
            self._wipe()  # node directories without a saved config belong to no cluster
            config = ClusterConfig.new(nodes or 1, port, secure)
            self.home.mkdir(parents=True, exist_ok=True)
            self.config_file.write_text(config.to_json())
            return config
        if nodes is not None and nodes != len(saved.nodes):
            raise BrokerError(
                f"{self.home} holds a {len(saved.nodes)}-node cluster, not {nodes}: "
                "`streaminfer broker reset` it first (that deletes its data)"
            )
        if secure is not None and saved.secure is None:
            raise BrokerError(
                f"{self.home} holds a cluster without a SASL_SSL listener: "
                "`streaminfer broker reset` it first (that deletes its data)"
            )
        if port and port != saved.nodes[0].port:
            raise BrokerError(
                f"{self.home} serves on port {saved.nodes[0].port}, not {port}: "
                "`streaminfer broker reset` it first (that deletes its data)"
            )
        return saved

    # -- status

    def status(self) -> BrokerState | None:
        """The cluster with each node's pid, or None when no node of it runs."""
        config = self.saved_config()
        if config is None:
            return None
        state = self._state(config)
        return state if state.running else None

    def _state(self, config: ClusterConfig) -> BrokerState:
        nodes = tuple(
            NodeState(n.node_id, n.port, n.controller_port, self._running_pid(n.node_id)) for n in config.nodes
        )
        return BrokerState(str(self.home), config.cluster_id, nodes)

    def _running_pid(self, node_id: int) -> int | None:
        try:
            pid = int(self._pid_file(node_id).read_text())
        except (OSError, ValueError):
            return None
        return pid if _runs_kafka_with(pid, self._props_file(node_id)) else None

    # -- start

    def start(
        self, nodes: int | None = None, port: int = 0, timeout_s: float = START_TIMEOUT_S,
        heap_mb: int | None = None, secure: tuple[Path, dict[str, str]] | None = None,
    ) -> BrokerState:
        """Run every node of this home's cluster (see ``plan``); nodes already up are left alone.

        Returns once every node's client port listens and, with several nodes, the
        cluster's metadata lists every node as a broker. On failure, the nodes this call
        launched are killed again.
        """
        config = self.plan(nodes, port, secure)
        down = [n.node_id for n in config.nodes if self._running_pid(n.node_id) is None]
        if down:
            self._start_nodes(config, down, timeout_s, heap_mb)
        return self._state(config)

    def start_node(
        self, node_id: int, timeout_s: float = START_TIMEOUT_S, heap_mb: int | None = None
    ) -> BrokerState:
        """Run one node of the saved cluster again (after ``stop_node`` or ``kill_node``)."""
        config = self._require_config()
        config.node(node_id)
        if self._running_pid(node_id) is None:
            self._start_nodes(config, [node_id], timeout_s, heap_mb)
        return self._state(config)

    def _start_nodes(
        self, config: ClusterConfig, node_ids: list[int], timeout_s: float, heap_mb: int | None
    ) -> None:
        for node_id in node_ids:
            self._check_ports_free(config.node(node_id))
        java = _java()
        libs = resolve_jars(self.cache_dir)
        for node_id in node_ids:
            self._write_node_files(config, node_id)
        self._format(config, node_ids, java, libs)
        heap = heap_mb or (SINGLE_NODE_HEAP_MB if len(config.nodes) == 1 else MULTI_NODE_HEAP_MB)
        for node_id in node_ids:
            self._launch(node_id, java, libs, heap)
        deadline = time.monotonic() + timeout_s
        try:
            self._await_listening(config, node_ids, deadline)
            if len(config.nodes) > 1:
                self._await_listed(config, node_ids, deadline)
        except BrokerError:
            self._halt(node_ids, timeout_s=0)
            raise

    def _check_ports_free(self, node: NodePorts) -> None:
        for port, listener in ((node.port, "client"), (node.controller_port, "controller")):
            if port_taken(port):
                raise BrokerError(
                    f"port {port} (node {node.node_id}'s {listener} listener, saved in {self.config_file}) "
                    "is in use by another process: free it, or `streaminfer broker reset` for a new cluster "
                    "on new ports"
                )

    def _write_node_files(self, config: ClusterConfig, node_id: int) -> None:
        self.data_dir(node_id).mkdir(parents=True, exist_ok=True)
        self._props_file(node_id).write_text(server_properties(config, node_id, self.data_dir(node_id)))
        self._log4j_file(node_id).write_text(
            _LOG4J2.format(log=self.node_dir(node_id) / "kafka-server.log")
        )

    def _log4j_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "log4j2.properties"

    def _format(self, config: ClusterConfig, node_ids: Iterable[int], java: str, libs: Path) -> None:
        """Format the data dir of each node that has none formatted yet, all at once."""
        fresh = [i for i in node_ids if not (self.data_dir(i) / "meta.properties").exists()]
        runs = {
            node_id: subprocess.Popen(
                [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
                 f"--cluster-id={config.cluster_id}", "-c", str(self._props_file(node_id)),
                 *_scram_arguments(config.secure if node_id == 1 else None)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            )
            for node_id in fresh
        }
        failed = []
        for node_id, run in runs.items():
            output, _ = run.communicate()
            if run.returncode != 0:
                failed.append(f"node {node_id}:\n{output}")
        if failed:
            raise BrokerError("formatting the KRaft log dir failed:\n" + "\n".join(failed))

    def _launch(self, node_id: int, java: str, libs: Path, heap_mb: int) -> None:
        with self.log_file(node_id).open("ab") as log:
            proc = subprocess.Popen(
                [java, f"-Xmx{heap_mb}m", "-Xms128m", "-XX:+UseSerialGC",
                 f"-Dlog4j2.configurationFile={self._log4j_file(node_id)}", "-cp", f"{libs}/*",
                 "kafka.Kafka", str(self._props_file(node_id))],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[node_id] = proc
        self._pid_file(node_id).write_text(str(proc.pid))

    def _await_listening(self, config: ClusterConfig, node_ids: list[int], deadline: float) -> None:
        waiting = list(node_ids)
        while waiting:
            self._raise_if_exited(node_ids)
            waiting = [i for i in waiting if not port_open(HOST, config.node(i).port)]
            if waiting and time.monotonic() > deadline:
                ports = ", ".join(str(config.node(i).port) for i in waiting)
                raise BrokerError(f"Kafka did not listen on {HOST}:{ports} in time:\n{self._tail(waiting[0])}")
            if waiting:
                time.sleep(POLL_INTERVAL_S)

    def _await_listed(self, config: ClusterConfig, node_ids: list[int], deadline: float) -> None:
        """Wait until the cluster's metadata lists every running node as a broker."""
        up = {n.node_id for n in self._state(config).running}
        bootstrap = ",".join(config.node(i).bootstrap for i in sorted(up))
        listed: set[int] = set()
        while not up <= listed:
            self._raise_if_exited(node_ids)
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the cluster at {bootstrap} lists brokers {sorted(listed)} in its metadata, "
                    f"not all of {sorted(up)}:\n{self._tail(min(up - listed))}"
                )
            listed = asyncio.run(listed_broker_ids(bootstrap))
            if not up <= listed:
                time.sleep(POLL_INTERVAL_S)

    def _raise_if_exited(self, node_ids: Iterable[int]) -> None:
        for node_id in node_ids:
            proc = self._procs.get(node_id)
            if proc is not None and proc.poll() is not None:
                raise BrokerError(
                    f"Kafka node {node_id} exited with code {proc.returncode}; last log lines:\n"
                    f"{self._tail(node_id)}"
                )

    # -- stop

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop every running node (SIGTERM to all at once, SIGKILL after ``timeout_s``).

        Data and the saved config stay: the next ``start`` resumes the same cluster.
        True when a node was running.
        """
        config = self.saved_config()
        if config is None:
            return False
        return self._halt([n.node_id for n in config.nodes], timeout_s)

    def stop_node(self, node_id: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop one node like ``stop`` does; True when it was running."""
        self._require_config().node(node_id)
        return self._halt([node_id], timeout_s)

    def kill_node(self, node_id: int) -> bool:
        """SIGKILL one node, a crash with no shutdown at all; True when it was running."""
        self._require_config().node(node_id)
        return self._halt([node_id], timeout_s=0)

    def reset(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the cluster if it runs, then delete its data and saved config.

        The next ``start`` is a new cluster: new id, new ports, no topics. True when a
        node was running.
        """
        stopped = self.stop(timeout_s)
        self._wipe()
        return stopped

    def _halt(self, node_ids: Iterable[int], timeout_s: float) -> bool:
        """SIGTERM the running ones of ``node_ids`` (SIGKILL when ``timeout_s`` is 0), SIGKILL
        whatever still runs after ``timeout_s``, and wait until each has exited."""
        pids = {i: pid for i in node_ids if (pid := self._running_pid(i)) is not None}
        for pid in pids.values():
            os.kill(pid, signal.SIGTERM if timeout_s > 0 else signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(self._exited(i, pid) for i, pid in pids.items()):
            time.sleep(0.1)
        for node_id, pid in pids.items():
            if not self._exited(node_id, pid):
                os.kill(pid, signal.SIGKILL)
            while not self._exited(node_id, pid):
                time.sleep(0.05)
            self._pid_file(node_id).unlink(missing_ok=True)
            self._procs.pop(node_id, None)
        return bool(pids)

    def _exited(self, node_id: int, pid: int) -> bool:
        proc = self._procs.get(node_id)
        if proc is not None and proc.pid == pid:
            return proc.poll() is not None
        _reap(pid)
        return not _pid_alive(pid)

    def _wipe(self) -> None:
        for node_dir in self.home.glob("node-*"):
            if node_dir.is_dir():
                shutil.rmtree(node_dir)
        self.config_file.unlink(missing_ok=True)

    def _require_config(self) -> ClusterConfig:
        config = self.saved_config()
        if config is None:
            raise BrokerError(f"no cluster in {self.home}: `streaminfer broker start` creates one")
        return config

    def _tail(self, node_id: int, lines: int = 30) -> str:
        """The last lines of the node's log4j log and of its stdout/stderr."""
        parts = []
        for path in (self.node_dir(node_id) / "kafka-server.log", self.log_file(node_id)):
            try:
                parts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
            except OSError:
                parts.append(f"--- {path}: (no log)")
        return "\n".join(parts)


async def listed_broker_ids(bootstrap: str) -> set[int]:
    """The node ids the cluster's metadata lists as brokers; empty while it does not answer."""
    from aiokafka.admin import AIOKafkaAdminClient  # here: `streaminfer --help` starts without aiokafka
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=METADATA_REQUEST_TIMEOUT_MS)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return {int(broker["node_id"]) for broker in cluster["brokers"]}
    except (KafkaError, OSError, TimeoutError):
        return set()
    finally:
        await admin.close()


def _java() -> str:
    java = require_tool("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    if (major := java_major_version(java)) < 17:
        raise BrokerError(f"Kafka {KAFKA_VERSION} needs Java 17 or newer; found Java {major}")
    return java


def _cluster_id() -> str:
    """A base64url-encoded 16-byte UUID (22 characters), as KRaft wants.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-": the storage tool's
    argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); it is not serving
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _runs_kafka_with(pid: int, props: Path) -> bool:
    """Whether ``pid`` is alive and runs Kafka with ``props``: a stale pid file's pid may
    since belong to another process. Without /proc (macOS), liveness alone."""
    if not _pid_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return str(props).encode() in args


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
