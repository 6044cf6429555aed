"""``streaminfer produce video|transactions``: publish frames or transactions."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable

from pipeline.commands import common
from pipeline.config import DEFAULT_FRAMES_TOPIC, DEFAULT_TRANSACTIONS_TOPIC
from schemas.models import Frame, Transaction


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    produce = sub.add_parser("produce", help="publish frames or transactions")
    psub = produce.add_subparsers(dest="kind", required=True)
    p = psub.add_parser("video", help="frames from a video file, a camera index, or 'synthetic'")
    p.add_argument("--source", default="synthetic")
    p.add_argument("--stream-id", default="camera-1")
    p.add_argument("--fps", type=float, default=0, help="publish rate (0: as fast as possible)")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--encoding", choices=["jpeg", "png", "raw"], default="jpeg")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--topic")
    p.add_argument("--json", action="store_true", help="publish JSON instead of msgpack")
    common.with_bootstrap(p).set_defaults(func=run)
    p = psub.add_parser("transactions", help="synthetic transactions, or replay a CSV/JSONL file")
    p.add_argument("--source", default="synthetic",
                   help="'synthetic', 'lending-club' (the real loans table; needs the real-data extra) "
                        "or a .csv/.jsonl path")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topic")
    p.add_argument("--json", action="store_true", help="publish JSON instead of msgpack")
    common.with_bootstrap(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.exceptions import ConfigurationError
    from producers.publisher import TopicMissing, publish
    from schemas.codec import JSON, MSGPACK

    content_type = JSON if args.json else MSGPACK
    events: Iterable[Frame | Transaction]
    if args.kind == "video":
        from producers.video_source import iter_video_frames
        from schemas.models import FrameEncoding

        events = iter_video_frames(
            args.source,
            stream_id=args.stream_id,
            count=args.count,
            encoding=FrameEncoding(args.encoding),
            width=args.width,
            height=args.height,
        )
        topic, rate, label = args.topic or DEFAULT_FRAMES_TOPIC, args.fps, "frames"
    else:
        from producers.transaction_source import iter_file_transactions, iter_synthetic_transactions

        if args.source == "synthetic":
            events = iter_synthetic_transactions(args.count, seed=args.seed)
        elif args.source == "lending-club":
            from producers.lending_club_source import iter_lending_club_transactions

            events = iter_lending_club_transactions(args.count)
        else:
            events = itertools.islice(iter_file_transactions(args.source), args.count)
        topic, rate, label = args.topic or DEFAULT_TRANSACTIONS_TOPIC, args.rate, "transactions"
    try:
        report = common.until_signalled(
            publish(
                events,
                bootstrap=common.bootstrap(args),
                topic=topic,
                rate_per_s=rate or None,
                content_type=content_type,
                label=label,
                security=common.kafka(args).client_kwargs(),
                total=args.count,
            )
        )
    except TopicMissing as exc:  # one line and exit 2, not a traceback after a 40 s wait
        raise ConfigurationError(str(exc)) from None
    if report is None:  # SIGTERM/SIGINT: what was sent is flushed by the producer's stop
        print(f"stopped on a signal: {label} sent so far are flushed to {topic}", file=sys.stderr)
    else:
        print(f"published {report.count} {label} to {topic} in {report.seconds:.1f}s", file=sys.stderr)
    return 0
