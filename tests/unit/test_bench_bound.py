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


def test_a_drains_rate_is_its_steady_part_not_its_start_or_its_tail() -> None:
    from bench.pipeline_runs import steady_rate

    # 100 items: the first 10 trickle in over 9 s (start-up), the next 80 one every 10 ms,
    # the last 10 over another 9 s (a straggling tail)
    times = ([i * 1000 for i in range(10)] + [10_000 + i * 10 for i in range(80)]
             + [11_000 + i * 1000 for i in range(10)])
    assert abs(steady_rate(times) - 100.0) < 2.0  # 80 items in ~0.8 s, not 100 in 20 s
    assert steady_rate([0, 1000, 1500]) == 2 / 1.5  # under ten items: from the first to the last
