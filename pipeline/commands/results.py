"""``streaminfer results``: read the results (or dead-letter) topic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from pipeline.commands import common
from pipeline.config import DEFAULT_DEAD_LETTER_TOPIC, DEFAULT_RESULTS_TOPIC
from schemas.models import DeadLetter, Result


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("results", help="read the results (or dead-letter) topic")
    p.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument("--dead-letters", action="store_true", help="read the dead-letter topic instead")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--topic")
    p.add_argument("--summary-every", type=float, default=0, metavar="SECONDS",
                   help="also print a summary line (count, rate, end-to-end latency) this often; 0: never")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from consumers.results_reader import read_dead_letters, read_results
    from pipeline.results_view import ResultsSummary, result_line

    stream: AsyncGenerator[Any, None]
    summary: ResultsSummary | None = None
    if args.dead_letters:
        stream = read_dead_letters(
            bootstrap=common.bootstrap(args), topic=args.topic or DEFAULT_DEAD_LETTER_TOPIC, follow=args.follow,
            security=common.kafka(args).client_kwargs(),
        )
        show: Callable[[Any], str] = _dead_letter_line
    else:
        stream = read_results(
            bootstrap=common.bootstrap(args), topic=args.topic or DEFAULT_RESULTS_TOPIC, follow=args.follow,
            security=common.kafka(args).client_kwargs(),
        )
        show = Result.model_dump_json if args.json else result_line
        if args.summary_every > 0:
            summary = ResultsSummary(time.monotonic())

    async def summaries(every_s: float) -> None:
        assert summary is not None
        out = sys.stderr if args.json else sys.stdout  # keep --json output one JSON object a line
        while True:
            await asyncio.sleep(every_s)
            print(summary.line(time.monotonic()), file=out, flush=True)

    async def go() -> int:
        n = 0
        ticker = None if summary is None else asyncio.create_task(summaries(args.summary_every))
        try:
            async with contextlib.aclosing(stream):
                async for record in stream:
                    print(show(record), flush=True)
                    if summary is not None and isinstance(record, Result):
                        summary.add(record)
                    n += 1
                    if n == args.limit:
                        break
        finally:
            if ticker is not None:
                ticker.cancel()
        return n

    count = common.until_signalled(go())
    print(f"{'stopped on a signal' if count is None else f'{count} records'}", file=sys.stderr)
    return 0


def _dead_letter_line(dl: DeadLetter) -> str:
    return json.dumps({
        "reason": dl.reason, "message": dl.message, "input": dl.input.model_dump(),
        "bytes": len(dl.original), "worker_id": dl.worker_id,
    })
