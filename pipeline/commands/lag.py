"""``streaminfer lag``: a consumer group's lag per partition, and its members."""

from __future__ import annotations

import argparse
import asyncio
import json

from pipeline.commands import common
from pipeline.config import WorkerSettings


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lag", help="a consumer group's lag per partition, and its members")
    p.add_argument("--group", default=WorkerSettings.model_fields["group_id"].default,
                   help="consumer group (default: %(default)s)")
    p.add_argument("--topic", action="append", help="only these topics (repeatable; default: all the group reads)")
    p.add_argument("--json", action="store_true")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Per partition of the group: committed offset, end offset and lag; the group's members."""
    from pipeline.topics import group_lag, group_members

    kafka = common.kafka(args)
    rows = asyncio.run(group_lag(kafka, args.group, args.topic or None))
    state, members = asyncio.run(group_members(kafka, args.group))
    if args.json:
        print(json.dumps({"group": args.group, "state": state, "members": members, "partitions": [
            {"topic": t, "partition": p, "committed": c, "end": e, "lag": lag} for t, p, c, e, lag in rows]}))
        return 0
    print(f"group {args.group}: {state}, {members} member{'s' if members != 1 else ''}")
    print(f"{'topic':<32} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10}")
    for topic, partition, committed, end, lag in rows:
        print(f"{topic:<32} {partition:>9} {'-' if committed is None else committed:>12} {end:>12} {lag:>10}")
    print(f"{'total':<32} {'':>9} {'':>12} {'':>12} {sum(r[4] for r in rows):>10}")
    return 0
