from __future__ import annotations

import logging

import pytest

from pipeline.outage import Outage, RateLimitFilter


def test_an_outage_logs_once_then_a_summary_per_interval_and_once_when_over(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(deadline_s=60, summary_every_s=30, clock=lambda: now[0], logger=logging.getLogger("t"))
    with caplog.at_level(logging.WARNING, logger="t"):
        outage.failed(ConnectionError("blip"))  # a blip shorter than the grace period: silent
        now[0] += 0.5
        outage.ok()
        assert caplog.records == []
        for _ in range(400):  # 400 failed calls over 50 s
            outage.failed(ConnectionError("refused"))
            now[0] += 0.125
        assert not outage.expired() and outage.down
        now[0] += 10
        assert outage.expired() and outage.seconds() == pytest.approx(60)
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("Kafka unreachable (ConnectionError: refused)")  # after the 1 s grace
    assert lines[1].startswith("Kafka still unreachable after 31s (249 failed calls")
    assert lines[2].startswith("Kafka reachable again after 60.0s (400 failed calls")
    assert not outage.down and not outage.expired()


def test_the_rate_limit_filter_passes_each_message_once_per_window_and_counts_the_rest() -> None:
    now = [0.0]
    limit = RateLimitFilter("aiokafka", window_s=30, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)

    passed = []
    for _ in range(100):
        r = record("aiokafka.conn", "Unable connect to node %s")
        if limit.filter(r):
            passed.append(r.getMessage())
        now[0] += 0.5  # 100 lines over 50 s
    assert passed == ["Unable connect to node x",
                      "Unable connect to node x [59 similar messages hidden in the last 30s]"]
    assert limit.filter(record("aiokafka.conn", "another message %s"))
    assert all(limit.filter(record("streaminfer.worker", "ours %s")) for _ in range(5))


def test_describe_names_the_type_once_and_handles_empty_messages() -> None:
    import asyncio

    from aiokafka.errors import KafkaTimeoutError

    from pipeline.outage import describe

    assert describe(ValueError("bad")) == "ValueError: bad"
    assert describe(asyncio.CancelledError()) == "CancelledError"
    assert describe(KafkaTimeoutError("slow")).count("KafkaTimeoutError") == 1
