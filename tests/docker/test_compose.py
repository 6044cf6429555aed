"""`docker compose up`, the way the README tells users to run streaminfer, on a real engine.

One stack for the module, under its own project name, torn down with its volumes at the end:
up with the project's own files; results of the demo producers and of our own transactions
and frames read from the host on localhost:29092; scale 1 -> 3 -> 1 while our input flows,
every input answered; `docker compose stop worker` ends each worker with exit 0 in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from consumers.results_reader import read_results, until
from devtools.broker import port_taken
from pipeline.config import DEFAULT_RESULTS_TOPIC, DEFAULT_TOPICS, DEFAULT_TRANSACTIONS_TOPIC
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from schemas.models import Transaction
from tests.docker.conftest import ARTIFACTS, ROOT, report
from tests.docker.standins import PROMETHEUS_IMAGE

pytestmark = pytest.mark.timeout(1800)

PROJECT = "streaminfer-compose-test"
HOST_BOOTSTRAP = "localhost:29092"
GROUP = "streaminfer-workers"
COMPOSE_FILE = ROOT / "docker-compose.yml"
GPU_FILE = ROOT / "docker-compose.gpu.yml"


def compose(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"docker compose {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def containers(service: str, all_states: bool = False) -> list[str]:
    args = ["ps", "-q", *(["-a"] if all_states else []), service]
    return compose(*args).stdout.split()


def inspect(container: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]  # type: ignore[no-any-return]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``streaminfer ARGS`` on the host, as the README shows it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout, check=True
    )


def healthy(container: str) -> bool:
    """The image's HEALTHCHECK passed: the worker's loop runs (models loaded, clients started)."""
    return bool(inspect(container)["State"].get("Health", {}).get("Status") == "healthy")


def wait_for(what: str, condition: object, timeout_s: float, every_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(every_s)
    logs = compose("logs", "--no-color", "--tail", "40", check=False).stdout[-6000:]
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def stack(base_images: None) -> Iterator[None]:
    compose("--profile", "observability", "down", "-v", "--remove-orphans", check=False)
    for port, what in ((29092, "the broker"), (8080, "the viewer"), (9090, "Prometheus")):
        if port_taken(port):
            pytest.skip(f"port {port} is taken on this host: the compose file publishes {what} there")
    started = time.monotonic()
    compose("build", timeout=1800)
    report("worker image build", f"{time.monotonic() - started:.0f}s")
    try:
        compose("up", "-d", timeout=900)
        yield
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose.log").write_text(compose("logs", "--no-color", "--timestamps", check=False).stdout)
        compose("--profile", "observability", "down", "-v", "--remove-orphans", timeout=300)
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert not left and not volumes, f"down -v left containers {left} and volumes {volumes}"


# -- host-side Kafka helpers ------------------------------------------------------------


async def _group_assignments() -> tuple[str, list[list[tuple[str, list[int]]]]]:
    """The worker group's state and each member's assignment, as the coordinator sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=HOST_BOOTSTRAP)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([GROUP])
        group = response.groups[0]
        members = [ConsumerProtocolMemberAssignment.decode(m[-1]).assignment if m[-1] else [] for m in group[5]]
        return str(group[2]), members
    finally:
        await admin.close()


def group_holds(members: int) -> bool:
    try:
        state, assignments = asyncio.run(_group_assignments())
    except Exception:  # the coordinator may still be loading
        return False
    return state == "Stable" and len(assignments) == members and all(
        sum(len(parts) for _, parts in a) > 0 for a in assignments
    )


async def _topic_partitions() -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=HOST_BOOTSTRAP)
    await admin.start()
    try:
        return {str(t["topic"]): len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


def answers(event_ids: set[str], timeout_s: float) -> Counter[str]:
    """How many results each of ``event_ids`` has on the results topic, reading until all have one."""
    seen: Counter[str] = Counter()

    async def go() -> None:
        stream = read_results(bootstrap=HOST_BOOTSTRAP, topic=DEFAULT_RESULTS_TOPIC, follow=True)
        async with contextlib.aclosing(stream):
            async for result in until(stream, time.monotonic() + timeout_s):
                if result.event_id in event_ids:
                    seen[result.event_id] += 1
                    if len(seen) == len(event_ids):
                        # duplicates come close behind: read on a little to count them
                        async for late in until(stream, time.monotonic() + 3):
                            if late.event_id in event_ids:
                                seen[late.event_id] += 1
                        return

    asyncio.run(go())
    return seen


# -- the tests, in order, on one stack --------------------------------------------------------


def test_image_runs_as_non_root_with_a_healthcheck(stack: None) -> None:
    image = inspect("streaminfer:latest")
    assert image["Config"]["User"] == "streaminfer"
    assert image["Config"]["Healthcheck"]["Test"] == ["CMD", "python", "-m", "pipeline.health"]
    report("streaminfer:latest image size", f"{image['Size'] / 1e9:.2f} GB")
    for container in containers("worker"):
        assert inspect(container)["Config"]["User"] == "streaminfer"


def test_topics_created_and_workers_healthy(stack: None) -> None:
    wait_for("the topics", lambda: set(DEFAULT_TOPICS) <= set(asyncio.run(_topic_partitions())), 180)
    partitions = asyncio.run(_topic_partitions())
    assert all(partitions[t] == 4 for t in DEFAULT_TOPICS), partitions
    workers = containers("worker")
    assert len(workers) == 2  # deploy.replicas in the compose file
    wait_for("both workers healthy", lambda: all(healthy(c) for c in workers), 300)


def test_demo_results_and_our_own_from_the_host(stack: None) -> None:
    # the demo producers' results arrive by themselves
    wait_for("results of the demo producers",
             lambda: re.search(r"summary: [1-9]\d* results", compose("logs", "results").stdout), 240)
    # the README's commands, from the host
    cli("produce", "transactions", "--count", "200", "--seed", "424242", "--bootstrap", HOST_BOOTSTRAP)
    cli("produce", "video", "--source", "synthetic", "--stream-id", "host-camera", "--count", "8",
        "--bootstrap", HOST_BOOTSTRAP)
    wanted = {f"tx-424242-{n}" for n in range(200)} | {f"host-camera/{n}" for n in range(8)}
    got = answers(wanted, timeout_s=300)
    assert set(got) == wanted, f"{len(wanted - set(got))} of {len(wanted)} unanswered"
    lines = cli("results", "--follow", "--bootstrap", HOST_BOOTSTRAP, "--limit", "3").stdout.splitlines()
    assert len(lines) == 3 and all("e2e=" in line for line in lines), lines

    # `docker compose up` alone is a good first sight: one readable line a result, summaries
    logs = compose("logs", "--no-color", "results").stdout
    line = re.compile(r"transaction\s+key=acct-\d+\s+tx-\S+\s+score=\d\.\d{4}\s+e2e=\d+ms worker=\d+ms batch=\d+")
    frame = re.compile(r"frame\s+key=\S+\s+\S+/\d+\s+\S.*\s\d\.\d{3}\s+e2e=\d+ms")
    assert line.search(logs), logs[-2000:]
    assert frame.search(logs), logs[-2000:]
    assert re.search(r"summary: \d+ results in \d+\.\ds \([\d.]+/s\); .*e2e p50 \d+ ms", logs), logs[-2000:]


def test_the_viewer_shows_the_demo_camera_with_labels(stack: None) -> None:
    def demo_camera() -> dict | None:  # type: ignore[type-arg]
        try:
            with urllib.request.urlopen("http://localhost:8080/api/state", timeout=5) as response:
                state = json.loads(response.read())
        except OSError:
            return None
        return next((v for v in state["video"] if v["stream"] == "demo-camera" and v["labels"]), None)

    wait_for("the demo camera on the viewer", lambda: demo_camera() is not None, 240)
    camera = demo_camera()
    assert camera is not None and camera["per_s"] > 0 and camera["p50_ms"] is not None
    with urllib.request.urlopen(f"http://localhost:8080{camera['image']}", timeout=5) as response:
        assert response.headers["Content-Type"] == "image/jpeg" and response.read(3) == b"\xff\xd8\xff"
    with urllib.request.urlopen("http://localhost:8080/", timeout=5) as response:
        assert b"/api/state" in response.read()


def _prometheus(path: str, **params: str) -> dict:  # type: ignore[type-arg]
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"http://localhost:9090/api/v1/{path}?{query}", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_observability_profile_scrapes_every_worker_and_answers_the_dashboard(stack: None) -> None:
    """Prometheus from the profile finds each worker replica by DNS and scrapes it; every
    query of the provisioned Grafana dashboard returns series from them. (Grafana itself
    has no stand-in image offline: its dashboard is checked through its queries.)"""
    config = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert config["prometheus"]["image"] == PROMETHEUS_IMAGE
    assert config["prometheus"]["profiles"] == config["grafana"]["profiles"] == ["observability"]
    compose("--profile", "observability", "up", "-d", "prometheus", timeout=600)
    workers = containers("worker")

    def scraped() -> bool:
        try:
            targets = _prometheus("targets")["data"]["activeTargets"]
        except OSError:
            return False
        return len([t for t in targets if t["health"] == "up"]) == len(workers)

    wait_for(f"Prometheus scraping {len(workers)} workers", scraped, 120)
    # a malformed message, so the dead-letter panel has a reason to show
    asyncio.run(_publish_raw(b"\xc1 not msgpack"))
    dashboard = json.loads((ROOT / "deploy/observability/grafana/dashboards/streaminfer.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]

    def answered(expr: str) -> bool:
        try:
            body = _prometheus("query", query=expr)
        except OSError:
            return False
        return body["status"] == "success" and len(body["data"]["result"]) > 0

    for expr in queries:
        wait_for(f"the dashboard query {expr!r} to return series", lambda e=expr: answered(e), 120)  # type: ignore[misc]
    compose("--profile", "observability", "stop", "prometheus", check=False)


async def _publish_raw(value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=HOST_BOOTSTRAP)
    await producer.start()
    try:
        await producer.send_and_wait(DEFAULT_TRANSACTIONS_TOPIC, value)
    finally:
        await producer.stop()


def test_scale_one_three_one_while_input_flows(stack: None) -> None:
    # our own input only: the demo's frames would queue ahead of it on two cores
    compose("stop", "produce-video", "produce-transactions")
    for container in containers("produce-video", all_states=True) + containers("produce-transactions", all_states=True):
        assert inspect(container)["State"]["ExitCode"] == 0, "a producer did not stop cleanly on SIGTERM"
    compose("up", "-d", "--scale", "worker=1", "worker")
    wait_for("one worker holding every partition", lambda: group_holds(1), 180)

    # transactions at 100/s from before the scale-up until after the scale-down
    published: list[str] = []
    scaled_down = threading.Event()

    def flowing() -> Iterator[Transaction]:
        for t in iter_synthetic_transactions(None, seed=31337):
            if scaled_down.is_set() and len(published) >= 500:
                return
            published.append(t.id)
            yield t

    publishing = threading.Thread(
        target=lambda: asyncio.run(
            publish(flowing(), bootstrap=HOST_BOOTSTRAP, topic=DEFAULT_TRANSACTIONS_TOPIC, rate_per_s=100)
        ),
        daemon=True,
    )
    publishing.start()
    time.sleep(5)
    compose("up", "-d", "--scale", "worker=3", "worker")
    wait_for("three workers holding partitions", lambda: group_holds(3), 240)
    time.sleep(5)
    assert publishing.is_alive()
    compose("up", "-d", "--scale", "worker=1", "worker")
    wait_for("one worker holding every partition again", lambda: group_holds(1), 240)
    time.sleep(5)
    assert publishing.is_alive()
    scaled_down.set()
    publishing.join(timeout=60)
    assert not publishing.is_alive(), "publishing did not end"

    txns = published
    got = answers(set(txns), timeout_s=300)
    missing = len(txns) - len(got)
    duplicates = sum(got.values()) - len(got)
    report(f"scale 1 -> 3 -> 1 ({len(txns)} transactions at 100/s)", f"{missing} missing, {duplicates} duplicates")
    assert missing == 0


def test_stop_ends_workers_with_exit_0_in_the_grace_period(stack: None) -> None:
    compose("up", "-d", "--scale", "worker=2", "worker")
    workers = containers("worker")
    assert len(workers) == 2
    grace_s = 30  # stop_grace_period of the worker service
    assert yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker"]["stop_grace_period"] == f"{grace_s}s"
    wait_for("both workers running", lambda: all(healthy(c) for c in workers), 300)
    started = time.monotonic()
    compose("stop", "worker", timeout=120)
    took = time.monotonic() - started
    for container in workers:
        state = inspect(container)["State"]
        assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert took < grace_s, f"docker compose stop worker took {took:.0f}s"
    report("docker compose stop worker", f"{took:.1f}s, exit codes 0")


def test_gpu_override_merges_and_reserves_the_device() -> None:
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "-f", str(GPU_FILE), "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    worker = json.loads(out.stdout)["services"]["worker"]
    assert worker["environment"]["STREAMINFER_DEVICE"] == "cuda"
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert worker["environment"]["STREAMINFER_KAFKA_BOOTSTRAP"] == "kafka:9092"  # the base file's, kept
