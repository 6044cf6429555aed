"""The model alone, in process: what the hardware gives before Kafka and the worker.

Two figures per batch size and intra-op thread count: *with decoding* (input bytes ->
``decode_input`` -> the runner's preprocess, forward and postprocess, the work a worker
does per item besides Kafka) and *forward only* (preprocessed tensors through the
model). The best of them is the ceiling a pipeline is held to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.common import default_model, items
from pipeline.acceleration import Acceleration
from pipeline.models import load_model, resolve_device
from pipeline.runner import Runner
from schemas.codec import decode_input, encode
from schemas.errors import DecodeError

BATCH_SIZES = {"transaction": (1, 4, 16, 64, 256), "frame": (1, 2, 4, 8, 16, 32)}
ITEMS = {"transaction": 10_000, "frame": 48}


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

    def with_decoding_per_s(self, batch_size: int, threads: int) -> float:
        torch.set_num_threads(threads)
        self._decode_and_run(self.payloads[:batch_size])  # warm-up
        start = time.perf_counter()
        for at in range(0, len(self.payloads), batch_size):
            self._decode_and_run(self.payloads[at:at + batch_size])
        return len(self.payloads) / (time.perf_counter() - start)

    def _decode_and_run(self, payloads: Sequence[bytes]) -> None:
        events = [decode_input(p) for p in payloads]
        assert not any(isinstance(e, DecodeError) for e in events)
        outcomes = self.runner.run_sync(events)  # type: ignore[arg-type]
        assert all(o.error is None for o in outcomes)

    def forward_per_s(self, batch_size: int, threads: int) -> float:
        torch.set_num_threads(threads)
        batches = [torch.stack(self.tensors[at:at + batch_size]) for at in range(0, len(self.tensors), batch_size)]
        with torch.inference_mode():
            self.model.forward(batches[0])  # warm-up
            start = time.perf_counter()
            for batch in batches:
                self.model.forward(batch)
        return len(self.tensors) / (time.perf_counter() - start)


def thread_counts() -> list[int]:
    """1 and every count up to torch's default (this machine's cores), doubling."""
    most = torch.get_num_threads()
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    if counts[-1] != most:
        counts.append(most)
    return counts


def sweep(kind: str, n: int | None = None, batch_sizes: Sequence[int] | None = None,
          threads: Sequence[int] | None = None) -> dict[str, Any]:
    """Every batch size and thread count; the best configuration with decoding."""
    default_threads = torch.get_num_threads()
    bench = ModelBench(kind, n or ITEMS[kind])
    rows = []
    try:
        for t in threads or thread_counts():
            for b in batch_sizes or BATCH_SIZES[kind]:
                row = {"threads": t, "batch_size": b,
                       "with_decoding_per_s": round(bench.with_decoding_per_s(b, t), 1),
                       "forward_per_s": round(bench.forward_per_s(b, t), 1)}
                rows.append(row)
                print(f"  model {kind:<11} threads {t} batch {b:>3}: "
                      f"with decoding {row['with_decoding_per_s']:>9,.1f}/s   "
                      f"forward only {row['forward_per_s']:>9,.1f}/s", flush=True)
    finally:
        bench.runner.stop()
        torch.set_num_threads(default_threads)
    best = max(rows, key=lambda r: r["with_decoding_per_s"])
    return {"model": bench.spec, "items": bench.n, "rows": rows,
            "best": {"threads": best["threads"], "batch_size": best["batch_size"]},
            "best_with_decoding_per_s": best["with_decoding_per_s"],
            "best_forward_per_s": max(r["forward_per_s"] for r in rows)}
