"""How results look on a terminal: one readable line each, and a periodic summary.

Pure: no I/O, time passed in, so the summary is tested with a fake clock.
"""

from __future__ import annotations

import json
from collections import Counter

from pipeline.latency import latency_summary_ms
from schemas.models import Result


def end_to_end_ms(result: Result) -> int:
    """From the event's own timestamp (set by its producer) to its result being produced."""
    return result.timings.produced_ms - result.timings.event_ms


def top_output(result: Result) -> str:
    """The top label with its probability, or the score, or the outputs cut short."""
    outputs = result.outputs
    if result.status == "skipped_stale":
        return f"skipped: {outputs.get('age_ms')} ms old"
    labels = outputs.get("labels")
    if isinstance(labels, list) and labels and isinstance(labels[0], dict):
        top = labels[0]
        return f"{top.get('label')} {float(top.get('prob', 0.0)):.3f}"
    if isinstance(outputs.get("score"), int | float):
        return f"score={outputs['score']:.4f}"
    return json.dumps(outputs, default=str)[:40]


def result_line(result: Result) -> str:
    t = result.timings
    return (
        f"{result.kind:<11} key={result.key or '-':<18} {result.event_id:<24} {top_output(result):<28} "
        f"e2e={end_to_end_ms(result)}ms worker={t.produced_ms - t.received_ms}ms "
        f"batch={result.batch_size} by {result.worker_id}"
    )


class ResultsSummary:
    """Counts and end-to-end latency since the last summary line, and in total."""

    def __init__(self, now_s: float) -> None:
        self.total = 0
        self._since_s = now_s
        self._kinds: Counter[str] = Counter()
        self._latency: list[int] = []

    def add(self, result: Result) -> None:
        self.total += 1
        self._kinds[result.kind] += 1
        self._latency.append(end_to_end_ms(result))

    def line(self, now_s: float) -> str:
        """The summary of the spell since the previous line; starts a new spell."""
        span = max(now_s - self._since_s, 1e-9)
        count = sum(self._kinds.values())
        parts = [f"summary: {count} results in {span:.1f}s ({count / span:.1f}/s)"]
        if count:
            parts.append(", ".join(f"{kind} {n}" for kind, n in sorted(self._kinds.items())))
            q = latency_summary_ms(self._latency)
            parts.append(f"e2e p50 {q['p50']:.0f} ms, p99 {q['p99']:.0f} ms, max {q['max']:.0f} ms")
        parts.append(f"{self.total} in total")
        self._since_s, self._kinds, self._latency = now_s, Counter(), []
        return "; ".join(parts)
