"""``streaminfer bench``: the benchmark suite (the ``bench`` package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands import common


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="throughput and latency next to the strongest baselines; JSON and PNG out",
                       description="all: the model sweep, then the Kafka ceiling, the naive loop, the model at "
                       "its best and worker drains (interleaved repetitions), then latency at 0.25-2x a worker's "
                       "capacity, adaptive against fixed batching. model: the sweep alone. codec: input decoding, "
                       "the msgspec fast path against pydantic alone. mixed: transaction latency while frames flow "
                       "through the same worker. in-process: no broker.")
    p.add_argument("part", nargs="?", choices=["all", "model", "codec", "mixed", "in-process"], default="all",
                   help="what to run (default: %(default)s); in-process: the worker on an in-memory source "
                   "and sink next to the model alone, no broker (for GPU machines)")
    p.add_argument("--device", default="auto", help="in-process: auto, cpu, cuda, cuda:N (default: %(default)s)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="in-process: as the worker's --precision (default: %(default)s)")
    p.add_argument("--channels-last", action="store_true", help="in-process: as the worker's --channels-last")
    p.add_argument("--compile", action="store_true", help="in-process: as the worker's --compile")
    p.add_argument("--transactions", type=int, default=100_000, help="backlog size (default: %(default)s)")
    p.add_argument("--frames", type=int, default=800, help="backlog size (default: %(default)s)")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default: %(default)s)")
    p.add_argument("--latency-seconds", type=float, default=6.0,
                   help="length of each paced latency run (default: %(default)s)")
    p.add_argument("--out", default="bench-results", help="directory for JSON and PNG (default: %(default)s)")
    p.add_argument("--mixed-seconds", type=float, default=30)
    p.add_argument("--txn-rate", type=float, default=200)
    p.add_argument("--frame-rate", type=float, default=8)
    p.add_argument("--baseline-worker-cwd", metavar="DIR",
                   help="also run the worker from this checkout, interleaved with this one")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import bench  # noqa: F401
    except ImportError:
        print("streaminfer: the bench package is not installed here (it ships with the source checkout)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.part == "mixed":
        from bench.mixed import run_mixed

        run_mixed(common.bootstrap(args), out / "bench-mixed.json", args.mixed_seconds, args.txn_rate, args.frame_rate,
                  args.reps, args.baseline_worker_cwd)
    elif args.part == "in-process":
        from bench.common import machine
        from bench.in_process import run_in_process
        from bench.suite import write

        write({"machine": machine(), "device": args.device,
               "acceleration": {"precision": args.precision, "channels_last": args.channels_last,
                                "compile": args.compile},
               "kinds": {kind: run_in_process(kind, args.frames if kind == "frame" else args.transactions, args.reps,
                                              args.device, precision=args.precision,
                                              channels_last=args.channels_last, compile=args.compile)
                         for kind in ("transaction", "frame")}},
              out / "bench-in-process.json")
    elif args.part == "codec":
        from bench.codec import run_codec
        from bench.common import machine
        from bench.suite import write

        write({"machine": machine(), "decoding": run_codec(args.reps)}, out / "bench-codec.json")
    elif args.part == "model":
        from bench.common import machine
        from bench.model_ceiling import sweep
        from bench.suite import write

        write({"machine": machine(), "kinds": {kind: sweep(kind) for kind in ("transaction", "frame")}},
              out / "bench-model.json")
    else:
        from bench.suite import run_all

        run_all(common.bootstrap(args), out, reps=args.reps, transactions=args.transactions, frames=args.frames,
                latency_seconds=args.latency_seconds, baseline_cwd=args.baseline_worker_cwd)
    return 0
