"""``streaminfer worker`` processes, as deployed, on the local broker.

``drain``: workers read a backlog with a group of their own; throughput from the results'
own timings, counted from when every worker has started producing. Several workers read a
copy of the backlog held in an open transaction until the group is stable with all of
them (``held_copy``), so none drains it alone while another is still starting.

``latency``: the worker runs first and input arrives at a fixed rate (open loop: the rate
does not slow down when the worker falls behind); end to end from each event's own
timestamp to its result produced, and each stage of the way from the result's timings,
after a warm-up second that is reported apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import create_outputs, default_model, fresh_settings, held_copy, worker_processes
from bench.machine_load import MachineLoad
from consumers.results_reader import read_results
from pipeline.latency import latency_summary_ms
from pipeline.topics import create_topics, wait_for_group
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from schemas.models import Frame, Result, Transaction


def _models(kind: str) -> dict[str, str]:
    """Only the model the kind needs: the worker starts sooner."""
    return {"frame_model": default_model("frame") if kind == "frame" else "none",
            "transaction_model": default_model("transaction") if kind == "transaction" else "none"}


async def collect_results(bootstrap: str, topic: str, n: int, timeout_s: float = 600.0) -> list[Result]:
    """The results on ``topic`` once it holds ``n`` records. Until then only its end offsets
    are asked for, a few times a second: reading and decoding every result as it comes took
    0.7 of a core beside a worker draining transactions on a 2-core machine, a load no
    deployment puts next to its workers (and the Kafka ceiling does not carry). Every
    figure comes from the results' own timings, so reading them afterwards changes none."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not (partitions := consumer.partitions_for_topic(topic)):
                await consumer._client.force_metadata_update()  # a group-less consumer asks for no topic itself
                await asyncio.sleep(0.1)
            tps = [TopicPartition(topic, p) for p in partitions]
            while True:
                held = sum((await consumer.end_offsets(tps)).values())
                if held >= n:
                    break
                await asyncio.sleep(0.25)
    finally:
        await consumer.stop()
    results: list[Result] = []
    stream = read_results(bootstrap=bootstrap, topic=topic, follow=False)
    async with contextlib.aclosing(stream):
        async for result in stream:
            results.append(result)
    return results


async def drain(bootstrap: str, topic: str, kind: str, n: int, *, workers: int = 1, cwd: str | None = None,
                **overrides: Any) -> float:
    """Results per second of ``workers`` worker processes draining ``n`` records of ``topic``
    (more than one: a copy of it held back until all of them are in the group)."""
    async with contextlib.AsyncExitStack() as stack:
        release = None
        if workers > 1:
            topic, release = await stack.enter_async_context(held_copy(bootstrap, topic))
        settings = fresh_settings(bootstrap, "drain", [topic], **(_models(kind) | overrides))
        await create_outputs(settings)
        await stack.enter_async_context(worker_processes(settings, workers, cwd=cwd))
        if release is not None:
            await wait_for_group(settings, settings.group_id, workers, timeout_s=120)
            await release()
        results = await collect_results(bootstrap, settings.results_topic, n)
    firsts: dict[str, int] = {}
    for r in results:
        firsts[r.worker_id] = min(firsts.get(r.worker_id, r.timings.received_ms), r.timings.received_ms)
    start = max(firsts.values())  # every worker is reading by now
    steady = sorted(r.timings.produced_ms for r in results if r.timings.produced_ms >= start)
    return steady_rate(steady)


def steady_rate(times_ms: list[int]) -> float:
    """Items per second between the items at a tenth and at nine tenths of ``times_ms``
    (sorted): the steady part of a drain, measured as the Kafka ceiling's is."""
    first, last = len(times_ms) // 10, len(times_ms) - 1 - len(times_ms) // 10
    if last <= first:
        return len(times_ms) / max(0.001, (times_ms[-1] - times_ms[0]) / 1000)
    return (last - first) / max(0.001, (times_ms[last] - times_ms[first]) / 1000)


def stages(results: list[Result]) -> dict[str, dict[str, float | None]]:
    """Latency of each stage, from the results' timings (ms)."""
    t = [r.timings for r in results]
    return {
        "end_to_end": latency_summary_ms([x.produced_ms - x.event_ms for x in t]),
        "to_worker": latency_summary_ms([x.received_ms - x.event_ms for x in t]),
        "batching": latency_summary_ms([x.batch_closed_ms - x.received_ms for x in t]),
        "queued": latency_summary_ms([x.inference_start_ms - x.batch_closed_ms for x in t]),
        "inference": latency_summary_ms([x.inference_end_ms - x.inference_start_ms for x in t]),
        "produce": latency_summary_ms([x.produced_ms - x.inference_end_ms for x in t]),
    }


def p99_bound_ms(max_wait_ms: float, stage_ms: dict[str, dict[str, float | None]]) -> float | None:
    """The latency target's bound on the end-to-end p99 at half of capacity: the window's
    wait, twice the batch's inference p99, and 25 ms for the rest (None: no inference seen)."""
    inference_p99 = stage_ms["inference"]["p99"]
    return None if inference_p99 is None else round(max_wait_ms + 2 * inference_p99 + 25, 1)


def paced_events(kind: str, n: int, seed: int) -> Iterator[Frame | Transaction]:
    """Lazily made, so each event's timestamp is its send time."""
    if kind == "frame":
        return iter_video_frames("synthetic", stream_id=f"paced-{seed}", count=n)
    return iter_synthetic_transactions(n, seed=seed)


async def latency(bootstrap: str, kind: str, rate_per_s: float, seconds: float, *, cwd: str | None = None,
                  seed: int = 11, warmup_s: float = 1.0, **overrides: Any) -> dict[str, Any]:
    """One worker; ``kind`` events at ``rate_per_s`` for ``warmup_s`` and then ``seconds``:
    stage latencies and mean batch size of the events after the warm-up, and apart those
    of the warm-up (a worker's first second runs code paths for the first time: the first
    produce to each partition, the first commit, a batch size's first forward)."""
    # a topic of its own: another run's events would be read as this one's
    settings = fresh_settings(bootstrap, "latency", [f"bench-paced-{kind}-{uuid.uuid4().hex[:8]}"],
                              **(_models(kind) | overrides))
    await create_topics(settings, [*settings.input_topics, settings.results_topic, settings.dead_letter_topic], 4)
    n = max(1, int(rate_per_s * (warmup_s + seconds)))
    async with worker_processes(settings, 1, cwd=cwd):
        await wait_for_group(settings, settings.group_id, 1, timeout_s=120)
        with MachineLoad() as load:  # while events are sent and served: broker, worker and publisher
            feeder = asyncio.create_task(publish(paced_events(kind, n, seed), bootstrap=bootstrap,
                                                 topic=settings.input_topics[0], rate_per_s=rate_per_s,
                                                 progress=False))
            results = await collect_results(bootstrap, settings.results_topic, n)
            report = await feeder
    since = min(r.timings.event_ms for r in results) + warmup_s * 1000
    steady = [r for r in results if r.timings.event_ms >= since] or results
    warm = [r for r in results if r.timings.event_ms < since]
    steady_stages = stages(steady)
    return {"rate_per_s": rate_per_s, "sent_per_s": round(report.rate_per_s, 1), "n": len(steady),
            "mean_batch_size": round(sum(r.batch_size for r in steady) / len(steady), 2),
            "stages_ms": steady_stages, "p99_bound_ms": p99_bound_ms(settings.max_wait_ms, steady_stages),
            "machine_busy_cores": load.summary(),
            "warmup": {"seconds": warmup_s, "n": len(warm), "stages_ms": stages(warm) if warm else None}}
