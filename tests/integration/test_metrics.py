"""A worker's /metrics, /healthz and /readyz on the real broker."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess

# enough that the backlog outlasts several scrapes at max batch size 8: in CI, 1,000 drained
# between two scrapes 0.2 s apart; 20,000 took about 7 s (some 70 scrapes) here
N = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_count_what_was_sent_and_readyz_turns_ready(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap, partitions=4)
    asyncio.run(publish(iter_synthetic_transactions(N, seed=5), bootstrap=kafka_bootstrap, topic=topics.inputs))
    port = _free_port()
    worker = WorkerProcess("metrics", topics.worker_env() | {
        "STREAMINFER_METRICS_PORT": str(port), "STREAMINFER_FRAME_MODEL": "none",
        "STREAMINFER_MAX_BATCH_SIZE": "8",  # many batches: the backlog drains over several scrapes
    }, tmp_path)
    try:
        deadline = time.monotonic() + 60
        readiness: list[int] = []
        while time.monotonic() < deadline and readiness[-1:] != [200]:
            try:
                readiness.append(_get(port, "/readyz")[0])
            except OSError:
                pass  # not listening yet: models loading
            time.sleep(0.05)
        # ready once the group has assigned partitions (the 503 before it is a unit test:
        # here the assignment can beat the first request)
        assert readiness[-1] == 200 and set(readiness) <= {503, 200}, (readiness, worker.log()[-2000:])
        assert _get(port, "/healthz")[0] == 200
        drains = []
        while time.monotonic() < deadline:
            status, text = _get(port, "/metrics")
            drains.append(_value(text, "streaminfer_seconds_to_drain"))
            if _value(text, "streaminfer_results_total") >= N:
                break
            time.sleep(0.1)
        results = collect_results(kafka_bootstrap, topics.results, N, timeout_s=60)
        assert len(results) == N
        assert _get(port, "/readyz") == (200, "ready\n")
        status, text = _get(port, "/metrics")
    finally:
        assert worker.stop() == 0
    assert status == 200
    assert _value(text, "streaminfer_records_consumed_total") == N
    assert _value(text, "streaminfer_results_total") == N
    assert "# HELP streaminfer_dead_letters_total " in text  # the family is there, with no reason yet
    assert not re.search(r"^streaminfer_dead_letters_total", text, re.MULTILINE)
    assert _value(text, "streaminfer_batch_items_total", f'{{lane="{topics.inputs}"}}') == N
    assert _value(text, "streaminfer_end_to_end_seconds_count", '{kind="transaction"}') == N
    lane = f'lane="{topics.inputs}"'
    reasons = re.findall(rf'^streaminfer_batches_total{{{re.escape(lane)},reason="(\w+)"}}', text, re.MULTILINE)
    batches = sum(_value(text, "streaminfer_batches_total", f'{{{lane},reason="{r}"}}') for r in reasons)
    # every batch ran through the model once (no dead letters here)
    assert batches > 0 and _value(text, "streaminfer_inference_seconds_count", f"{{{lane}}}") == batches
    # each batch's outcomes were acked once: one produce observation per batch, none slower than the sum
    assert _value(text, "streaminfer_produce_seconds_count") == batches
    assert 0 < _value(text, "streaminfer_produce_seconds_sum") < 60
    assert 1 <= _value(text, "streaminfer_batch_size_cap", f'{{lane="{topics.inputs}"}}') <= 8
    assert _value(text, "streaminfer_seconds_to_drain") == 0.0
    assert sum(_value(text, "streaminfer_consumer_lag", f'{{partition="{p}",topic="{topics.inputs}"}}')
               for p in range(4)) == 0
    # the signal an autoscaler reads rose with the backlog and fell as it drained, to 0 (NaN
    # before the first fetch came back, +Inf before progress; a partition fetched but not
    # polled yet is not counted, so the first finite sample may already be low)
    finite = [d for d in drains if math.isfinite(d)]
    assert len(finite) >= 2 and max(finite) > 0 and finite[-1] < max(finite), drains
