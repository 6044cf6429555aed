"""The model alone, in process: what the hardware gives before Kafka and the worker.

Two figures per batch size, intra-op thread count and stream count (threads each
running batches of their own, as a worker's model threads do): *with decoding* (input bytes ->
``decode_input`` -> the runner's preprocess, forward and postprocess, the work a worker
does per item besides Kafka) and *forward only* (preprocessed tensors through the
model). The best of them is the ceiling a pipeline is held to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from bench.common import default_model, items
from pipeline.acceleration import Acceleration
from pipeline.models import load_model, resolve_device
from pipeline.runner import Runner
from schemas.codec import decode_input, encode
from schemas.errors import DecodeError

BATCH_SIZES = {"transaction": (1, 4, 16, 64, 256, 1024), "frame": (1, 2, 4, 8, 16, 32)}
ITEMS = {"transaction": 10_000, "frame": 48}
T = TypeVar("T")


@dataclass
class ModelBench:
    """One default model, loaded once, with its inputs ready as bytes and as tensors."""

    kind: str
    n: int
    device: str = "auto"
    acceleration: Acceleration | None = None

    def __post_init__(self) -> None:
        spec = default_model(self.kind)
        model = load_model(spec, self.kind)  # type: ignore[arg-type]
        assert model is not None, spec
        self.spec = spec
        self.model = model
        self.runner = Runner({self.kind: model}, resolve_device(self.device),  # type: ignore[dict-item]
                             acceleration=self.acceleration)
        self.runner.start()
        events = items(self.kind, self.n, seed=3)
        self.payloads = [encode(e) for e in events]
        self.tensors = [model.preprocess(e) for e in events]

    def with_decoding_per_s(self, batch_size: int, threads: int, streams: int = 1) -> float:
        """``streams`` > 1: that many threads of ``threads`` intra-op threads each, every one
        taking the next batch as soon as it is free (as a worker's model threads do)."""
        chunks = [self.payloads[at:at + batch_size] for at in range(0, len(self.payloads), batch_size)]
        return len(self.payloads) / _timed(self._decode_and_run, chunks, threads, streams)

    def _decode_and_run(self, payloads: Sequence[bytes]) -> None:
        events = [decode_input(p) for p in payloads]
        assert not any(isinstance(e, DecodeError) for e in events)
        outcomes = self.runner.run_sync(events)  # type: ignore[arg-type]
        assert all(o.error is None for o in outcomes)

    def forward_per_s(self, batch_size: int, threads: int, streams: int = 1) -> float:
        """The forward pass alone, as the worker's runner makes it (on its device, in its
        layout and precision), the batches already there: on a GPU, no host copy timed."""
        runner = self.runner
        batches = [runner.device_batch(self.tensors[at:at + batch_size])[0]
                   for at in range(0, len(self.tensors), batch_size)]

        def forward(batch: torch.Tensor) -> None:
            with torch.inference_mode(), runner.acceleration.autocast(runner.device):
                self.model.forward(batch)
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)  # its kernels done, not only queued

        return len(self.tensors) / _timed(forward, batches, threads, streams)


def _timed(run: Callable[[T], None], batches: Sequence[T], threads: int, streams: int) -> float:
    """Seconds to ``run`` every batch: in this thread, or spread over ``streams`` threads
    (each warmed up first, the pool started outside the timing)."""
    torch.set_num_threads(threads)
    if streams == 1:
        run(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        return time.perf_counter() - start
    ready = threading.Barrier(streams)

    def warm_up(batch: T) -> None:  # on every thread of the pool: each sets up its own kernels
        run(batch)
        ready.wait()

    with ThreadPoolExecutor(streams, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        list(pool.map(warm_up, [batches[0]] * streams))
        start = time.perf_counter()
        list(pool.map(run, batches))
        return time.perf_counter() - start


def thread_counts() -> list[int]:
    """1 and every count up to torch's default (this machine's cores), doubling."""
    most = torch.get_num_threads()
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    if counts[-1] != most:
        counts.append(most)
    return counts


def configurations(threads: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(streams, intra-op threads): one stream of each thread count, and as many streams of
    it as the cores hold (two of one thread on two cores), the way a worker may run."""
    cores = torch.get_num_threads()
    configs = [(1, t) for t in threads or thread_counts()]
    configs += [(cores // t, t) for _, t in configs if cores // t > 1]
    return configs


def sweep(kind: str, n: int | None = None, batch_sizes: Sequence[int] | None = None,
          threads: Sequence[int] | None = None) -> dict[str, Any]:
    """Every batch size, thread count and stream count; the best configuration with decoding."""
    default_threads = torch.get_num_threads()
    bench = ModelBench(kind, n or ITEMS[kind])
    rows = []
    try:
        for streams, t in configurations(threads):
            for b in batch_sizes or BATCH_SIZES[kind]:
                row = {"streams": streams, "threads": t, "batch_size": b,
                       "with_decoding_per_s": round(bench.with_decoding_per_s(b, t, streams), 1),
                       "forward_per_s": round(bench.forward_per_s(b, t, streams), 1)}
                rows.append(row)
                print(f"  model {kind:<11} {streams} x {t} threads batch {b:>3}: "
                      f"with decoding {row['with_decoding_per_s']:>9,.1f}/s   "
                      f"forward only {row['forward_per_s']:>9,.1f}/s", flush=True)
    finally:
        bench.runner.stop()
        torch.set_num_threads(default_threads)
    best = max(rows, key=lambda r: r["with_decoding_per_s"])
    return {"model": bench.spec, "items": bench.n, "rows": rows,
            "best": {"streams": best["streams"], "threads": best["threads"], "batch_size": best["batch_size"]},
            "best_with_decoding_per_s": best["with_decoding_per_s"],
            "best_forward_per_s": max(r["forward_per_s"] for r in rows)}
