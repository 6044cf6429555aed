"""Stand-in base images, for offline CI only.

The project's ``Dockerfile`` starts ``FROM python:3.11-slim`` and ``docker-compose.yml`` runs
``apache/kafka:<pinned>``. Where neither is on the engine and neither can be pulled (this
project's CI reaches package registries, not container registries), this builds images under
the same names from what CI can reach, so the project's files run unchanged:

- ``python:3.11-slim``: Debian bookworm (``debootstrap``) with its ``python3`` (3.11) in a venv
  on ``PATH``, trusting this machine's CA bundle so ``pip`` works inside ``docker build``;
- ``apache/kafka:<pinned>``: the jars the local broker resolves from Maven Central on Debian's
  JRE, configured from ``KAFKA_*`` variables the way the official image documents, with the
  ``/opt/kafka/bin`` tools the compose healthcheck calls;
- ``prom/prometheus:<pinned>`` (the compose ``observability`` profile): Debian's
  ``prometheus`` package with the official image's entrypoint, user and data directory.
  Grafana has no Debian package and no stand-in: its dashboard's queries are checked
  against this Prometheus instead.

A machine that has or can pull the real images never builds these. Built images are saved
under ``~/.cache/streaminfer/docker``, keyed by their inputs, and loaded from there by a fresh
engine.

    python -m tests.docker.standins      # each image: present, pulled, loaded or built
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from devtools.broker import default_cache_dir, resolve_jars
from devtools.kafka_version import KAFKA_IMAGE, KAFKA_VERSION
from tests.integration.kafka_fixture import image_unavailable

PYTHON_IMAGE = "python:3.11-slim"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"  # as docker-compose.yml pins it (a test keeps them equal)
LABEL = "org.streaminfer.standin"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))


def cache_dir() -> Path:
    """Beside the local broker's jar cache: ``~/.cache/streaminfer/docker``."""
    return default_cache_dir().parent / "docker"


def docker(
    *args: str, check: bool = True, timeout: float | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=check, text=True, capture_output=True, timeout=timeout, env=env)


def image_label(image: str) -> str | None:
    """The stand-in label of a present image: "" for a real image, None when absent."""
    out = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', image, check=False)
    if out.returncode != 0:
        return None
    return out.stdout.strip().replace("<no value>", "")


# -- what goes into each image --------------------------------------------------------

_PYTHON_DOCKERFILE = """\
FROM {base}
RUN apt-get update -q \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv \\
    && rm -rf /var/lib/apt/lists/* \\
    && python3 -m venv /usr/local/python \\
    && ln -s /usr/local/python/bin/python3 /usr/local/bin/python
# after apt: the ca-certificates package would write its own bundle over this machine's
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
LABEL {label}={digest}
CMD ["python3"]
"""

_KAFKA_DOCKERFILE = """\
FROM {base}
RUN apt-get update -q \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \\
    && rm -rf /var/lib/apt/lists/* \\
    && useradd --uid 1000 --create-home appuser \\
    && mkdir -p /opt/kafka/config/docker \\
    && chown -R appuser /opt/kafka/config/docker
COPY libs/ /opt/kafka/libs/
COPY bin/ /opt/kafka/bin/
COPY config/ /opt/kafka/config/
COPY run /etc/kafka/docker/run
ENV PATH=/opt/kafka/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
USER appuser
WORKDIR /opt/kafka
EXPOSE 9092
LABEL {label}={digest}
CMD ["/etc/kafka/docker/run"]
"""

_PROMETHEUS_DOCKERFILE = """\
FROM {base}
RUN apt-get update -q \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
LABEL {label}={digest}
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""

# The official image's run script: KAFKA_* variables become server properties (strip the
# prefix, lower-case, "___" -> "-", "__" -> "_", "_" -> "."); with none set it runs the
# default single-node KRaft config. CLUSTER_ID formats the log dir once.
_RUN = r"""#!/bin/bash
set -euo pipefail
skip=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS"
skip+=" KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL"
skip+=" KAFKA_JMX_HOSTNAME "
props=/opt/kafka/config/server.properties
generated=/opt/kafka/config/docker/server.properties
: > "$generated"
for name in $(compgen -e | grep '^KAFKA_' || true); do
  case "$skip" in *" $name "*) continue ;; esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
        | sed -e 's/___/\x01/g' -e 's/__/\x02/g' -e 's/_/./g' -e 's/\x01/-/g' -e 's/\x02/_/g')
  printf '%s=%s\n' "$key" "${!name}" >> "$generated"
done
if [ -s "$generated" ]; then
  grep -q '^log\.dirs=' "$generated" || echo "log.dirs=/tmp/kraft-combined-logs" >> "$generated"
  props="$generated"
fi
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted \
  --cluster-id "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" --config "$props" >/dev/null
exec /opt/kafka/bin/kafka-server-start.sh "$props"
"""

_RUN_CLASS = """#!/bin/bash
# kafka-run-class.sh of the stand-in: the Maven Central jars on Debian's JRE
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} ${KAFKA_JVM_PERFORMANCE_OPTS:-} ${KAFKA_OPTS:-} \\
  "-Dlog4j2.configurationFile=${KAFKA_LOG4J_CONFIG:-/opt/kafka/config/tools-log4j2.properties}" \\
  -cp '/opt/kafka/libs/*' "$@"
"""

_TOOLS = {
    "kafka-server-start.sh": (
        'export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"\n'
        "export KAFKA_LOG4J_CONFIG=/opt/kafka/config/log4j2.properties\n"
        'exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"'
    ),
    "kafka-storage.sh": 'exec /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool "$@"',
    "kafka-topics.sh": 'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.TopicCommand "$@"',
    "kafka-broker-api-versions.sh": (
        'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.BrokerApiVersionsCommand "$@"'
    ),
    "kafka-consumer-groups.sh": (
        'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"'
    ),
    "kafka-console-producer.sh": 'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.ConsoleProducer "$@"',
    "kafka-console-consumer.sh": (
        'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.consumer.ConsoleConsumer "$@"'
    ),
    "kafka-get-offsets.sh": 'exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.GetOffsetShell "$@"',
}

_DEFAULT_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=/tmp/kraft-combined-logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
"""

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = {target}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
"""


def _write_python_context(ctx: Path) -> None:
    shutil.copyfile(CA_BUNDLE, ctx / "ca-certificates.crt")


def _write_kafka_context(ctx: Path) -> None:
    shutil.copytree(resolve_jars(), ctx / "libs")
    (ctx / "bin").mkdir()
    for name, body in {"kafka-run-class.sh": _RUN_CLASS.removeprefix("#!/bin/bash\n"), **_TOOLS}.items():
        script = ctx / "bin" / name
        script.write_text(f"#!/bin/bash\n{body}\n")
        script.chmod(0o755)
    (ctx / "config").mkdir()
    (ctx / "config" / "server.properties").write_text(_DEFAULT_PROPERTIES)
    (ctx / "config" / "log4j2.properties").write_text(_LOG4J2.format(target="SYSTEM_OUT", level="INFO"))
    (ctx / "config" / "tools-log4j2.properties").write_text(_LOG4J2.format(target="SYSTEM_ERR", level="WARN"))
    (ctx / "run").write_text(_RUN)
    (ctx / "run").chmod(0o755)


STANDINS: dict[str, tuple[str, Callable[[Path], None]]] = {
    PYTHON_IMAGE: (_PYTHON_DOCKERFILE, _write_python_context),
    KAFKA_IMAGE: (_KAFKA_DOCKERFILE, _write_kafka_context),
    PROMETHEUS_IMAGE: (_PROMETHEUS_DOCKERFILE, lambda ctx: None),
}


def digest(image: str) -> str:
    """What a stand-in is built from: this file, and the CA bundle or the jars' names and sizes."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(image.encode())
    if image == PYTHON_IMAGE:
        h.update(CA_BUNDLE.read_bytes())
    elif image == KAFKA_IMAGE:
        h.update(KAFKA_VERSION.encode())
        for jar in sorted(resolve_jars().iterdir()):
            h.update(f"{jar.name} {jar.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


# -- building -------------------------------------------------------------------------


def base_image() -> str:
    """A minimal Debian bookworm imported from ``debootstrap``, cached as a tarball."""
    h = hashlib.sha256(f"{SUITE} {MIRROR} minbase".encode()).hexdigest()[:16]
    tag = f"streaminfer-standin/debian:{SUITE}-{h}"
    if image_label(tag) is not None:
        return tag
    tarball = cache_dir() / f"debian-{SUITE}-minbase-{h}.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is needed to build stand-in images: apt-get install debootstrap")
        with tempfile.TemporaryDirectory(prefix="standin-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _log(f"debootstrap {SUITE} (about a minute)")
            subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR],
                           check=True, capture_output=True)
            tarball.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["tar", "-C", str(rootfs), "-cf", f"{tarball}.tmp", "."], check=True)
            os.replace(f"{tarball}.tmp", tarball)
    with tarball.open("rb") as f:
        subprocess.run(["docker", "import", "-", tag], stdin=f, check=True, capture_output=True)
    return tag


def build(image: str) -> None:
    dockerfile, write_context = STANDINS[image]
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        ctx = Path(tmp)
        write_context(ctx)
        (ctx / "Dockerfile").write_text(dockerfile.format(base=base_image(), label=LABEL, digest=digest(image)))
        _log(f"building stand-in {image}")
        out = docker("build", "-t", image, str(ctx), check=False, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        if out.returncode != 0:
            raise RuntimeError(f"building stand-in {image} failed:\n{(out.stdout + out.stderr)[-4000:]}")


def ensure(image: str) -> str:
    """Make ``image`` present: returns how ("present", "pulled", "loaded", "built")."""
    want = digest(image)
    label = image_label(image)
    if label == "" or label == want:
        return "present"
    if label is None and image_unavailable(image) is None:
        return "pulled"
    saved = cache_dir() / f"standin-{image.replace('/', '_').replace(':', '_')}-{want}.tar"
    if saved.exists() and docker("load", "-q", "-i", str(saved), check=False).returncode == 0:
        if image_label(image) == want:
            return "loaded"
    build(image)
    saved.parent.mkdir(parents=True, exist_ok=True)
    for older in saved.parent.glob(saved.name.replace(want, "*")):
        older.unlink()  # stand-ins of earlier inputs
    docker("save", "-o", f"{saved}.tmp", image)
    os.replace(f"{saved}.tmp", saved)
    return "built"


def _log(message: str) -> None:
    print(f"standins: {message}", file=sys.stderr, flush=True)


def ensure_all() -> dict[str, str]:
    """Each base image and how it came to be there."""
    return {image: ensure(image) for image in STANDINS}


def main() -> int:
    for image, how in ensure_all().items():
        _log(f"{image}: {how}" + (" (a stand-in, for offline CI only)" if how in ("loaded", "built") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
