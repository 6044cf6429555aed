"""``streaminfer bench all``: every contender, interleaved, ratios against the strongest baselines.

The model sweep runs first and picks the model's best batch size and thread count; then,
for each repetition, every throughput contender runs once in turn on the same backlogs
(each with a group of its own), so a noisy minute hurts all of them alike. Latency runs
last, at fractions of the capacity the drains measured, adaptive batching against fixed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import codec, kafka_loops, model_ceiling, pipeline_runs
from bench.common import Progress, backlog, items, machine, spread, spread_text

LOADS = (0.25, 0.5, 1.0, 2.0)
# passes of the Kafka ceiling a repetition, its figure their median (frames: 800 of them
# take as long to move as a worker's drain does, one pass is enough)
CEILING_PASSES = {"transaction": 3, "frame": 1}


def contenders_per_kind(kind: str, baseline_cwd: str | None) -> int:
    """Kafka ceiling, model alone, naive loop, worker, a second worker variant (two workers,
    or one model thread for frames), fixed batching for transactions, and the other checkout's worker when
    given. Not fixed batching for frames: windows of 256 drained them at 0.28-0.52x the
    naive loop's rate (0.15-0.23x the model alone, 2026-12-03), 50 s a repetition; the
    latency part still compares both batchings for frames."""
    return (6 if kind == "transaction" else 5) + (1 if baseline_cwd else 0)


def _throughput(bootstrap: str, kind: str, n: int, naive_n: int, reps: int, best: dict[str, int],
                baseline_cwd: str | None, progress: Progress) -> dict[str, Any]:
    topic = asyncio.run(backlog(bootstrap, kind, items(kind, n)))
    model = model_ceiling.ModelBench(kind, model_ceiling.ITEMS[kind])
    passes: list[list[float]] = []

    def ceiling() -> float:
        """The median of CEILING_PASSES passes over the backlog: a pass of 100,000
        transactions times its steady 80,000 in about 0.6 s, against 1.3 s for a worker,
        and its two repetitions in the recorded run of bd1d206 were 177k and 110k/s."""
        rates = [asyncio.run(kafka_loops.kafka_ceiling(bootstrap, topic, n))
                 for _ in range(CEILING_PASSES[kind])]
        passes.append([round(r, 1) for r in rates])
        return statistics.median(rates)

    contenders: dict[str, Callable[[], float]] = {
        "kafka ceiling (identity, no model)": ceiling,
        f"model alone, best (batch {best['batch_size']}, {best['streams']} x {best['threads']} threads)":
            lambda: model.with_decoding_per_s(best["batch_size"], best["threads"], best["streams"]),
        "naive loop": lambda: asyncio.run(kafka_loops.naive_loop(bootstrap, topic, kind, naive_n)),
        "worker, defaults": lambda: asyncio.run(pipeline_runs.drain(bootstrap, topic, kind, n)),
    }
    if kind == "transaction":
        contenders["two workers, defaults"] = lambda: asyncio.run(pipeline_runs.drain(bootstrap, topic, kind, n,
                                                                                      workers=2))
        contenders["worker, --batching fixed"] = lambda: asyncio.run(
            pipeline_runs.drain(bootstrap, topic, kind, n, batching="fixed"))
    else:
        # the default on a CPU: a model thread per CPU of the lane, one intra-op thread
        # each; against one model thread with the intra-op threads of them all
        contenders["worker, --model-streams 1"] = lambda: asyncio.run(
            pipeline_runs.drain(bootstrap, topic, kind, n, model_streams=1))
    if baseline_cwd:
        contenders[f"worker from {baseline_cwd}"] = lambda: asyncio.run(
            pipeline_runs.drain(bootstrap, topic, kind, n, cwd=baseline_cwd))
    # the step count of the progress line was made from this number before any ran
    assert len(contenders) == contenders_per_kind(kind, baseline_cwd), sorted(contenders)
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    default_threads = torch.get_num_threads()
    try:
        for rep in range(reps):
            for name, measure in contenders.items():
                value = measure()
                torch.set_num_threads(default_threads)
                runs[name].append(round(value, 1))
                progress.step(f"{kind:<11} rep {rep}: {name:<44} {value:>10,.1f}/s")
    finally:
        model.runner.stop()
    return {"backlog": n, "topic": topic, "per_s": runs, "spread": {k: spread(v) for k, v in runs.items()},
            "kafka_ceiling_passes": passes}


def _ratios(kind: str, per_s: dict[str, list[float]]) -> dict[str, float]:
    med = {name: statistics.median(values) for name, values in per_s.items()}
    ceiling = next(v for k, v in med.items() if k.startswith("kafka ceiling"))
    model = next(v for k, v in med.items() if k.startswith("model alone"))
    naive = med["naive loop"]
    ratios = {}
    for name, value in med.items():
        if name.startswith(("worker", "two workers")):
            ratios[f"{name} / kafka ceiling"] = round(value / ceiling, 3)
            ratios[f"{name} / model alone best"] = round(value / model, 3)
            ratios[f"{name} / naive loop"] = round(value / naive, 2)
    return ratios


def _latency(bootstrap: str, kind: str, capacity: float, seconds: float,
             progress: Progress) -> list[dict[str, Any]]:
    rows = []
    for load in LOADS:
        for batching in ("adaptive", "fixed"):
            row = asyncio.run(pipeline_runs.latency(bootstrap, kind, capacity * load, seconds, batching=batching))
            # the load the publisher reached: it may not pace small transactions as fast as a worker drains them
            sent_load = round(row["sent_per_s"] / capacity, 2) if capacity else 0.0
            row |= {"load": load, "batching": batching, "sent_load": sent_load}
            rows.append(row)
            e2e = row["stages_ms"]["end_to_end"]
            warm = row["warmup"]["stages_ms"]  # None: no event fell in the warm-up
            warm_p99 = warm["end_to_end"]["p99"] if warm else float("nan")
            short = f", sent only {sent_load}x" if sent_load < load * 0.95 else ""
            bound = row["p99_bound_ms"]
            progress.step(f"{kind:<11} {load:>4}x capacity ({row['rate_per_s']:,.0f}/s{short}) {batching:<8}: "
                          f"end to end p50 {e2e['p50']:.0f} p99 {e2e['p99']:.0f} (bound {bound}) max {e2e['max']} ms, "
                          f"mean batch {row['mean_batch_size']} (warm-up second: p99 {warm_p99:.0f} ms)"
                          f"{_busy_text(row['machine_busy_cores'])}")
    return rows


def _busy_text(busy: dict[str, float] | None) -> str:
    return f", machine {busy['median']} cores busy (p90 {busy['p90']})" if busy else ""


def run_all(bootstrap: str, out_dir: Path, *, reps: int = 2, transactions: int = 100_000, frames: int = 800,
            latency_seconds: float = 6.0, baseline_cwd: str | None = None) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine(), "reps": reps, "kinds": {}}
    # steps: decoding, a sweep per kind, each kind's contenders per repetition, and per kind
    # both batchings at every load
    steps = (1 + 2 + reps * sum(contenders_per_kind(kind, baseline_cwd) for kind in ("transaction", "frame"))
             + 2 * 2 * len(LOADS))
    progress = Progress(steps)
    print("input decoding: msgspec fast path against pydantic alone", flush=True)
    report["decoding"] = codec.run_codec()
    progress.step("input decoding")
    for kind, n, naive_n in (("transaction", transactions, 1000), ("frame", frames, 40)):
        print(f"{kind}: model sweep", flush=True)
        sweep = model_ceiling.sweep(kind)
        progress.step(f"{kind}: model sweep")
        print(f"{kind}: throughput, {reps} interleaved repetitions", flush=True)
        throughput = _throughput(bootstrap, kind, n, naive_n, reps, sweep["best"], baseline_cwd, progress)
        report["kinds"][kind] = {"model": sweep, "throughput": throughput,
                                 "ratios": _ratios(kind, throughput["per_s"])}
    for kind in ("transaction", "frame"):
        capacity = statistics.median(report["kinds"][kind]["throughput"]["per_s"]["worker, defaults"])
        print(f"{kind}: latency at {', '.join(f'{x}x' for x in LOADS)} of a worker's capacity "
              f"({capacity:,.0f}/s)", flush=True)
        report["kinds"][kind]["latency"] = _latency(bootstrap, kind, capacity, latency_seconds, progress)
    report["seconds"] = round(time.monotonic() - started, 1)
    _summary(report)
    write(report, out_dir / "bench.json")
    try:
        from bench.plot import plot

        plot(report, out_dir / "bench.png")
        print(f"wrote {out_dir / 'bench.png'}")
    except ImportError:
        print("no PNG: matplotlib is not installed (pip install 'streaminfer[bench]')")
    return report


def _summary(report: dict[str, Any]) -> None:
    print(f"\nsummary ({report['reps']} repetitions, median (min, max); {report['seconds']} s in all)")
    for kind, k in report["kinds"].items():
        print(f"{kind}:")
        for name, values in k["throughput"]["per_s"].items():
            print(f"  {name:<46} {spread_text(values)}")
        for name, ratio in k["ratios"].items():
            print(f"  ratio {name:<60} {ratio}")


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
