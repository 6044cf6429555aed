"""The ``streaminfer`` command (also ``python -m pipeline``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
import typing
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import SecretStr, ValidationError

from pipeline.broker import BrokerError, LocalBroker
from pipeline.config import (
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_FRAMES_TOPIC,
    DEFAULT_RESULTS_TOPIC,
    DEFAULT_TOPICS,
    DEFAULT_TRANSACTIONS_TOPIC,
    KafkaSettings,
    WorkerSettings,
)
from pipeline.exceptions import ModelError, WorkerExit
from pipeline.logs import formatter, mask
from pipeline.outage import install_rate_limit
from schemas.models import DeadLetter, Frame, Result, Transaction

log = logging.getLogger("streaminfer")
T = TypeVar("T")


def _bootstrap(args: argparse.Namespace) -> str:
    """--bootstrap, else STREAMINFER_KAFKA_BOOTSTRAP, else a running local broker, else :9092."""
    if getattr(args, "bootstrap", None):
        return str(args.bootstrap)
    if os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP"):
        return os.environ["STREAMINFER_KAFKA_BOOTSTRAP"]
    state = LocalBroker().status()
    return state.bootstrap if state else KafkaSettings().kafka_bootstrap


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    """The Kafka settings of a command (security from STREAMINFER_* env), checked once against
    the broker: refused credentials or an untrusted certificate end the command (exit 4)."""
    settings = KafkaSettings(kafka_bootstrap=_bootstrap(args))
    if not getattr(args, "_kafka_checked", False):
        from pipeline.kafka_access import check_access

        asyncio.run(check_access(settings.client_kwargs()))
        args._kafka_checked = True
    return settings


# -- broker ---------------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
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


def cmd_topics(args: argparse.Namespace) -> int:
    from pipeline.topics import create_topics, describe_topics

    names = args.topic or list(DEFAULT_TOPICS)
    if args.action == "describe":
        report = asyncio.run(describe_topics(_kafka(args), names))
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
    created = asyncio.run(create_topics(_kafka(args), names, args.partitions, args.replication))
    for name in names:
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


# -- worker ---------------------------------------------------------------------------


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per WorkerSettings field, so config is declared once; help shows each
    setting's default, its allowed values and its environment variable."""
    for name, field in WorkerSettings.model_fields.items():
        flags = ["--" + name.replace("_", "-")]
        if name == "kafka_bootstrap":
            flags.insert(0, "--bootstrap")  # the name every other command uses
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
        if name == "worker_id":
            default = "<hostname>-<pid>"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = ",".join(made) if isinstance(made, list) else made
        elif isinstance(field.default, SecretStr):
            default = "hidden"
        else:
            default = field.default
        parts = [field.description or "", f"default: {default}", f"env STREAMINFER_{name.upper()}"]
        parser.add_argument(
            *flags, dest=f"setting_{name}", metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
            help="; ".join(p for p in parts if p),
        )


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """Flags over ``STREAMINFER_*`` environment over defaults, as the worker reads them."""
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    if "kafka_bootstrap" not in overrides:
        overrides["kafka_bootstrap"] = _bootstrap(args)
    return WorkerSettings(**overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.app import run_worker

    settings = _worker_settings(args)
    stats = asyncio.run(run_worker(settings))
    print(json.dumps({"worker_id": settings.worker_id, **stats.as_dict()}), flush=True)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The worker's effective settings, one per line, secrets masked."""
    settings = _worker_settings(args)
    values = settings.model_dump()
    if args.json:
        print(json.dumps({k: ("***" if k == "sasl_password" and v else v) for k, v in values.items()}, default=str))
        return 0
    flagged = {k.removeprefix("setting_") for k, v in vars(args).items() if k.startswith("setting_") and v is not None}
    for name, value in values.items():
        shown = "***" if name == "sasl_password" and value else ",".join(value) if isinstance(value, list) else value
        env = f"STREAMINFER_{name.upper()}"
        source = "flag" if name in flagged else "env" if env in os.environ else "default"
        print(f"{name:<26} {shown!s:<40} ({source})")
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    """Per partition of the group: committed offset, end offset and lag; the group's members."""
    from pipeline.topics import group_lag, group_members

    kafka = _kafka(args)
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


# -- producers and results ------------------------------------------------------------


def cmd_produce(args: argparse.Namespace) -> int:
    from producers.publisher import publish
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
    report = _until_signalled(
        publish(
            events,
            bootstrap=_bootstrap(args),
            topic=topic,
            rate_per_s=rate or None,
            content_type=content_type,
            label=label,
            security=_kafka(args).client_kwargs(),
            total=args.count,
        )
    )
    if report is None:  # SIGTERM/SIGINT: what was sent is flushed by the producer's stop
        print(f"stopped on a signal: {label} sent so far are flushed to {topic}", file=sys.stderr)
    else:
        print(f"published {report.count} {label} to {topic} in {report.seconds:.1f}s", file=sys.stderr)
    return 0


def _until_signalled(work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; SIGTERM or SIGINT cancels it (its cleanup runs) and gives None.

    ``docker compose stop`` sends SIGTERM: long-running commands end within the grace
    period with exit 0 instead of being killed (137).
    """
    async def go() -> T | None:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled():
                return None
            raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(go())


def cmd_results(args: argparse.Namespace) -> int:
    from consumers.results_reader import read_dead_letters, read_results
    from pipeline.results_view import ResultsSummary, result_line

    stream: AsyncGenerator[Any, None]
    summary: ResultsSummary | None = None
    if args.dead_letters:
        stream = read_dead_letters(
            bootstrap=_bootstrap(args), topic=args.topic or DEFAULT_DEAD_LETTER_TOPIC, follow=args.follow,
            security=_kafka(args).client_kwargs(),
        )
        show: Callable[[Any], str] = _dead_letter_line
    else:
        stream = read_results(
            bootstrap=_bootstrap(args), topic=args.topic or DEFAULT_RESULTS_TOPIC, follow=args.follow,
            security=_kafka(args).client_kwargs(),
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

    count = _until_signalled(go())
    print(f"{'stopped on a signal' if count is None else f'{count} records'}", file=sys.stderr)
    return 0


def _dead_letter_line(dl: DeadLetter) -> str:
    return json.dumps({
        "reason": dl.reason, "message": dl.message, "input": dl.input.model_dump(),
        "bytes": len(dl.original), "worker_id": dl.worker_id,
    })


def cmd_viewer(args: argparse.Namespace) -> int:
    from pipeline.viewer import Viewer

    viewer = Viewer(_kafka(args).client_kwargs(), args.results_topic, args.frames_topic or None,
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


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(
        transactions=args.transactions, frames=args.frames, workers=args.workers,
        partitions=args.partitions, timeout_s=args.timeout,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        import bench  # noqa: F401
    except ImportError:
        print("streaminfer: the bench package is not installed here (it ships with the source checkout)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.part == "mixed":
        from bench.mixed import run_mixed

        run_mixed(_bootstrap(args), out / "bench-mixed.json", args.mixed_seconds, args.txn_rate, args.frame_rate,
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

        run_all(_bootstrap(args), out, reps=args.reps, transactions=args.transactions, frames=args.frames,
                latency_seconds=args.latency_seconds, baseline_cwd=args.baseline_worker_cwd)
    return 0


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaminfer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["text", "json"],
                        default=os.environ.get("STREAMINFER_LOG_FORMAT", "text"),
                        help="json: one object per line (ts, level, logger, message, error) "
                        "(default: $STREAMINFER_LOG_FORMAT, else text)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_bootstrap(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--bootstrap", help="Kafka host:port (default: $STREAMINFER_KAFKA_BOOTSTRAP, "
                       "else the local broker, else 127.0.0.1:9092)")
        return p

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
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="create the pipeline's topics, or describe them")
    p.add_argument("action", choices=["create", "describe"],
                   help="create: the missing ones; describe: partitions (leader, replicas, in-sync replicas, "
                   "end offset), replication and configuration (exit 1 if one does not exist)")
    p.add_argument("--partitions", type=int, default=4, help="create: partitions per topic (default: %(default)s)")
    p.add_argument("--replication", type=int, default=1, help="create: replication factor (default: %(default)s)")
    p.add_argument("--topic", action="append", help="topic name (repeatable; default: all four)")
    p.add_argument("--json", action="store_true", help="describe: the report as JSON")
    with_bootstrap(p).set_defaults(func=cmd_topics)

    p = sub.add_parser("config", help="show the worker's effective settings (flags, env, defaults)")
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true")
    _add_settings_flags(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("lag", help="a consumer group's lag per partition, and its members")
    p.add_argument("--group", default=WorkerSettings.model_fields["group_id"].default,
                   help="consumer group (default: %(default)s)")
    p.add_argument("--topic", action="append", help="only these topics (repeatable; default: all the group reads)")
    p.add_argument("--json", action="store_true")
    with_bootstrap(p).set_defaults(func=cmd_lag)

    p = sub.add_parser("worker", help="consume, batch, infer, produce results")
    _add_settings_flags(p)
    p.set_defaults(func=cmd_worker)

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
    with_bootstrap(p).set_defaults(func=cmd_produce)
    p = psub.add_parser("transactions", help="synthetic transactions, or replay a CSV/JSONL file")
    p.add_argument("--source", default="synthetic",
                   help="'synthetic', 'lending-club' (the real loans table; needs the real-data extra) "
                        "or a .csv/.jsonl path")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topic")
    p.add_argument("--json", action="store_true", help="publish JSON instead of msgpack")
    with_bootstrap(p).set_defaults(func=cmd_produce)

    p = sub.add_parser("results", help="read the results (or dead-letter) topic")
    p.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument("--dead-letters", action="store_true", help="read the dead-letter topic instead")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--topic")
    p.add_argument("--summary-every", type=float, default=0, metavar="SECONDS",
                   help="also print a summary line (count, rate, end-to-end latency) this often; 0: never")
    with_bootstrap(p).set_defaults(func=cmd_results)

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
    p.add_argument("--transactions", type=int, default=30_000, help="backlog size (default: %(default)s)")
    p.add_argument("--frames", type=int, default=200, help="backlog size (default: %(default)s)")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default: %(default)s)")
    p.add_argument("--latency-seconds", type=float, default=6.0,
                   help="length of each paced latency run (default: %(default)s)")
    p.add_argument("--out", default="bench-results", help="directory for JSON and PNG (default: %(default)s)")
    p.add_argument("--mixed-seconds", type=float, default=30)
    p.add_argument("--txn-rate", type=float, default=200)
    p.add_argument("--frame-rate", type=float, default=8)
    p.add_argument("--baseline-worker-cwd", metavar="DIR",
                   help="also run the worker from this checkout, interleaved with this one")
    with_bootstrap(p).set_defaults(func=cmd_bench)

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
    with_bootstrap(p).set_defaults(func=cmd_viewer)

    p = sub.add_parser("demo", help="local broker + topics + workers + producers, then a summary")
    p.add_argument("--transactions", type=int, default=2000)
    p.add_argument("--frames", type=int, default=100, help="split over two cameras at 5 fps each")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--timeout", type=float, default=180.0)
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(exc: ValidationError) -> str:
    """Each refused setting with its flag, what is wrong and the value given: no dump, no link."""
    problems = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:  # a rule across settings: its message names them (and the input could hold secrets)
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        name = ".".join(str(part) for part in error["loc"])
        flag = "--" + name.replace("_", "-")
        problems.append(f"{flag} (STREAMINFER_{name.upper()}): {error['msg']}, got {error.get('input')!r}")
    return "; ".join(problems)


def _ended(args: argparse.Namespace, kind: str, why: str, code: int) -> int:
    """The one line a command ends with: plain, or a JSON object under --log-format json."""
    if args.log_format == "json":
        line = json.dumps({"level": "CRITICAL" if kind == "fatal" else "ERROR", "logger": "streaminfer",
                           "message": why, "exit_code": code})
    else:
        line = f"streaminfer: {kind}: {why}"
    print(mask(line), file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(args.log_format))
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    if not args.verbose:
        install_rate_limit("aiokafka")
    try:
        return int(args.func(args))
    except ValidationError as exc:
        return _ended(args, "error", _one_line(exc), 2)
    except (BrokerError, ModelError) as exc:
        return _ended(args, "error", str(exc), 2)
    except WorkerExit as exc:
        return _ended(args, "fatal", str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130
