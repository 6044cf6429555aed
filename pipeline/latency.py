"""Latency summaries shared by the demo and the benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def latency_summary_ms(values: Sequence[int]) -> dict[str, float | None]:
    """p50, p95, p99 and max of latencies in ms (inclusive quantiles); None when empty."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0], "max": values[0]}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}
