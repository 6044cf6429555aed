"""The lane's intra-op thread count, chosen from measured model time per item (pure logic)."""

from __future__ import annotations

import pytest

from pipeline.batch_sizing import START_SIZE, BatchSizer
from pipeline.thread_choice import ThreadChoice


def chooser(**kwargs: int | float) -> tuple[ThreadChoice, list[int]]:
    starts: list[int] = []

    def sizer_for(start: int) -> BatchSizer:
        starts.append(start)
        return BatchSizer(16, start=start or START_SIZE)
    return ThreadChoice(2, sizer_for, phase_batches=10, skip=2, phase_s=0.0, recheck_every=50, **kwargs), starts  # type: ignore[arg-type]


def drive(choice: ThreadChoice, per_item_s: dict[int, float], batches: int) -> list[int]:
    """Run ``batches`` batches at the cap, each costing ``per_item_s[threads]`` per item; the
    thread count of each."""
    ran = []
    for _ in range(batches):
        threads, size = choice.threads, choice.cap
        ran.append(threads)
        choice.observe(size, per_item_s[threads] * size, threads)
    return ran


def test_one_thread_fewer_is_kept_when_its_batches_cost_less_per_item() -> None:
    choice, _ = chooser()
    ran = drive(choice, {2: 0.004, 1: 0.003}, 20)
    assert ran == [2] * 10 + [1] * 10  # every CPU first, then the trial of one fewer
    assert choice.threads == 1 and len(choice.trials) == 1
    kept, kept_cost, tried, tried_cost = choice.trials[0]
    assert (kept, tried) == (2, 1) and kept_cost == pytest.approx(0.004) and tried_cost == pytest.approx(0.003)
    # and it stays, until the recheck tries every CPU again (and finds them still dearer)
    ran = drive(choice, {2: 0.004, 1: 0.003}, 60)
    assert ran == [1] * 50 + [2] * 10
    assert choice.threads == 1 and len(choice.trials) == 2


def test_every_cpu_is_kept_when_one_fewer_is_not_cheaper_by_the_margin() -> None:
    for one_thread_s in (0.006, 0.0039):  # dearer; cheaper by 2.5 %, inside the 5 % margin
        choice, _ = chooser()
        drive(choice, {2: 0.004, 1: 0.003}, 5)
        sizer = choice.sizer
        ran = drive(choice, {2: 0.004, 1: one_thread_s}, 15)
        assert ran == [2] * 5 + [1] * 10
        assert choice.threads == 2 and choice.sizer is sizer  # back on its own sizer, as it was


def test_the_trial_counts_its_batches_after_the_first_few_and_starts_at_the_kept_cap() -> None:
    choice, starts = chooser()
    drive(choice, {2: 0.004, 1: 0.003}, 10)
    assert choice.threads == 1 and starts == [0, choice.cap]
    # the first 2 batches of the trial (setting up kernels for the count) are slow: not counted
    for cost in (1.0, 1.0):
        choice.observe(choice.cap, cost * choice.cap, 1)
    drive(choice, {2: 0.004, 1: 0.003}, 8)
    assert choice.trials[-1][3] == pytest.approx(0.003)
    assert choice.threads == 1


def test_a_batch_run_on_another_count_than_the_current_one_is_not_counted() -> None:
    choice, _ = chooser()
    drive(choice, {2: 0.004, 1: 0.003}, 10)
    assert choice.threads == 1
    for _ in range(20):
        choice.observe(4, 0.001, 2)  # started before the switch: says nothing of one thread
    assert choice.threads == 1 and not choice.trials


def test_a_choice_needs_two_counts() -> None:
    with pytest.raises(ValueError):
        ThreadChoice(1, lambda start: BatchSizer(8))


def test_a_phase_lasts_long_enough_to_measure_small_batches() -> None:
    """Batches of a millisecond: the phase runs past its batch count until it holds
    phase_s of model time, on the kept count and on the trial alike."""
    choice = ThreadChoice(2, lambda start: BatchSizer(4, start=4), phase_batches=10, skip=2, phase_s=0.1)
    ran = drive(choice, {2: 0.0004, 1: 0.0003}, 400)  # 1.6 ms and 1.2 ms a batch of 4
    first_trial = ran.index(1)
    assert 62 <= first_trial <= 64  # 0.1 s of batches of 1.6 ms, not the 10 batches
    assert choice.threads == 1 and len(choice.trials) == 1
    trial = choice.trials[0]
    assert trial[1] == pytest.approx(0.0004) and trial[3] == pytest.approx(0.0003)
    # the trial ended after its 2 skipped batches and 0.1 s more at 1.2 ms a batch, not after 10
    trial_choice = ThreadChoice(2, lambda start: BatchSizer(4, start=4), phase_batches=10, skip=2, phase_s=0.1,
                                margin=0.5)  # cheaper, but not by half: back to 2 after it
    lengths = drive(trial_choice, {2: 0.0004, 1: 0.0003}, first_trial + 100)
    assert 85 <= lengths.count(1) <= 87 and lengths[-1] == 2
