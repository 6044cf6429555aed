"""``streaminfer worker``: consume, batch, infer, produce results."""

from __future__ import annotations

import argparse
import asyncio
import json

from pipeline.commands import common


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="consume, batch, infer, produce results")
    common.add_settings_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.app import run_worker

    settings = common.worker_settings(args)
    stats = asyncio.run(run_worker(settings))
    print(json.dumps({"worker_id": settings.worker_id, **stats.as_dict()}), flush=True)
    return 0
