"""W3C trace context through a worker on the real broker: the headers of each input's
result and dead letter continue the input's trace."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.tracing import parse
from producers.transaction_source import iter_synthetic_transactions
from schemas import encode
from schemas.codec import content_type_headers
from tests.integration.conftest import Topics
from tests.integration.workers import WorkerProcess


def _traceparent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{i + 1:016x}-01".encode()


async def _publish(topics: Topics) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap)
    await producer.start()
    try:
        for i, event in enumerate(iter_synthetic_transactions(20, seed=5)):
            headers = [*content_type_headers(), ("traceparent", _traceparent(i)), ("tracestate", f"n={i}".encode())]
            await producer.send_and_wait(topics.inputs, encode(event), key=event.key.encode(),
                                         headers=[] if i == 19 else headers)  # the last one without a context
        await producer.send_and_wait(topics.inputs, b"\xc1 poison", headers=[("traceparent", _traceparent(99))])
    finally:
        await producer.stop()


async def _read_headers(bootstrap: str, topic: str, count: int) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[dict[str, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [dict(r.headers) for r in records]
    finally:
        await consumer.stop()
    return got


def test_results_and_dead_letters_continue_each_input_s_trace(topics: Topics, tmp_path: Path) -> None:
    asyncio.run(_publish(topics))
    worker = WorkerProcess("traced", topics.worker_env(), tmp_path, ["--frame-model", "none"])
    try:
        worker.wait_assigned(topics.partitions)
        results = asyncio.run(_read_headers(topics.bootstrap, topics.results, 20))
        [dead] = asyncio.run(_read_headers(topics.bootstrap, topics.dead_letters, 1))
    finally:
        assert worker.stop() == 0, worker.log()[-2000:]
    traced = [h for h in results if "traceparent" in h]
    assert len(traced) == 19 and len(results) == 20  # the input without a context: a result without one
    by_trace = {parse(list(h.items())).trace_id: h for h in traced}  # type: ignore[union-attr]
    for i in range(19):
        headers = by_trace[f"{i + 1:032x}"]
        context = parse(list(headers.items()))
        assert context is not None and context.parent_id != f"{i + 1:016x}" and context.flags == "01"
        assert headers["tracestate"] == f"n={i}".encode()
    dead_context = parse(list(dead.items()))
    assert dead_context is not None and dead_context.trace_id == f"{100:032x}"
