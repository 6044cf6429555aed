"""A single-node KRaft Apache Kafka on 127.0.0.1, run from jars resolved from Maven Central.

This is the no-Docker path for users and tests: Java 17+ and Maven are the only
requirements. State lives in one directory (``--home``): the jar cache is shared across
brokers in ``~/.cache/streaminfer``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.kafka_version import KAFKA_VERSION, LOG4J_VERSION, SCALA_VERSION


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
    if marker.exists():
        return libs
    mvn = require_tool("mvn", "install Apache Maven (e.g. `apt-get install maven`) to resolve Kafka")
    cache_dir.mkdir(parents=True, exist_ok=True)
    pom = cache_dir / "pom.xml"
    pom.write_text(_POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class BrokerState:
    pid: int
    port: int
    controller_port: int
    home: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


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


class LocalBroker:
    """Start, stop and query one KRaft broker whose state lives under ``home``."""

    def __init__(self, home: Path | None = None, cache_dir: Path | None = None) -> None:
        self.home = (home or default_home()).resolve()
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[bytes] | None = None  # kept so it is reaped, not leaked

    @property
    def _state_file(self) -> Path:
        return self.home / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def status(self) -> BrokerState | None:
        try:
            state = BrokerState(**json.loads(self._state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _pid_alive(state.pid):
            return None
        return state

    def start(self, port: int = 0, timeout_s: float = 90.0, heap_mb: int = 512) -> BrokerState:
        running = self.status()
        if running is not None:
            return running
        java = require_tool("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
        if (major := java_major_version(java)) < 17:
            raise BrokerError(f"Kafka {KAFKA_VERSION} needs Java 17 or newer; found Java {major}")
        libs = resolve_jars(self.cache_dir)
        port = port or free_port()
        controller_port = free_port()
        data = self.home / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        props = self.home / "server.properties"
        props.write_text(self._server_properties(port, controller_port, data))
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.home / "kafka-server.log"))
        classpath = f"{libs}/*"
        fmt = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={_cluster_id()}", "-c", str(props), "--ignore-formatted"],
            capture_output=True, text=True, check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting the KRaft log dir failed:\n{fmt.stdout}{fmt.stderr}")
        with self.log_file.open("wb") as log:
            proc = subprocess.Popen(
                [java, f"-Xmx{heap_mb}m", "-Xms128m", "-XX:+UseSerialGC",
                 f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                 "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc
        state = BrokerState(proc.pid, port, controller_port, str(self.home))
        self._state_file.write_text(json.dumps(state.__dict__))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {proc.returncode}; last log lines:\n{self._tail()}"
                )
            if port_open("127.0.0.1", port):
                return state
            time.sleep(0.25)
        self.stop()
        raise BrokerError(f"Kafka did not listen on 127.0.0.1:{port} within {timeout_s}s:\n{self._tail()}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        state = self.status()
        if state is None:
            self._state_file.unlink(missing_ok=True)
            return False
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(state.pid):
            _reap(state.pid)
            time.sleep(0.1)
        if _pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
            _reap(state.pid)
        self._state_file.unlink(missing_ok=True)
        if self._proc is not None and self._proc.pid == state.pid:
            self._proc.wait()
            self._proc = None
        return True

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @staticmethod
    def _server_properties(port: int, controller_port: int, data: Path) -> str:
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "message.max.bytes=16777216",
            "",
        ])


def _cluster_id() -> str:
    """A base64url-encoded 16-byte UUID (22 characters), as KRaft wants.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-": the storage tool's
    argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
