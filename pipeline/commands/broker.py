"""``streaminfer broker``: a local KRaft Kafka for development and tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from devtools.broker import BrokerError, LocalBroker


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("broker", help="run a local KRaft Kafka, one node or a few (needs Java 17+ and Maven)")
    p.add_argument("action", choices=["start", "stop", "status", "reset"],
                   help="stop keeps the data, port and cluster id for the next start; "
                        "reset stops the broker and deletes its data and saved config")
    p.add_argument("--home", help="state directory (default: $STREAMINFER_BROKER_HOME or .streaminfer/broker)")
    p.add_argument("--port", type=int, default=0,
                   help="node 1's listener port for a new cluster (default: a free one; saved for restarts)")
    p.add_argument("--nodes", type=int, default=None,
                   help="node count of a new cluster (default 1; 3 gives replication 3, min.insync.replicas 2)")
    p.add_argument("--node", type=int, default=None, help="start or stop only this node id (1..N)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    broker = LocalBroker(Path(args.home) if args.home else None)
    if args.node is not None and args.action not in ("start", "stop"):
        raise BrokerError("--node applies to `start` and `stop` only")
    if args.action == "start":
        if args.node is not None:
            state = broker.start_node(args.node)
        else:
            state = broker.start(nodes=args.nodes, port=args.port)
        print(state.describe())
    elif args.action == "stop":
        stopped = broker.stop_node(args.node) if args.node is not None else broker.stop()
        print("stopped" if stopped else "not running")
    elif args.action == "reset":
        print("stopped, data and saved config deleted" if broker.reset() else "data and saved config deleted")
    elif (running := broker.status()) is None:
        print("not running")
        return 1
    else:
        print(running.describe())
    return 0
