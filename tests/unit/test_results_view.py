"""What `streaminfer results` prints: a readable line per result, and a periodic summary."""

from __future__ import annotations

from pipeline.results_view import ResultsSummary, result_line
from schemas.models import InputRef, Result, Timings


def _result(
    kind: str, outputs: dict, event_ms: int = 1_000, produced_ms: int = 1_050, key: str | None = "k1"  # type: ignore[type-arg]
) -> Result:
    return Result(
        key=key, kind=kind, input=InputRef(topic="t", partition=0, offset=1),  # type: ignore[arg-type]
        event_id="tx-1" if kind == "transaction" else "cam/3", model_name="m", model_version="1",
        outputs=outputs,
        timings=Timings(event_ms=event_ms, received_ms=event_ms + 10, batch_closed_ms=event_ms + 20,
                        inference_start_ms=event_ms + 20, inference_end_ms=event_ms + 40, produced_ms=produced_ms),
        batch_size=4, worker_id="w-1",
    )


def test_lines_show_key_top_output_and_end_to_end_latency() -> None:
    txn = result_line(_result("transaction", {"score": 0.12345}, key="acct-0007"))
    assert "key=acct-0007" in txn and "score=0.1235" in txn and "e2e=50ms" in txn and "worker=40ms" in txn
    frame = result_line(_result("frame", {"labels": [{"label": "tabby", "prob": 0.91}, {"label": "x", "prob": 0.01}]}))
    assert "tabby 0.910" in frame and "cam/3" in frame
    other = result_line(_result("transaction", {"weird": [1, 2, 3]}, key=None))
    assert "key=-" in other and '{"weird": [1, 2, 3]}' in other


def test_summary_covers_the_spell_since_the_last_line() -> None:
    summary = ResultsSummary(now_s=100.0)
    assert summary.line(now_s=105.0) == "summary: 0 results in 5.0s (0.0/s); 0 in total"
    for latency in (10, 20, 30, 40):
        summary.add(_result("transaction", {"score": 0.5}, produced_ms=1_000 + latency))
    summary.add(_result("frame", {"labels": []}, produced_ms=1_100))
    line = summary.line(now_s=110.0)
    assert line.startswith("summary: 5 results in 5.0s (1.0/s); frame 1, transaction 4; e2e p50 30 ms")
    assert "max 100 ms" in line and line.endswith("5 in total")
    assert summary.line(now_s=112.0) == "summary: 0 results in 2.0s (0.0/s); 5 in total"
