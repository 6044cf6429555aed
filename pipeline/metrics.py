"""What a running worker exposes: Prometheus text at ``/metrics``, ``/healthz``, ``/readyz``.

Counters are read from the worker's own ``WorkerStats`` when scraped (nothing extra on the
hot path); latency histograms are this module's ``Histogram`` (a bisect and an increment
per observation) rendered by a custom collector. The HTTP server runs on the worker's
event loop: if the loop is stuck, ``/healthz`` does not answer, which is what a liveness
probe should see.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). The
autoscaling signal is ``streaminfer_seconds_to_drain``: consumer lag over the rate at which
this worker has been answering records.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from pipeline.http_server import HttpServer

if TYPE_CHECKING:
    from pipeline.worker import Worker

log = logging.getLogger("streaminfer.metrics")

# sub-millisecond to a minute: a batch of small transactions takes tens of microseconds
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    """Cumulative-bucket histogram, cheap enough to observe per record."""

    bounds: Sequence[float] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def observe_many(self, values: Sequence[float]) -> None:
        """``observe`` for each of ``values``: one call a batch, and no bytecode a value
        (sorted, then cut at the bounds; a batch's latencies fill a few buckets)."""
        ordered, counts, placed = sorted(values), self.counts, 0
        for i, bound in enumerate(self.bounds):
            if placed == len(ordered):
                break
            upto = bisect.bisect_right(ordered, bound, placed)  # those at most ``bound``: bucket i
            counts[i] += upto - placed
            placed = upto
        counts[-1] += len(ordered) - placed
        self.total += sum(ordered)
        self.n += len(ordered)

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, list[tuple[str, float]]()
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        return out


@dataclass
class LaneMetrics:
    items: int = 0
    batches: dict[str, int] = field(default_factory=dict)  # close reason -> batches
    wait_s: Histogram = field(default_factory=Histogram)  # first item in -> batch closed
    inference_s: Histogram = field(default_factory=Histogram)
    # batches prepared ahead of their model (frames): preprocessing on the preparation pool
    preprocess_s: Histogram = field(default_factory=Histogram)


class Drain:
    """Records answered per second, smoothed over scrapes, for the seconds-to-drain signal."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, answered: int) -> float:
        now = self._clock()
        if self._last is not None and now > self._last[0]:
            rate = (answered - self._last[1]) / (now - self._last[0])
            self.rate = rate if self.rate == 0 else 0.5 * self.rate + 0.5 * rate
        self._last = (now, answered)
        return self.rate

    def seconds(self, lag: int) -> float:
        if lag <= 0:
            return 0.0
        return lag / self.rate if self.rate > 0 else math.inf


class WorkerCollector:
    """Renders one worker's state as Prometheus metric families when scraped."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.drain = Drain()

    def collect(self) -> Iterator[Any]:
        w = self.worker
        stats = w.stats
        yield _counter("records_consumed", "records polled from the input topics", stats.consumed)
        yield _counter("results", "results delivered (skipped_stale included)", stats.results)
        dead = CounterMetricFamily("streaminfer_dead_letters", "dead letters delivered, by reason",
                                   labels=["reason"])
        for reason, count in sorted(stats.dead_letter_reasons.items()):
            dead.add_metric([reason], count)
        yield dead
        yield _counter("skipped_stale", "frames answered skipped_stale (over max_frame_age_ms)",
                       stats.skipped_stale)
        yield _counter("produce_retries", "result sends retried through a broker outage", stats.produce_retries)
        yield _counter("dropped_after_revoke", "in-flight records dropped after a rebalance (read again "
                       "by the partition's next owner)", stats.dropped_after_revoke)
        items = CounterMetricFamily("streaminfer_batch_items", "items run through each lane's model",
                                    labels=["lane"])
        batches = CounterMetricFamily("streaminfer_batches", "batches closed, by lane and close reason "
                                      "(mean batch size = items / batches)", labels=["lane", "reason"])
        cap = GaugeMetricFamily("streaminfer_batch_size_cap", "the lane's batch size cap (adaptive: learned)",
                                labels=["lane"])
        wait = HistogramMetricFamily("streaminfer_batch_wait_seconds", "first item in to batch closed",
                                     labels=["lane"])
        inference = HistogramMetricFamily("streaminfer_inference_seconds",
                                          "a batch on the model thread (forward and postprocess; "
                                          "preprocess too where it is not prepared ahead)", labels=["lane"])
        preprocess = HistogramMetricFamily("streaminfer_preprocess_seconds",
                                           "a batch prepared ahead of its model on the preparation pool (frames)",
                                           labels=["lane"])
        for lane, m in w.lane_metrics().items():
            items.add_metric([lane], m.items)
            for reason, count in sorted(m.batches.items()):
                batches.add_metric([lane, reason], count)
            cap.add_metric([lane], w.lane_cap(lane))
            wait.add_metric([lane], m.wait_s.buckets(), m.wait_s.total)
            inference.add_metric([lane], m.inference_s.buckets(), m.inference_s.total)
            preprocess.add_metric([lane], m.preprocess_s.buckets(), m.preprocess_s.total)
        yield from (items, batches, cap, wait, inference, preprocess)
        e2e = HistogramMetricFamily("streaminfer_end_to_end_seconds",
                                    "event timestamp to result handed to the producer", labels=["kind"])
        for kind, histogram in sorted(w.end_to_end.items()):
            e2e.add_metric([kind], histogram.buckets(), histogram.total)
        yield e2e
        produce = HistogramMetricFamily("streaminfer_produce_seconds",
                                        "a batch's results and dead letters handed to the producer until all acked")
        produce.add_metric([], w.produce_s.buckets(), w.produce_s.total)
        yield produce
        yield GaugeMetricFamily("streaminfer_inflight_records", "records polled and not yet answered",
                                value=w.in_flight())
        lag = GaugeMetricFamily("streaminfer_consumer_lag", "records behind the end of each assigned partition",
                                labels=["topic", "partition"])
        lags = w.lags()
        for (topic, partition), behind in sorted(lags.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        self.drain.update(stats.results + stats.dead_letters)
        # NaN while an assigned partition's end is not known yet (its first fetch has not come
        # back): a worker just assigned a backlog said 0 s to drain there
        yield GaugeMetricFamily("streaminfer_seconds_to_drain",
                                "consumer lag / the rate this worker answers records "
                                "(+Inf: lag and no progress; NaN: lag not known yet)",
                                value=self.drain.seconds(sum(lags.values())) if w.lag_known() else math.nan)
        yield GaugeMetricFamily("streaminfer_ready", "1 when models are loaded and partitions assigned",
                                value=1.0 if w.ready() else 0.0)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"streaminfer_{name}", doc, value=value)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (0: any free port), on this event loop."""

    def __init__(self, worker: Worker, host: str = "0.0.0.0", port: int = 9400) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(worker))
        self._http = HttpServer(lambda path, _query: self._answer(path), host, port)
        self._host = host

    @property
    def port(self) -> int:
        return self._http.port

    async def start(self) -> None:
        await self._http.start()
        log.info("metrics and probes on http://%s:%d/metrics, /healthz, /readyz", self._host, self.port)

    async def stop(self) -> None:
        await self._http.stop()

    def _answer(self, path: str) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            return "200 OK", generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/healthz":  # answering at all means the event loop runs
            return "200 OK", b"ok\n", text
        if path == "/readyz":
            if self.worker.ready():
                return "200 OK", b"ready\n", text
            return "503 Service Unavailable", b"not ready: no partitions assigned yet\n", text
        return "404 Not Found", b"try /metrics, /healthz or /readyz\n", text
