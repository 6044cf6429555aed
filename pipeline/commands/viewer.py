"""``streaminfer viewer``: the live web page of results."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from pipeline.commands import common
from pipeline.config import DEFAULT_FRAMES_TOPIC, DEFAULT_RESULTS_TOPIC


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("viewer", help="a live web page: each video stream's latest frame with its labels, "
                       "transaction scores, result rates and latency")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s; 0: any free one)")
    p.add_argument("--port-file", help="write the port here once serving (with --port 0)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    p.add_argument("--results-topic", default=DEFAULT_RESULTS_TOPIC, help="(default: %(default)s)")
    p.add_argument("--frames-topic", default=DEFAULT_FRAMES_TOPIC,
                   help="where the frames' pixels are read (default: %(default)s; '' for none)")
    p.add_argument("--from-beginning", action="store_true",
                   help="read both topics from their start (default: from their end, what comes next)")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.viewer import Viewer

    viewer = Viewer(common.kafka(args).client_kwargs(), args.results_topic, args.frames_topic or None,
                    host=args.host, port=args.port, from_beginning=args.from_beginning,
                    port_file=Path(args.port_file) if args.port_file else None)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await viewer.run(stop)

    asyncio.run(serve())
    return 0
