"""The ``streaminfer`` command (also ``python -m pipeline``): the parser and how a command
ends. Each command is a module of ``pipeline.commands``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from devtools.broker import BrokerError
from pipeline.commands import bench, broker, config, demo, lag, produce, results, topics, viewer, worker
from pipeline.exceptions import ConfigurationError, ModelError, WorkerExit
from pipeline.logs import formatter, mask
from pipeline.outage import install_rate_limit

log = logging.getLogger("streaminfer")
COMMANDS = (broker, topics, config, lag, worker, produce, results, bench, viewer, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streaminfer",
        description="Streaming inference on Kafka: frames and transactions in, batched through PyTorch models, "
        "results and dead letters out.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["text", "json"],
                        default=os.environ.get("STREAMINFER_LOG_FORMAT", "text"),
                        help="json: one object per line (ts, level, logger, message, error) "
                        "(default: $STREAMINFER_LOG_FORMAT, else text)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
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
    except (BrokerError, ModelError, ConfigurationError) as exc:
        return _ended(args, "error", str(exc), 2)
    except WorkerExit as exc:
        return _ended(args, "fatal", str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130
