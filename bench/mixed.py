"""``streaminfer bench mixed``: transaction latency while frames flow through the same worker.

One worker process with default settings reads a frames topic and a transactions topic;
transactions arrive at ``txn_rate`` and frames at ``frame_rate`` for ``seconds``. The
figures are end to end, from each event's own timestamp to its result being produced, per
kind. ``--worker-cwd`` runs the worker from another checkout, so two versions are measured
side by side in one run (repetitions interleaved: this machine is noisy).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from bench.common import worker_processes
from bench.pipeline_runs import collect_results, p99_bound_ms, stages
from pipeline.config import WorkerSettings
from pipeline.latency import latency_summary_ms
from pipeline.results_view import end_to_end_ms
from pipeline.topics import create_topics, wait_for_group
from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from schemas.models import Result


async def run_mixed_once(bootstrap: str, seconds: float, txn_rate: float, frame_rate: float,
                         worker_cwd: str | None = None, warmup_s: float = 1.0) -> dict[str, Any]:
    """Per kind, the end-to-end latency of the events after the first ``warmup_s``, and
    apart (``warmup``) those of it: as in the suite's latency runs, a worker's first second
    runs its code paths for the first time, and at 5,000 transactions/s its backlog made
    most of a 15 s run's p99 (the warm-up second's own p99 400-1,000 ms, one-offs of
    2026-12-04)."""
    suffix = uuid.uuid4().hex[:8]
    frames_topic, txns_topic = f"mixed-frames-{suffix}", f"mixed-txns-{suffix}"
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap, input_topics=f"{frames_topic},{txns_topic}",
        results_topic=f"mixed-out-{suffix}", dead_letter_topic=f"mixed-dlq-{suffix}", group_id=f"mixed-{suffix}",
        worker_id="mixed",
    )
    await create_topics(settings, [*settings.input_topics, settings.results_topic, settings.dead_letter_topic], 4)
    n_txns, n_frames = int(txn_rate * seconds), int(frame_rate * seconds)
    e2e: dict[str, list[int]] = {"transaction": [], "frame": []}
    warm: dict[str, list[int]] = {"transaction": [], "frame": []}
    async with worker_processes(settings, cwd=worker_cwd):
        await wait_for_group(settings, settings.group_id, 1, timeout_s=120)
        feeders = [
            asyncio.create_task(publish(iter_synthetic_transactions(n_txns, seed=7), bootstrap=bootstrap,
                                        topic=txns_topic, rate_per_s=txn_rate, progress=False)),
            asyncio.create_task(publish(iter_video_frames("synthetic", stream_id="mixed", count=n_frames),
                                        bootstrap=bootstrap, topic=frames_topic, rate_per_s=frame_rate,
                                        progress=False)),
        ]
        await asyncio.gather(*feeders)
        # read once they are all there, not as they come: a reader decoding every result
        # beside the worker takes a share of the same CPUs (as in the drains); the figures
        # come from the results' own timings either way
        results = await collect_results(bootstrap, settings.results_topic, n_txns + n_frames)
    since = min(r.timings.event_ms for r in results) + warmup_s * 1000
    steady: dict[str, list[Result]] = {"transaction": [], "frame": []}
    for result in results:
        (e2e if result.timings.event_ms >= since else warm)[result.kind].append(end_to_end_ms(result))
        if result.timings.event_ms >= since:
            steady[result.kind].append(result)
    # the target's bound on each kind's p99, from that kind's own batches' inference p99
    return {kind: latency_summary_ms(values) | {
                "n": len(values), "bound_ms": p99_bound_ms(settings.max_wait_ms, stages(steady[kind])),
                "warmup": latency_summary_ms(warm[kind]) | {"n": len(warm[kind])}}
            for kind, values in e2e.items()}


def run_mixed(bootstrap: str, out: Path, seconds: float, txn_rate: float, frame_rate: float, reps: int,
              baseline_cwd: str | None) -> dict[str, Any]:
    contenders = {"this checkout": None} | ({f"worker from {baseline_cwd}": baseline_cwd} if baseline_cwd else {})
    report: dict[str, Any] = {"seconds": seconds, "txn_rate": txn_rate, "frame_rate": frame_rate, "runs": []}
    for rep in range(reps):
        for name, cwd in contenders.items():
            figures = asyncio.run(run_mixed_once(bootstrap, seconds, txn_rate, frame_rate, cwd))
            report["runs"].append({"contender": name, "rep": rep, **figures})
            t, f = figures["transaction"], figures["frame"]
            print(f"{name:<40} rep {rep}: transactions e2e p50 {t['p50']:.0f} ms p99 {t['p99']:.0f} ms "
                  f"(bound {_ms(t['bound_ms'])}) max {t['max']} ms | frames e2e p50 {f['p50']:.0f} ms "
                  f"p99 {f['p99']:.0f} ms (bound {_ms(f['bound_ms'])}) "
                  f"(warm-up second: p99 {_ms(t['warmup']['p99'])} and {_ms(f['warmup']['p99'])} ms)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
