from __future__ import annotations

from bench.pipeline_runs import p99_bound_ms
from pipeline.latency import latency_summary_ms


def test_the_half_load_bound_is_the_wait_twice_the_inference_p99_and_25_ms() -> None:
    stages = {"inference": latency_summary_ms([4, 6, 8, 10, 12])}
    assert stages["inference"]["p99"] is not None
    assert p99_bound_ms(20, stages) == round(20 + 2 * stages["inference"]["p99"] + 25, 1)
    assert p99_bound_ms(20, {"inference": latency_summary_ms([17])}) == 79


def test_no_inference_seen_has_no_bound() -> None:
    assert p99_bound_ms(20, {"inference": latency_summary_ms([])}) is None
