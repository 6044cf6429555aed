"""Build a worker from settings and run it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch

from consumers.kafka_source import KafkaSource
from pipeline.config import WorkerSettings
from pipeline.exceptions import ConfigurationError, ModelError
from pipeline.health import heartbeat
from pipeline.kafka_access import check_access
from pipeline.models import Model, load_model, resolve_device
from pipeline.runner import Runner
from pipeline.worker import Worker, WorkerStats
from producers.sinks import KafkaSink, max_request_bytes
from producers.transactional import PartitionTransactions
from schemas.models import InputKind

log = logging.getLogger("streaminfer.worker")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


SMALL_MACHINE_CPUS = 2


def lane_threads(lanes: int, cpus: int | None = None, *, frames_only: bool = False) -> int:
    """Intra-op threads for each lane's model thread when ``--torch-threads`` is 0: the CPUs
    this process may use less one, shared by the lanes; at least one. The CPU kept out is
    the event loop's (Kafka and per-record Python, what bounds small messages), the
    preparation pool's and, on a small machine, the broker's: an intra-op thread that
    loses its core to them stalls the operator it is in.

    The exception, ``frames_only``: a single lane whose models all preprocess on the pool
    (frames), on a machine of ``SMALL_MACHINE_CPUS`` or fewer, gets every CPU, and its
    batches are then preprocessed in the model thread (``prepares_ahead``), between
    forwards. On 2 CPUs, one-off interleaved 400-frame drains: 55.4 frames/s median (47.3-58.8)
    against 46.9 (44.7-48.8) on one thread with the pool, and 47.7 (44.5-60.8) on two
    threads with the pool beside them (README, Batching)."""
    if cpus is None:
        cpus = available_cpus()
    if frames_only and lanes == 1 and cpus <= SMALL_MACHINE_CPUS:
        return cpus
    return max(1, (cpus - 1) // max(1, lanes))


def lane_streams(streams: int, threads: int, lane_cpus: int, *, frames_only: bool) -> tuple[int, int]:
    """(model threads per lane, intra-op threads of each) from ``--model-streams`` and
    ``--torch-threads`` (0: chosen here) and the CPUs a lane has (``lane_threads``).

    A frame-only worker on a CPU runs one model thread per CPU of its lane, each one batch
    at a time on one intra-op thread, rather than one model thread with every CPU's
    intra-op thread on each batch: the intra-op threads of one operator wait for each other
    at its end, so any of them losing its core (to the event loop, the broker) stalls them
    all, and small operators split in two gain little. EfficientNet-Lite0 (frozen graph,
    decoding included, one-off script, 2026-12-04, three interleaved runs): 131 frames/s
    on two model threads of one intra-op thread at batch 2, against 79 on one of two
    threads. Any other worker runs one model thread per lane: transactions are bound by
    the event loop, not the model."""
    if not streams:
        streams = max(1, lane_cpus // (threads or 1)) if frames_only else 1
    if not threads:
        threads = max(1, lane_cpus // streams)
    return streams, threads


def prepares_ahead(threads: int, cpus: int | None = None) -> bool:
    """Whether frame batches are preprocessed ahead of their model on the preparation pool:
    not when a lane's intra-op threads take every CPU, where a preparation thread would
    take a core from one of them (the batch is then preprocessed in the model thread)."""
    if cpus is None:
        cpus = available_cpus()
    return threads < cpus


def prepare_threads(cpus: int | None = None) -> int:
    """Threads of the runner's preparation pool when ``--prepare-threads`` is 0: a quarter of
    the CPUs, 1 to 4. One already overlaps a batch's decoding with the model running the one
    before; more split a batch's frames between them (OpenCV releases the GIL)."""
    if cpus is None:
        cpus = available_cpus()
    return max(1, min(4, cpus // 4))


def build_runner(settings: WorkerSettings, models: Mapping[InputKind, Model], device: torch.device) -> Runner:
    """The runner of ``models`` with its model threads, intra-op threads and preparation
    chosen for this machine (``lane_threads``, ``lane_streams``, ``prepares_ahead``)."""
    frames_only = all(getattr(model, "preprocess_in_pool", False) for model in models.values())
    streams, threads = lane_streams(settings.model_streams, settings.torch_threads,
                                    lane_threads(len(set(settings.input_topics)), frames_only=frames_only),
                                    frames_only=frames_only and device.type == "cpu")
    ahead = streams == 1 and prepares_ahead(threads)  # several model threads each preprocess their own batch
    log.info("models %s on %s: %d model thread(s) per lane, %d intra-op thread(s) each, frames prepared %s",
             {k: f"{m.name}@{m.version}" for k, m in models.items()}, device, streams, threads,
             "ahead on the pool" if ahead else "in the model thread")
    return Runner(models, device, threads_per_lane=threads, acceleration=settings.acceleration(),
                  prepare_threads=settings.prepare_threads or prepare_threads(), prepare_ahead=ahead,
                  streams=streams)


def build_worker(settings: WorkerSettings) -> Worker:
    """Load models up front so a bad model file fails at start-up with its name and problem."""
    models: dict[InputKind, Model] = {}
    for kind, spec in (("frame", settings.frame_model), ("transaction", settings.transaction_model)):
        model = load_model(spec, cast(InputKind, kind))
        if model is not None:
            models[cast(InputKind, kind)] = model
    if not models:
        raise ModelError("no model configured: set a frame or transaction model")
    if settings.tracing == "otel":
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            raise ConfigurationError("--tracing otel needs OpenTelemetry: pip install 'streaminfer[otel]'") from None
    device = resolve_device(settings.device)
    try:
        runner = build_runner(settings, models, device)
    except ValueError as exc:  # a precision the device cannot run: configuration, exit 2
        raise ModelError(str(exc)) from None
    log.info("worker %s: topics %s -> %s (dead letters: %s)", settings.worker_id, settings.input_topics,
             settings.results_topic, settings.dead_letter_topic)
    source = KafkaSource(
        settings.client_kwargs(), settings.input_topics, group_id=settings.group_id, client_id=settings.worker_id,
        auto_offset_reset=settings.auto_offset_reset, max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms, max_prefetch_bytes=settings.max_prefetch_bytes,
        max_payload_bytes=settings.max_payload_bytes,
    )
    if settings.delivery == "exactly-once":
        transactions = PartitionTransactions(
            settings.client_kwargs(), settings.group_id, client_id=settings.worker_id,
            max_request_size=max_request_bytes(settings.max_payload_bytes),
        )
        return Worker(settings, runner, source, None, transactions=transactions)
    sink = KafkaSink(settings.client_kwargs(), settings.worker_id, settings.max_payload_bytes,
                     linger_ms=settings.producer_linger_ms, batch_bytes=settings.producer_batch_bytes,
                     topics=(settings.results_topic, settings.dead_letter_topic))
    return Worker(settings, runner, source, sink)


GC_YOUNG_THRESHOLD = 100_000


def settle_heap() -> None:
    """Move what start-up made (torch, the models, the clients: hundreds of thousands of
    objects that live as long as the process) out of the cyclic collector's reach. Its
    full collections walk every tracked object: over that heap each stopped the event loop
    for 120-145 ms, 7 of them (0.9 s) while one worker drained 100,000 transactions; frozen,
    10 took 15-19 ms in all. Latency tails and throughput both paid for it.

    The youngest generation is then collected every ``GC_YOUNG_THRESHOLD`` allocations,
    not Python's 700. The count is of allocations less deallocations, and a worker keeps
    almost nothing of a record once its result is out: what it counts is mostly the records
    in flight, which every young collection walks and moves on. At 700 a drain of 100,000
    transactions ran about 1,500 young and 140 middle collections (0.2-0.3 s of its 4 s);
    at 20,000, 27-29 young ones of 4-15 ms (0.11-0.18 s); at 100,000, none, and the
    drains ran at 65.8-69.3k against 61.9-73.8k transactions/s (medians 67.5k and 65.8k,
    four interleaved drains each on the local broker). Garbage that only the collector can
    free (cycles) still starts one once 100,000 objects have piled up: rarer than at
    20,000, and longer (over 100,000 small dicts and lists, 4.1 ms against 0.6 for 20,000)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 1000)


async def run_worker(settings: WorkerSettings) -> WorkerStats:
    """Run until SIGTERM/SIGINT. A signal while the models load is heard (the loop's signal
    handlers are in place first) and acted on once they are loaded: the worker then stops
    before it joins the group, with exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    beat: asyncio.Task[None] | None = None
    try:
        # refused credentials or an untrusted certificate: exit 4 now, not at the outage deadline
        await check_access(settings.client_kwargs())
        worker = build_worker(settings)
        settle_heap()
        # a signal that came while loading sits in the loop's self-pipe: one poll of the
        # selector and the next iteration run its handler
        await asyncio.sleep(0.01)
        if stop.is_set():
            log.info("worker %s stopped before it started", settings.worker_id)
            return worker.stats
        if settings.health_file is not None:
            beat = asyncio.create_task(heartbeat(Path(settings.health_file)))
        if settings.metrics_port is None:
            return await worker.run(stop)
        from pipeline.metrics import MetricsServer

        server = MetricsServer(worker, port=settings.metrics_port)
        await server.start()
        try:
            return await worker.run(stop)
        finally:
            await server.stop()
    finally:
        if beat is not None:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
