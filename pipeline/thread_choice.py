"""The intra-op thread count of one lane's model, chosen from how fast its batches run. Pure logic.

On a CPU the model thread's intra-op threads share the cores with the rest of the worker
(the event loop parsing fetches and producing results, the preparation pool decoding the
next frames) and often with the broker. An operator split over every core stalls
whenever one of its threads loses its core, so one thread fewer can drain faster than
all of them, or slower: it depends on the machine and the load (on 2 CPUs, one session's
frame drains ran faster on two threads, another's on one). So it is measured, not set:
the lane starts on every CPU it is given, and after a phase of batches (some 20, and at
least half a second of model time) tries one thread fewer for as long, each count with a
batch sizer of its own (the best batch size differs with the thread count). The count
whose batches cost less model time per item, by ``margin``, is kept, and the other is
tried again every ``recheck_every`` batches.

Model time per item is the measure because where it matters, under a backlog, the lane's
model is what the items wait for; at low load, where nothing contends for the cores, it
favours the faster forward, which is the lower latency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pipeline.batch_sizing import BatchSizer


class ThreadChoice:
    """A lane's thread count and, for it, the batch size cap (``observe`` as ``BatchSizer``'s)."""

    def __init__(
        self,
        most: int,
        sizer_for: Callable[[int], BatchSizer],
        *,
        phase_batches: int = 20,
        skip: int = 3,
        phase_s: float = 0.5,
        recheck_every: int = 2000,
        margin: float = 0.05,
    ) -> None:
        """``sizer_for(start)``: a fresh batch sizer starting at cap ``start`` (or its own
        start when 0). A count is measured over ``phase_batches`` batches and at least
        ``phase_s`` seconds of model time (a small model's batches take a millisecond);
        ``skip``: batches at the start of a trial not counted (the first batches after the
        switch set up the model's kernels for the new count)."""
        if most < 2:
            raise ValueError("a choice needs at least 2 threads to choose from")
        if phase_batches <= skip:
            raise ValueError("phase_batches must exceed skip")
        self.counts = (most, most - 1)
        self._sizer_for = sizer_for
        self._phase = phase_batches
        self._phase_s = phase_s
        self._skip = skip
        self._recheck = recheck_every
        self._margin = margin
        self.threads = most
        self._sizers = {most: sizer_for(0)}
        # the kept count's last batches (seconds, items): its cost just before a trial
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_s = 0.0
        self._trial: int | None = None  # the count being tried, or None
        self._trial_batches = 0
        self._trial_cost = [0.0, 0]  # seconds, items of the trial's counted batches
        self._since = 0  # batches on the kept count since the last trial ended (or the start)
        self.trials: list[tuple[int, float, int, float]] = []  # kept, its cost, tried, its cost (s/item)

    @property
    def sizer(self) -> BatchSizer:
        return self._sizers[self.threads]

    @property
    def cap(self) -> int:
        return self.sizer.cap

    def observe(self, size: int, seconds: float, threads: int | None = None) -> int:
        """Record a batch of ``size`` items that took ``seconds`` in the model on ``threads``
        (the count it was given; a batch that started before a switch is not counted);
        return the cap for the next batch. ``self.threads`` is the count to run it on."""
        if size < 1 or seconds < 0 or (threads is not None and threads != self.threads):
            return self.cap
        cap = self.sizer.observe(size, seconds)
        if self._trial is None:
            self._remember(seconds, size)
            self._since += 1
            if self._since >= (self._phase if not self.trials else self._recheck) and self._recent_s >= self._phase_s:
                self._start_trial()
            return self.cap
        self._trial_batches += 1
        if self._trial_batches > self._skip:
            self._trial_cost[0] += seconds
            self._trial_cost[1] += size
        if self._trial_batches >= self._phase and self._trial_cost[0] >= self._phase_s:
            self._end_trial()
        return cap if self._trial is not None else self.cap

    def _remember(self, seconds: float, size: int) -> None:
        """Keep the last batches of the kept count: as many as a trial counts, and as long."""
        self._recent.append((seconds, size))
        self._recent_s += seconds
        while len(self._recent) > self._phase - self._skip and self._recent_s - self._recent[0][0] >= self._phase_s:
            self._recent_s -= self._recent.popleft()[0]

    def _start_trial(self) -> None:
        kept = self.threads
        tried = next(c for c in self.counts if c != kept)
        # the tried count's sizer starts at the kept one's cap: no climb from the start size
        self._sizers[tried] = self._sizer_for(self.sizer.cap)
        self._trial, self._kept = tried, kept
        self._kept_cost = sum(s for s, _ in self._recent) / max(1, sum(n for _, n in self._recent))
        self._trial_batches, self._trial_cost = 0, [0.0, 0]
        self.threads = tried

    def _end_trial(self) -> None:
        seconds, items = self._trial_cost
        tried_cost = seconds / max(1, items)
        self.trials.append((self._kept, self._kept_cost, self._trial or 0, tried_cost))
        if not tried_cost < self._kept_cost * (1 - self._margin):
            self.threads = self._kept  # back to the kept count and its sizer, as it was
        self._trial = None
        self._recent.clear()
        self._recent_s = 0.0
        self._since = 0
