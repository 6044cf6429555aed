"""The learned batch size cap, driven by made-up batch costs (no model, no clock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.batch_sizing import BatchSizer


def drive(sizer: BatchSizer, cost_s: Callable[[int], float], batches: int) -> list[int]:
    """Run ``batches`` full batches (each as large as the cap allows); return the caps seen."""
    caps = []
    for _ in range(batches):
        size = sizer.cap
        caps.append(sizer.observe(size, cost_s(size)))
    return caps


def cnn_on_cpu(size: int) -> float:
    """Cheapest per item at 4, dearer beyond (like EfficientNet-Lite0 on this CPU)."""
    per_item = {1: 0.050, 2: 0.046, 4: 0.040, 8: 0.052, 16: 0.060, 32: 0.080}[size]
    return per_item * size


def mlp(size: int) -> float:
    """A fixed cost per batch and a small one per item: bigger is always cheaper per item."""
    return 0.002 + 0.00001 * size


def test_sizes_are_powers_of_two_up_to_the_bound_and_the_bound() -> None:
    assert BatchSizer(32).sizes == (1, 2, 4, 8, 16, 32)
    assert BatchSizer(100).sizes == (1, 2, 4, 8, 16, 32, 64, 100)
    assert BatchSizer(1).sizes == (1,)
    with pytest.raises(ValueError):
        BatchSizer(0)


def test_it_starts_at_four_and_settles_on_the_size_cheapest_per_item() -> None:
    sizer = BatchSizer(32)
    assert sizer.cap == 4
    caps = drive(sizer, cnn_on_cpu, 100)
    assert caps[-1] == 4 and set(caps[-50:]) == {4}, caps
    assert (min(caps), max(caps)) == (2, 8), "it did not look one size past the best each way, or looked further"
    assert sizer.per_item_ms()[4] == pytest.approx(40.0)
    assert BatchSizer(2).cap == 2 and BatchSizer(1).cap == 1


def test_a_model_that_gets_cheaper_per_item_climbs_to_the_bound_in_a_few_batches() -> None:
    sizer = BatchSizer(256)
    caps = drive(sizer, mlp, 60)
    # three batches at 4 (one sets the size up, two count), then a size a batch: each
    # doubling is cheaper per item by 31-49 %, set-up batch and all, a clear win
    assert caps[-1] == 256 and caps.index(256) == 7, caps
    assert caps[:8] == [4, 4, 8, 16, 32, 64, 128, 256]


def test_a_first_batch_cheaper_by_less_than_a_clear_win_waits_for_batches_that_count() -> None:
    sizer = BatchSizer(32)
    drive(sizer, lambda n: 0.01 * n, 3)  # 4 settled at 10 ms an item; 8 is being tried
    assert sizer.cap == 8
    sizer.observe(8, 8 * 0.0075)  # 25 % cheaper: set-up or a real gain? not enough to say
    assert 8 not in sizer.per_item_ms() and sizer.cap == 8
    sizer.observe(8, 8 * 0.0075)
    sizer.observe(8, 8 * 0.0075)
    assert sizer.per_item_ms()[8] == pytest.approx(7.5)
    sizer.observe(16, 16 * 0.009)  # 16's first batch is dearer than 8: not counted
    assert 16 not in sizer.per_item_ms() and sizer.cap == 16
    sizer.observe(16, 16 * 0.005)  # 33 % cheaper, but this batch is not its first
    assert sizer.cap == 16 and sizer.per_item_ms()[16] == pytest.approx(5.0)


def test_under_a_latency_slo_no_batch_is_larger_than_half_of_it_takes() -> None:
    sizer = BatchSizer(256, latency_slo_ms=10)  # a batch may take 5 ms: 2 + 0.01 * n <= 5 up to n = 300
    assert drive(sizer, mlp, 60)[-1] == 256
    tight = BatchSizer(256, latency_slo_ms=5)  # 2.5 ms: n <= 50
    caps = drive(tight, mlp, 200)
    assert caps[-1] == 32 and max(caps) <= 32, caps


def test_a_cap_over_the_slo_steps_down_when_the_model_slows() -> None:
    sizer = BatchSizer(64, latency_slo_ms=10)
    drive(sizer, lambda n: 0.001 + 0.00005 * n, 60)  # 4.2 ms for 64: within half the SLO
    assert sizer.cap == 64
    caps = drive(sizer, lambda n: 0.001 + 0.0005 * n, 60)  # ten times slower per item: 5 ms fits 8
    assert caps[-1] == 8, caps


def test_it_looks_again_and_follows_the_machine_when_a_smaller_size_becomes_cheaper() -> None:
    sizer = BatchSizer(32, explore_every=20)
    drive(sizer, cnn_on_cpu, 100)
    assert sizer.cap == 4

    def contended(size: int) -> float:  # another lane now takes the cores: batches of 4 cost 2x per item
        return {1: 0.050, 2: 0.090, 4: 0.080, 8: 0.104, 16: 0.12, 32: 0.16}[size] * size

    caps = drive(sizer, contended, 200)
    assert caps[-1] <= 2 and caps[-20:].count(4) <= 4, caps


def test_partial_and_odd_sized_batches_do_not_move_the_cap() -> None:
    sizer = BatchSizer(32)
    for _ in range(50):
        sizer.observe(3, 0.0001)  # not a candidate size: says nothing about any of them
    assert sizer.cap == 4 and sizer.per_item_ms() == {}


def test_the_first_batch_of_a_size_sets_up_its_kernels_and_is_not_counted() -> None:
    sizer = BatchSizer(32)
    sizer.observe(4, 0.9)  # the process's first batch: kernels for this shape made, memory grown
    assert sizer.per_item_ms() == {}
    sizer.observe(4, 0.16)
    assert sizer.per_item_ms() == {4: pytest.approx(40.0)}


def test_a_set_up_cost_on_each_new_size_does_not_steer_the_cap() -> None:
    """Cheapest per item at 8; the first batch of each size costs 0.5 s more (the setting up
    of its shape's kernels), a larger share per item of a small batch than of a large one.
    Counted, it sends the cap to 16 and keeps it there until the next look around."""
    per_item = {1: 0.050, 2: 0.046, 4: 0.040, 8: 0.034, 16: 0.045, 32: 0.060}
    seen: set[int] = set()

    def cost(size: int) -> float:
        setup = 0.0 if size in seen else 0.5
        seen.add(size)
        return per_item[size] * size + setup

    sizer = BatchSizer(32)
    caps = drive(sizer, cost, 100)
    assert set(caps[-50:]) == {8}, caps


def test_with_two_model_threads_the_first_batch_of_a_size_on_each_is_not_counted() -> None:
    # each model thread sets up its own kernels for a shape: two slow first batches of 4
    # (113-116 ms on each of two threads for EfficientNet-Lite0, then 58-75)
    sizer = BatchSizer(32, set_up_batches=2)
    sizer.observe(4, 0.115)
    sizer.observe(4, 0.113)
    assert 4 not in sizer.per_item_ms()
    sizer.observe(4, 0.060)
    assert sizer.per_item_ms()[4] == pytest.approx(15.0)
    one = BatchSizer(32)
    one.observe(4, 0.115)
    one.observe(4, 0.113)
    assert one.per_item_ms()[4] == pytest.approx(113 / 4), "with one thread, only its first batch is set-up"


def test_sizes_warmed_up_count_from_their_first_batch_and_the_cap_starts_at_the_cheapest() -> None:
    sizer = BatchSizer(32, set_up_batches=2)
    timings = {1: 0.0096, 2: 0.0084, 4: 0.0135, 8: 0.0203}  # EfficientNet-Lite0 here, s an item
    sizer.warmed(timings, timings)
    assert sizer.cap == 2
    sizer.observe(2, 0.022)  # the first live batch of 2: counted, its kernels are set up
    assert sizer.per_item_ms() == {2: pytest.approx(11.0)}
    sizer.observe(16, 0.4)  # a size not warmed up still has its set-up batches left out
    assert 16 not in sizer.per_item_ms()


def test_warmed_sizes_without_timings_only_count_from_their_first_batch() -> None:
    sizer = BatchSizer(32)
    sizer.warmed((1, 2, 4, 8))  # a lane of a worker with two models: no start from them
    assert sizer.cap == 4
    sizer.observe(4, 0.04)
    assert sizer.per_item_ms() == {4: pytest.approx(10.0)}


def test_under_an_slo_the_warmed_start_is_the_cheapest_size_whose_batch_fits_in_half_of_it() -> None:
    timings = {1: 0.0096, 2: 0.0084, 4: 0.0135, 8: 0.0203}
    sizer = BatchSizer(32, latency_slo_ms=30)  # half of it is 15 ms: a batch of 2 takes 16.8
    sizer.warmed(timings, timings)
    assert sizer.cap == 1
    none_fits = BatchSizer(32, latency_slo_ms=10)
    none_fits.warmed(timings, timings)
    assert none_fits.cap == 1


def test_a_warmed_start_does_not_move_a_cap_already_learning() -> None:
    sizer = BatchSizer(32)
    sizer.observe(4, 0.1)  # set-up
    sizer.observe(4, 0.04)
    sizer.warmed({1}, {1: 0.001})
    assert sizer.cap == 4


def test_one_batch_of_a_size_tried_that_is_dearer_by_far_ends_the_try() -> None:
    sizer = BatchSizer(32, set_up_batches=1)
    sizer.warmed((1, 2, 4, 8))
    per_item = {1: 0.011, 2: 0.010, 4: 0.010, 8: 0.021}  # batch 8: twice the cost of 4 an item
    caps = drive(sizer, lambda size: per_item[size] * size, 6)
    assert caps[:2] == [4, 8], caps  # two samples settle 4, then 8 is tried
    assert caps[2] == 2, caps  # its first batch (counted: warmed up) ended it; the smaller side is next
    assert sizer.per_item_ms()[8] == pytest.approx(21.0)


def test_a_size_tried_that_is_dearer_by_less_than_a_clear_loss_gets_all_its_batches() -> None:
    sizer = BatchSizer(32, set_up_batches=1)
    sizer.warmed((1, 2, 4, 8))
    per_item = {1: 0.011, 2: 0.010, 4: 0.010, 8: 0.012}  # 20 % dearer: noise could say as much
    caps = drive(sizer, lambda size: per_item[size] * size, 5)
    assert caps[:4] == [4, 8, 8, 2], caps


def test_a_batch_beside_other_sizes_ends_a_try_only_when_far_dearer_and_is_not_counted() -> None:
    sizer = BatchSizer(32, set_up_batches=1)
    sizer.warmed((1, 2, 4, 8))
    sizer.observe(4, 0.035)
    assert sizer.observe(4, 0.035) == 8  # 4 settled at 8.75 ms an item: 8 is tried
    assert sizer.observe_beside(8, 0.100) == 8  # 12.5 ms an item: dearer, not by far; not counted
    assert 8 not in sizer.per_item_ms()
    assert sizer.observe_beside(4, 0.01) == 8  # not the size being tried: nothing
    assert sizer.observe_beside(8, 0.158) == 2  # 19.8 ms an item: the try ends, the other side is next
    assert sizer.per_item_ms()[8] == pytest.approx(19.75)
    assert sizer.observe_beside(2, 0.5) == 4  # 250 ms an item: that try ends too, back at the cap


def test_sizes_the_warm_up_shows_far_dearer_are_tried_only_at_every_tenth_re_exploration() -> None:
    # EfficientNet-Lite0 on this CPU, two model threads: 16 warmed up twice as dear a frame as 4
    timings = {1: 0.0193, 2: 0.0184, 4: 0.0155, 8: 0.0235, 16: 0.031}
    sizer = BatchSizer(32, set_up_batches=2, explore_every=50)
    sizer.warmed(timings, timings)
    assert sizer.cap == 4
    live = {1: 0.024, 2: 0.021, 4: 0.019, 8: 0.015, 16: 0.040, 32: 0.050}  # 8 wins live, 16 stays dear
    caps: list[int] = []
    for _ in range(3000):
        cap = sizer.cap
        caps.append(cap)
        sizer.observe(cap, cap * live[cap])
    assert 32 not in caps  # never the cap's neighbour: 16 never won
    first_16 = caps.index(16)
    # 8 became the cap early; 16, its ruled-out neighbour, waited for the tenth re-exploration
    assert first_16 > 10 * 50, first_16
    assert caps[first_16 + 1] == 8  # far dearer on its one batch: the try ended there
    assert caps.count(16) == len([i for i, c in enumerate(caps) if c == 16 and caps[i - 1] != 16])
    assert sizer.cap == 8


def test_a_ruled_out_size_that_wins_live_is_the_cap_and_no_longer_ruled_out() -> None:
    # a warm-up beside other busy processes made 8 look far dearer than 4; live it is cheaper
    timings = {1: 0.020, 2: 0.018, 4: 0.015, 8: 0.030}
    sizer = BatchSizer(8, set_up_batches=1, explore_every=20)
    sizer.warmed(timings, timings)
    live = {1: 0.020, 2: 0.018, 4: 0.015, 8: 0.010}
    caps = drive(sizer, lambda size: size * live[size], 600)
    first_8 = caps.index(8)
    assert first_8 > 10 * 20, first_8  # not before the tenth re-exploration
    assert set(caps[first_8 + 10:]) <= {4, 8} and caps[-1] == 8
    # no longer ruled out: from then on it is tried as any neighbour, so it stays the cap
    assert caps[first_8 + 10:].count(8) > 0.9 * len(caps[first_8 + 10:])


def test_a_warm_up_without_a_far_dearer_size_rules_out_nothing() -> None:
    timings = {1: 0.0193, 2: 0.0184, 4: 0.0155, 8: 0.0235}  # 8 within 60 % of 4: tried live
    sizer = BatchSizer(32, set_up_batches=2)
    sizer.warmed(timings, timings)
    tried = set()
    for _ in range(50):
        cap = sizer.cap
        tried.add(cap)
        sizer.observe(cap, cap * 0.019)
    assert 8 in tried, tried
