from __future__ import annotations

from pipeline.latency import latency_summary_ms


def test_percentiles_of_a_known_spread() -> None:
    summary = latency_summary_ms(list(range(1, 101)))
    assert summary["p50"] == 50.5 and summary["max"] == 100
    assert 94 < summary["p95"] < 96 and 98 < summary["p99"] < 100  # type: ignore[operator]


def test_empty_and_single_samples_do_not_fail() -> None:
    assert latency_summary_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert latency_summary_ms([7]) == {"p50": 7, "p95": 7, "p99": 7, "max": 7}
