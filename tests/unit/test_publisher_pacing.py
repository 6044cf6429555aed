from __future__ import annotations

import asyncio
import io
import math

import pytest

from producers.publisher import PublishReport, _Progress, pacing_delay_s, progress_line


def test_no_rate_never_waits() -> None:
    assert pacing_delay_s(10_000, started_at=100.0, now=100.0, rate_per_s=None) == 0.0


def test_first_message_goes_out_immediately() -> None:
    assert pacing_delay_s(0, started_at=100.0, now=100.0, rate_per_s=10) == 0.0


def test_message_n_waits_until_start_plus_n_over_rate() -> None:
    assert math.isclose(pacing_delay_s(5, started_at=100.0, now=100.1, rate_per_s=10), 0.4)
    assert math.isclose(pacing_delay_s(30, started_at=100.0, now=100.0, rate_per_s=60), 0.5)


def test_a_sender_behind_schedule_does_not_wait_and_does_not_accumulate_drift() -> None:
    assert pacing_delay_s(5, started_at=100.0, now=103.0, rate_per_s=10) == 0.0
    # once back on schedule the wait is measured from the start, not from the late send
    assert math.isclose(pacing_delay_s(40, started_at=100.0, now=103.0, rate_per_s=10), 1.0)


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_a_non_positive_rate_is_an_error_not_a_division(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        pacing_delay_s(1, started_at=0.0, now=0.0, rate_per_s=rate)


def test_report_rate_is_count_over_seconds_and_zero_when_no_time_passed() -> None:
    assert PublishReport(count=50, seconds=2.0).rate_per_s == 25.0
    assert PublishReport(count=0, seconds=0.0).rate_per_s == 0.0


def test_progress_line_overwrites_itself_and_shows_the_rate() -> None:
    assert progress_line("frames", 120, 4.0) == "\rframes: 120 sent (30/s)"


def test_with_a_total_the_progress_line_is_a_bar_with_the_time_left() -> None:
    assert progress_line("tx", 250, 5.0, total=1000) == "\rtx [######..................] 250/1000  25% (50/s) 15s left"
    assert progress_line("tx", 1000, 10.0, total=1000).endswith("1000/1000 100% (100/s) done")
    assert progress_line("tx", 0, 0.0, total=10) == "\rtx [........................] 0/10   0% (0/s) "


def test_progress_is_throttled_and_ends_with_one_newline() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = _Progress("tx", enabled=True, stream=out, clock=lambda: now[0])
    for n in range(1, 101):  # one second of updates, 10 ms apart
        now[0] = n / 100
        progress.update(n, now[0])
    progress.finish(100, 1.0)

    lines = out.getvalue().split("\r")[1:]
    assert 4 <= len(lines) - 1 <= 6  # about five redraws a second, then the final line
    assert lines[-1] == "tx: 100 sent (100/s)\n"
    assert out.getvalue().count("\n") == 1


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = _Progress("tx", enabled=False, stream=out)
    progress.update(1, 1.0)
    progress.finish(1, 1.0)
    assert out.getvalue() == ""


def test_a_paced_event_is_taken_from_its_source_at_its_send_time_not_a_period_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sources stamp events when they are made (cameras, generators): taken early, an event
    would carry a period of waiting in the publisher as if it were pipeline latency."""
    import time
    from typing import Any

    import producers.publisher
    from producers.publisher import publish
    from producers.transaction_source import iter_synthetic_transactions

    class Sink:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def missing_topics(self, topics: list[str]) -> list[str]:
            return []

        async def topic_limit(self, topic: str) -> int:
            return 1 << 20

        async def send_many(self, records: list[Any]) -> list[asyncio.Future[None]]:
            done = []
            for _ in records:
                sent.append(time.monotonic())
                done.append(asyncio.get_running_loop().create_future())
                done[-1].set_result(None)
            return done

    made: list[float] = []
    sent: list[float] = []

    def source() -> Any:
        for event in iter_synthetic_transactions(5, seed=1):
            made.append(time.monotonic())
            yield event

    monkeypatch.setattr(producers.publisher, "KafkaSink", Sink)
    asyncio.run(publish(source(), bootstrap="unused:9092", topic="t", rate_per_s=10, progress=False))
    assert len(sent) == 5
    assert sent[-1] - sent[0] >= 0.35  # paced at 10/s: 5 events span 4 periods
    # each event is made just before it is sent (not 100 ms, one period, before), and at
    # this pace alone: one event due at a time
    assert max(s - m for m, s in zip(made, sent, strict=True)) < 0.05, [s - m for m, s in zip(made, sent, strict=True)]


def test_as_many_events_are_sent_together_as_are_due() -> None:
    from producers.publisher import CHUNK, due_count

    assert due_count(0, started_at=100.0, now=100.0, rate_per_s=10) == 1  # the first, at once
    assert due_count(5, started_at=100.0, now=100.45, rate_per_s=10) == 1  # on time: the next alone
    assert due_count(5, started_at=100.0, now=101.0, rate_per_s=10) == 6  # behind: 5..10 are all due
    assert due_count(0, started_at=100.0, now=110.0, rate_per_s=100_000) == CHUNK  # far behind: a chunk
    assert due_count(0, started_at=100.0, now=100.0, rate_per_s=None) == CHUNK  # unpaced: always a chunk


def test_bench_progress_counts_steps_and_estimates_the_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.common import Progress

    now = [0.0]
    progress = Progress(4, clock=lambda: now[0])
    now[0] = 30.0
    assert progress.step("first") == "[1/4, 0:30 elapsed, ~1:30 left] first"
    now[0] = 90.0
    assert progress.step("second") == "[2/4, 1:30 elapsed, ~1:30 left] second"
    assert capsys.readouterr().out.splitlines()[-1].endswith("second")


def test_acks_of_records_sent_together_are_awaited_once_and_a_resent_batch_record_by_record() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    from producers.publisher import _acknowledged
    from producers.sinks import OutRecord, RecordsResent, fail

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        records = [OutRecord("t", b"v%d" % i, None) for i in range(3)]
        ok: asyncio.Future[None] = loop.create_future()
        ok.set_result(None)
        await _acknowledged(records, [ok] * 3)  # one shared delivery, acked
        own = [loop.create_future() for _ in records]
        for future in own[::2]:
            future.set_result(None)
        fail(own[1], MessageSizeTooLargeError("too big"))
        shared: asyncio.Future[None] = loop.create_future()
        fail(shared, RecordsResent({id(r): f for r, f in zip(records, own, strict=True)}))
        with pytest.raises(MessageSizeTooLargeError):  # the one record refused on its own
            await _acknowledged(records, [shared] * 3)

    asyncio.run(scenario())
