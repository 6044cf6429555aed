"""How busy the whole machine was while a run went on: cores in use, from ``/proc/stat``.

On a 2-core machine the latency runs put the broker, the worker and the paced publisher
on the same cores. Paced at half of what a worker drained alone (when no publisher ran),
they kept 1.66 cores busy (median; p90 1.90) at 37,000 transactions/s, and the tails came
from there: at 26,000/s the time between the broker's append and the worker's poll had a
p99 of 5-8 ms, at 37,000/s 14-181 ms from one run to the next (2026-12-07, by hand). Each
latency row records this figure, so a tail can be read against the load that made it.

``busy_cores`` is pure (two samples of the counters in, a figure out); ``MachineLoad`` is
the thread that samples them. Where ``/proc/stat`` is missing, nothing is recorded.
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from types import TracebackType

PROC_STAT = Path("/proc/stat")

Counters = tuple[int, int]  # (all jiffies, idle jiffies) over every CPU


def parse_cpu_line(line: str) -> Counters:
    """The aggregate ``cpu`` line of ``/proc/stat``: all time and idle time (idle + iowait)."""
    fields = line.split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"not the aggregate cpu line: {line!r}")
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    total = sum(values[:8])
    return total, values[3] + (values[4] if len(values) > 4 else 0)


def busy_cores(before: Counters, after: Counters, cpus: int) -> float:
    """Cores in use on average between two samples (0 when no time passed)."""
    elapsed = after[0] - before[0]
    if elapsed <= 0:
        return 0.0
    idle = after[1] - before[1]
    return round(cpus * (1 - idle / elapsed), 3)


def summary(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 2),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
            "max": round(ordered[-1], 2)}


class MachineLoad:
    """``with MachineLoad() as load: ...``, then ``load.summary()``: busy cores every
    ``interval_s``, from a daemon thread (the event loop of the run is not involved)."""

    def __init__(self, interval_s: float = 0.25, stat: Path = PROC_STAT) -> None:
        self.interval_s = interval_s
        self._stat = stat
        self._cpus = 0
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> Counters | None:
        try:
            with self._stat.open() as f:
                return parse_cpu_line(f.readline())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> MachineLoad:
        try:
            lines = self._stat.read_text().splitlines()
        except OSError:
            return self
        self._cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        if self._cpus and self._read() is not None:
            self._thread = threading.Thread(target=self._run, name="machine-load", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        last = self._read()
        while not self._stop.wait(self.interval_s):
            now = self._read()
            if now is None or last is None:
                return
            self.samples.append(busy_cores(last, now, self._cpus))
            last = now

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1)

    def summary(self) -> dict[str, float] | None:
        """Busy cores: median, p90 and max of the samples (None: none taken)."""
        return summary(self.samples)

