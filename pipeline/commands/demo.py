"""``streaminfer demo``: what ``make demo`` runs."""

from __future__ import annotations

import argparse


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="local broker + topics + workers + producers, then a summary")
    p.add_argument("--transactions", type=int, default=2000)
    p.add_argument("--frames", type=int, default=100, help="split over two cameras at 5 fps each")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--timeout", type=float, default=180.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(
        transactions=args.transactions, frames=args.frames, workers=args.workers,
        partitions=args.partitions, timeout_s=args.timeout,
    )
