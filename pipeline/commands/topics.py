"""``streaminfer topics create|describe``."""

from __future__ import annotations

import argparse
import asyncio
import json

from pipeline.commands import common
from pipeline.config import DEFAULT_TOPICS


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("topics", help="create the pipeline's topics, or describe them")
    p.add_argument("action", choices=["create", "describe"],
                   help="create: the missing ones; describe: partitions (leader, replicas, in-sync replicas, "
                   "end offset), replication and configuration (exit 1 if one does not exist)")
    p.add_argument("--partitions", type=int, default=4, help="create: partitions per topic (default: %(default)s)")
    p.add_argument("--replication", type=int, default=1, help="create: replication factor (default: %(default)s)")
    p.add_argument("--topic", action="append", help="topic name (repeatable; default: all four)")
    p.add_argument("--json", action="store_true", help="describe: the report as JSON")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.topics import create_topics, describe_topics

    names = args.topic or list(DEFAULT_TOPICS)
    if args.action == "describe":
        report = asyncio.run(describe_topics(common.kafka(args), names))
        if args.json:
            print(json.dumps(report, indent=2))
        for topic in [] if args.json else report:
            if "error" in topic:
                print(f"{topic['topic']}: {topic['error']}")
                continue
            configs = "  ".join(f"{k} {v}" for k, v in sorted(topic["configs"].items()))
            print(f"{topic['topic']}: {len(topic['partitions'])} partitions, replication {topic['replication_factor']}"
                  f"  {configs}")
            for p in topic["partitions"]:
                print(f"  partition {p['partition']:<3} leader {p['leader']:<3} replicas {p['replicas']} "
                      f"isr {p['isr']} end offset {p['end_offset']}")
        return 1 if any("error" in topic for topic in report) else 0
    created = asyncio.run(create_topics(common.kafka(args), names, args.partitions, args.replication))
    for name in names:
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0
