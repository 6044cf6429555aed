"""The batch size cap of one lane, learned from how long its batches take. Pure logic.

A CNN on a CPU runs fastest per frame at batch 1 to 4 and slower beyond; a GPU or a
small MLP keeps getting cheaper per item up to large batches. So the cap is measured,
not assumed: every batch reports its size and how long it took (``Worker._learn`` says
what is timed), the sizer keeps a moving average of the cost per item for each size it
has seen (powers of two up to ``max_batch_size``, and that bound itself), and the cap is
the size with the lowest cost per item. It starts at 4, or at the cheapest of the sizes
the worker warmed its model threads up on before reading (``warmed``), and climbs the
hill both ways: a neighbour of the cap (twice or half its size) that was never measured
is tried as soon as the cap has its samples (fewer for a size never measured, so that a
worker started on a backlog gets there in a few dozen batches; one whose very first
batch, set-up and all, is cheaper per item by far settles on it, and one batch dearer by
far ends the try), and the cap moves to whichever is cheaper; once both neighbours are
known, one of them is tried again now and then, since the machine (other lanes, other
processes) changes under it (a size the warm-up ruled out, only at every tenth
time: see ``warmed``). Only full batches say much about a size, so only batches
whose size is one of the candidates are counted, and not the first of each size on each
model thread unless the worker warmed it up: it pays for setting up the model's kernels
for that shape. When the cap comes down, the worker cuts the batches already closed at
the old cap to the new one (``Batcher.resize``, ``batcher.split``).

Under a latency SLO the cap is also no larger than the biggest size whose batch fits in
half of it: an item can wait for one batch already in the model and then run in its
own. The other half of the waiting is the batcher's: the worker closes a window as soon
as its lane's model is free (``pipeline.worker``), so at low load items go out at once
and under load batches grow to what arrived meanwhile, up to this cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass
class _Estimate:
    per_item_s: float = 0.0
    samples: int = 0
    settled: bool = False  # has had the samples it needs since it was last (re)tried
    ever_settled: bool = False
    uncounted: int = 1  # first batches still to come, which set up the model's kernels for it


START_SIZE = 4
CLEAR_WIN = 0.3  # a probe's first batch this much cheaper per item than the cap settles it
CLEAR_LOSS = 0.3  # a probe's counted batch this much dearer per item than the cap ends it
# a size whose warm-up took this much longer per item than the start (the cheapest warmed
# size) is not tried, nor any larger: twice CLEAR_LOSS, as the warm-up is timed once, before
# the worker reads (on this 2-core machine, EfficientNet-Lite0's warm-up put 4 at 0.9 to 1.5
# times 2's cost a frame from one start to the next, and 16 at about twice 4's)
WARMED_LOSS = 2 * CLEAR_LOSS
# a size ruled out so is still tried live at every this many re-explorations, when it is the
# cap's neighbour: the warm-up timed it once, before the worker read, and a start-up beside
# other busy processes (replicas warming up together) can make a size look far dearer than it
# is. With frames at batch 4 and the default ``explore_every`` that is one batch of the size in
# about 2,000 (a dear one ends its try on its first batch), and a size that wins live is no
# longer ruled out
RETRY_RULED_OUT_EVERY = 10


def candidate_sizes(max_batch_size: int) -> tuple[int, ...]:
    """The sizes a sizer measures: powers of two under ``max_batch_size``, and that bound."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return tuple(sizes)


class BatchSizer:
    """Chooses the cap on a lane's batch size from the batches it has run."""

    def __init__(
        self,
        max_batch_size: int,
        latency_slo_ms: float = 0.0,
        *,
        samples: int = 4,
        explore_every: int = 200,
        margin: float = 0.1,
        smoothing: float = 0.3,
        set_up_batches: int = 1,
    ) -> None:
        """``samples`` full batches settle a size; every ``explore_every`` batches a
        neighbour of the cap is tried again; a larger size must be cheaper per item by
        ``margin`` to win (a smaller one wins ties: it is the lower latency).
        ``set_up_batches``: the first batches of each size left uncounted, one per model
        thread of the lane (each thread sets up its own kernels for a shape: EfficientNet-
        Lite0's first batch of 4 took 113-116 ms on each of two threads, the next 58-75)."""
        self.sizes: tuple[int, ...] = candidate_sizes(max_batch_size)
        self.slo_s = latency_slo_ms / 1000.0
        self._samples = samples
        self._explore_every = explore_every
        self._margin = margin
        self._smoothing = smoothing
        self._climb_samples = max(1, samples // 2)
        self._estimates = {size: _Estimate(uncounted=max(1, set_up_batches)) for size in self.sizes}
        # index of the cap in sizes: it starts at 4 (or the bound), a size no model is far off
        # at (a CNN on a CPU is at its best around it), and climbs from there both ways
        self._at = max(i for i, size in enumerate(self.sizes) if size <= START_SIZE)
        self._probe: int | None = None  # index being tried, or None
        self._since_explore = 0
        self._explorations = 0
        # sizes the warm-up showed to be far dearer per item than the cheapest: tried only at
        # every RETRY_RULED_OUT_EVERY-th re-exploration
        self._ruled_out: set[int] = set()

    @property
    def cap(self) -> int:
        return self.sizes[self._probe if self._probe is not None else self._at]

    def warmed(self, sizes: Iterable[int], per_item_s: Mapping[int, float] | None = None) -> None:
        """The lane's model threads have run ``sizes`` already (``Runner.warm_up``): their
        first live batches are counted. Given ``per_item_s`` (the seconds per item each
        took), the cap starts at the cheapest of them whose batch fits in half the SLO (the
        smallest if none does); its neighbours are then tried on live batches as usual. Only
        the start comes from these timings: they are of the model on an example input, not
        of the lane's whole work on a batch, so no size is settled by them."""
        for size in sizes:
            if size in self._estimates:
                self._estimates[size].uncounted = 0
        known = {size: s for size, s in (per_item_s or {}).items() if size in self._estimates and s > 0}
        if known and self._probe is None and not any(e.samples for e in self._estimates.values()):
            fitting = [size for size, s in known.items() if not self.slo_s or s * size <= self.slo_s / 2]
            start = min(fitting, key=known.__getitem__) if fitting else min(known)
            self._at = self.sizes.index(start)
            # a size far dearer than the start is not tried live, nor any beyond it (a
            # CNN on a CPU only gets dearer per item past its best size), but at every
            # RETRY_RULED_OUT_EVERY-th re-exploration: each of its
            # probes costs a drain of frames as much as it loses. EfficientNet-Lite0 alone on
            # 2 x 1 threads runs batch 8 and 16 at 1.4 and 2.6 times 4's cost a frame (the
            # suite's model table of a04f96b); a live probe of 16, after the cap had climbed
            # to 8 on a noisy win, cost 1.9 times 4's, and that drain of 800 frames went at
            # 81 frames/s against 88-116 for fixed windows of 4 (2026-12-07)
            best = known[start]
            dear = [size for size, s in known.items() if size > start and s > best * (1 + WARMED_LOSS)]
            if dear:
                self._ruled_out = {i for i, size in enumerate(self.sizes) if size >= min(dear)}

    def per_item_ms(self) -> dict[int, float]:
        """The measured cost per item of each size tried so far."""
        return {s: round(e.per_item_s * 1000, 4) for s, e in self._estimates.items() if e.samples}

    def observe(self, size: int, seconds: float) -> int:
        """Record one batch of ``size`` items that took its lane ``seconds``; return the cap."""
        estimate = self._estimates.get(size)
        if estimate is None or size < 1 or seconds < 0:
            return self.cap
        per_item = seconds / size
        if estimate.uncounted:
            # the first batch of a size sets up the model's kernels for that shape (oneDNN
            # primitives, allocations): EfficientNet-Lite0 took 1.35-1.38x its later batches'
            # time on it at batch 1, 2 and 4 here; counted, it made a size look dearer than it is
            estimate.uncounted -= 1
            if not self._clear_win(size, per_item):
                return self.cap
            # cheaper by far even with its set-up: counted, and that size needs no more
            # batches to win (a worker started on a backlog climbs a size a batch, not three)
            estimate.settled = estimate.ever_settled = True
        if estimate.samples == 0:
            estimate.per_item_s = per_item
        else:
            estimate.per_item_s += self._smoothing * (per_item - estimate.per_item_s)
        estimate.samples += 1
        if self._dearer_than_cap(size, per_item, CLEAR_LOSS):
            # dearer by far: no more batches of it (for frames on a CPU, batch 8 took about
            # twice batch 2's time per frame; each of a probe's batches cost that much)
            estimate.settled = estimate.ever_settled = True
        self._since_explore += 1
        self._decide()
        return self.cap

    def observe_beside(self, size: int, seconds: float) -> int:
        """A batch that ran beside batches of other sizes (model threads share the caches):
        its time is not counted, but a try of its size ends on it if it was dearer per item
        than the cap by more than twice ``CLEAR_LOSS`` (a probe of batch 8 frames took 158
        ms, 20 ms a frame against 8.7 at the cap of 4; the batches of 8 closed before a
        clean one came back ran at that cost too). Returns the cap."""
        if size < 1 or seconds < 0 or not self._dearer_than_cap(size, seconds / size, 2 * CLEAR_LOSS):
            return self.cap
        estimate = self._estimates[size]
        estimate.per_item_s, estimate.samples = seconds / size, 1
        estimate.settled = estimate.ever_settled = True
        self._decide()
        return self.cap

    def _clear_win(self, size: int, per_item_s: float) -> bool:
        """Whether the first batch of the size being tried was, set-up and all, cheaper per
        item than the cap by more than ``CLEAR_WIN`` (doubling a batch whose time is mostly
        a fixed cost nearly halves it per item)."""
        at = self._cap_beside_probe(size)
        return at is not None and per_item_s <= at.per_item_s * (1 - CLEAR_WIN)

    def _dearer_than_cap(self, size: int, per_item_s: float, by: float) -> bool:
        """Whether a batch of the size being tried was dearer per item than the cap by more
        than ``by``."""
        at = self._cap_beside_probe(size)
        return at is not None and per_item_s >= at.per_item_s * (1 + by)

    def _cap_beside_probe(self, size: int) -> _Estimate | None:
        """The cap's estimate, if ``size`` is being tried against it and the cap is settled."""
        if self._probe is None or self.sizes[self._probe] != size:
            return None
        at = self._estimates[self.sizes[self._at]]
        return at if at.settled else None

    def _settled(self, index: int) -> bool:
        estimate = self._estimates[self.sizes[index]]
        if not estimate.settled:
            # a size never settled before needs fewer samples, so that a worker started on a
            # backlog finds its size in a few dozen batches (a wrong step is undone later)
            needed = self._samples if estimate.ever_settled else self._climb_samples
            estimate.settled = estimate.ever_settled = estimate.samples >= needed
        return estimate.settled

    def _cost(self, index: int) -> float:
        return self._estimates[self.sizes[index]].per_item_s

    def _fits(self, index: int) -> bool:
        """Whether a batch of this size is expected to take at most half the SLO."""
        if not self.slo_s:
            return True
        return self.predicted_s(self.sizes[index]) <= self.slo_s / 2

    def predicted_s(self, size: int) -> float:
        """How long a batch of ``size`` is expected to take: measured if this size was
        tried, else a line (time = a * size + b) through the two largest sizes tried."""
        estimate = self._estimates.get(size)
        if estimate is not None and estimate.samples:
            return estimate.per_item_s * size
        tried = [s for s in self.sizes if self._estimates[s].samples]
        if not tried:
            return 0.0
        if len(tried) == 1:  # no slope yet: optimistic (all of it a fixed cost); the probe tells
            return self._estimates[tried[0]].per_item_s * tried[0]
        small, large = tried[-2], tried[-1]
        t_small = self._estimates[small].per_item_s * small
        t_large = self._estimates[large].per_item_s * large
        slope = max(0.0, (t_large - t_small) / (large - small))
        return t_large + slope * (size - large)

    def _decide(self) -> None:
        if self._probe is not None:
            if not self._settled(self._probe):
                return
            self._probe = None
        settled = [i for i in range(len(self.sizes)) if self._settled(i)]
        if not settled:
            return
        fitting = [i for i in settled if self._fits(i)] or [0]
        best = min(self._cost(i) for i in fitting)
        # the cheapest per item: the cap only binds under load, where throughput is latency;
        # the current cap stays while it is within the margin (noise is not a reason to move)
        if self._at not in fitting or self._cost(self._at) > best * (1 + self._margin):
            self._at = min(fitting, key=self._cost)
        self._ruled_out.discard(self._at)  # it won live: the warm-up's judgement is outdated
        # hill-climb: a neighbour of the cap not measured yet, the larger one first
        for index in (self._at + 1, self._at - 1):
            if self._may_try(index) and not self._estimates[self.sizes[index]].ever_settled:
                self._start_probe(index)
                return
        if self._since_explore >= self._explore_every:
            # look again at a neighbour, alternating, as the machine changes under us
            self._explorations += 1
            retry = self._explorations % RETRY_RULED_OUT_EVERY == 0
            around = (self._at - 1, self._at + 1) if self._explorations % 2 else (self._at + 1, self._at - 1)
            for index in around:
                if self._may_try(index, retry_ruled_out=retry):
                    self._start_probe(index)
                    break

    def _may_try(self, index: int, *, retry_ruled_out: bool = False) -> bool:
        return (0 <= index < len(self.sizes) and (retry_ruled_out or index not in self._ruled_out)
                and self._fits(index))

    def _start_probe(self, index: int) -> None:
        self._estimates[self.sizes[index]].samples = 0
        self._estimates[self.sizes[index]].settled = False
        self._probe = index
        self._since_explore = 0
