"""The bench's machine load figure: counters of /proc/stat in, busy cores out (no thread run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.machine_load import MachineLoad, busy_cores, parse_cpu_line, summary


def test_the_aggregate_line_reads_as_all_time_and_idle_time_with_iowait() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    assert parse_cpu_line("cpu  100 5 50 800 20 3 2 0 7 0") == (980, 820)
    with pytest.raises(ValueError):
        parse_cpu_line("cpu0 1 2 3 4 5 6 7 8")


def test_busy_cores_is_the_share_of_non_idle_time_times_the_cores() -> None:
    assert busy_cores((1000, 500), (1200, 550), cpus=2) == 1.5  # 150 of 200 jiffies busy
    assert busy_cores((1000, 500), (1200, 700), cpus=2) == 0.0
    assert busy_cores((1000, 500), (1000, 500), cpus=2) == 0.0  # no time passed


def test_summary_gives_median_p90_and_max_or_none() -> None:
    assert summary([]) is None
    assert summary([float(v) for v in range(1, 11)]) == {"median": 5.5, "p90": 10.0, "max": 10.0}


def test_without_proc_stat_nothing_is_sampled(tmp_path: Path) -> None:
    with MachineLoad(stat=tmp_path / "missing") as load:
        pass
    assert load.summary() is None
