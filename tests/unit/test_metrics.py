"""The pieces of /metrics that are pure: histogram buckets and the seconds-to-drain signal."""

from __future__ import annotations

import math

import pytest

from pipeline.metrics import Drain, Histogram


def test_histogram_buckets_are_cumulative_with_the_sum() -> None:
    h = Histogram(bounds=(0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.005, 0.05, 3.0):
        h.observe(value)
    assert h.buckets() == [("0.001", 2), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    assert h.n == 5 and math.isclose(h.total, 3.0565)


def test_seconds_to_drain_is_lag_over_the_answering_rate() -> None:
    now = [0.0]
    drain = Drain(clock=lambda: now[0])
    drain.update(0)
    assert drain.seconds(500) == math.inf  # lag and no progress seen yet
    now[0] = 1.0
    drain.update(100)  # 100/s
    assert drain.seconds(500) == 5.0
    now[0] = 2.0
    drain.update(400)  # 300/s, smoothed with 100/s
    assert drain.rate == 200.0 and drain.seconds(400) == 2.0
    assert drain.seconds(0) == 0.0


def test_readyz_is_503_until_the_worker_runs_with_partitions_then_200() -> None:
    import asyncio

    from consumers.testing import MemorySource
    from pipeline.metrics import MetricsServer
    from pipeline.runner import Runner
    from pipeline.worker import Worker
    from producers.testing import MemorySink
    from tests.unit.test_worker_loop import CPU, Scorer, eventually, settings, txn

    async def get(port: int, path: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        status = (await reader.readline()).decode()
        writer.close()
        return status.split(" ", 2)[1]

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        worker = Worker(settings(), Runner({"transaction": Scorer()}, CPU), source, sink)
        server = MetricsServer(worker, host="127.0.0.1", port=0)
        await server.start()
        try:
            assert await get(server.port, "/readyz") == "503"  # models not running, nothing assigned
            assert await get(server.port, "/healthz") == "200"
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            await eventually(lambda: len(sink.on("results")) == 1, "the result")
            assert await get(server.port, "/readyz") == "200"
            assert await get(server.port, "/nothing") == "404"
            stop.set()
            await task
            assert await get(server.port, "/readyz") == "503"  # stopped: not ready any more
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_seconds_to_drain_is_not_a_number_until_every_assigned_partition_s_end_is_known() -> None:
    """Just assigned a backlog, before its first fetch came back, a worker said 0 s to drain."""
    import asyncio

    from aiokafka import TopicPartition

    from consumers.testing import MemorySource
    from pipeline.metrics import WorkerCollector
    from pipeline.runner import Runner
    from pipeline.worker import Worker
    from producers.testing import MemorySink
    from tests.unit.test_worker_loop import CPU, Scorer, eventually, settings, txn

    def drain_value(collector: WorkerCollector) -> float:
        return next(f for f in collector.collect() if f.name == "streaminfer_seconds_to_drain").samples[0].value

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        worker = Worker(settings(), Runner({"transaction": Scorer()}, CPU), source, sink)
        collector = WorkerCollector(worker)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: len(sink.on("results")) == 1, "the result")
        assert drain_value(collector) == 0.0  # every end known, nothing behind
        unfetched = TopicPartition("in", 7)
        await source.assign([unfetched])  # assigned, no end known for it yet
        assert source.highwater(unfetched) is None
        assert math.isnan(drain_value(collector))
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_observing_a_batch_of_values_counts_what_observing_each_counts() -> None:
    values = [0.00005, 0.0001, 0.003, 0.003, 0.7, 45.0, 61.0]
    one_by_one, batch = Histogram(), Histogram()
    for value in values:
        one_by_one.observe(value)
    batch.observe_many(values)
    assert batch.counts == one_by_one.counts and batch.n == one_by_one.n == 7
    assert math.isclose(batch.total, one_by_one.total)
    assert batch.buckets()[-1] == ("+Inf", 7) and batch.buckets()[0] == ("0.0001", 2)


@pytest.mark.parametrize("seed", range(20))
def test_observing_random_batches_counts_what_observing_each_counts(seed: int) -> None:
    import random

    from pipeline.metrics import LATENCY_BUCKETS_S

    rng = random.Random(seed)
    one_by_one, batch = Histogram(), Histogram()
    for _ in range(30):
        values = [rng.choice([rng.choice(LATENCY_BUCKETS_S), rng.uniform(0, 70), rng.expovariate(20), -1.0])
                  for _ in range(rng.randint(0, 300))]  # bounds themselves, and below the first
        for value in values:
            one_by_one.observe(value)
        batch.observe_many(values)
    assert batch.counts == one_by_one.counts and batch.n == one_by_one.n
    assert math.isclose(batch.total, one_by_one.total)
