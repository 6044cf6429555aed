"""Input decoding per item: the msgspec fast path against pydantic alone, on the same bytes.

No broker: ``decode_input`` on pre-encoded inputs, the two readers interleaved repetition
by repetition. The 640x480 JPEG frames are read up to their header check (pixels are the
model's preprocessing), so their figure is the cost of the envelope.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import items, spread, spread_text
from schemas.codec import content_type_headers, decode_input, encode
from schemas.errors import DecodeError

_COUNTS = {"transaction": 20_000, "frame": 200}


def _us_per_item(values: list[bytes], fast: bool) -> float:
    headers = content_type_headers()
    started = time.perf_counter()
    for value in values:
        if isinstance(decode_input(value, headers, fast=fast), DecodeError):
            raise AssertionError("a bench input did not decode")
    return (time.perf_counter() - started) / len(values) * 1e6


def run_codec(reps: int = 5) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for kind, n in _COUNTS.items():
        values = [encode(item) for item in items(kind, n)]
        runs: dict[str, list[float]] = {"msgspec fast path": [], "pydantic alone": []}
        for _ in range(reps):
            runs["pydantic alone"].append(round(_us_per_item(values, fast=False), 3))
            runs["msgspec fast path"].append(round(_us_per_item(values, fast=True), 3))
        ratio = round(spread(runs["pydantic alone"])["median"] / spread(runs["msgspec fast path"])["median"], 2)
        report[kind] = {"items": n, "us_per_item": runs, "speedup": ratio}
        for name, values_us in runs.items():
            print(f"  decode {kind:<11} {name:<18} {spread_text(values_us, ' us')}", flush=True)
        print(f"  decode {kind:<11} speed-up {ratio}x", flush=True)
    return report
