"""Liveness for the container's HEALTHCHECK: the worker's ``/healthz``, or its heartbeat file.

With ``STREAMINFER_METRICS_PORT`` set (the image sets 9400) the check asks the worker's
``/healthz`` on 127.0.0.1, which its event loop answers (see ``pipeline.metrics``):
a stuck loop or a dead process does not. Without it, the heartbeat file below.

The worker touches ``health_file`` every ``INTERVAL_S`` from a task of its own event loop,
so the file grows stale when the process is gone or its loop is stuck (a blocking call, a
deadlock), not when the model is merely busy or the broker is away (the worker rides out an
outage by itself and exits when its deadline passes). Checking imports nothing heavy:

    python -m pipeline.health [--port PORT] [--file PATH] [--max-age SECONDS]

exits 0 when ``/healthz`` answers 200 (or the file was touched within ``--max-age``
seconds), else 1 with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

INTERVAL_S = 5.0
MAX_AGE_S = 30.0
ENV_FILE = "STREAMINFER_HEALTH_FILE"
ENV_PORT = "STREAMINFER_METRICS_PORT"


async def heartbeat(path: Path, interval_s: float = INTERVAL_S) -> None:
    """Touch ``path`` now and every ``interval_s`` until cancelled; remove it then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            path.touch()  # noqa: ASYNC240 - on the loop itself, on purpose: a stuck loop stops touching
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # noqa: ASYNC240 - once, on the way out


def check(path: Path, max_age_s: float = MAX_AGE_S, now: float | None = None) -> str | None:
    """None when healthy, else why not."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return f"unhealthy: {path} does not exist (the worker has not started, or has stopped)"
    if age > max_age_s:
        return f"unhealthy: {path} last touched {age:.0f}s ago (limit {max_age_s:.0f}s): the worker's loop is stuck"
    return None


def check_http(port: int, timeout_s: float = 5.0) -> str | None:
    """None when the worker's ``/healthz`` answers 200, else why not."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except HTTPError as exc:
        return f"unhealthy: {url} answered {exc.code}"
    except URLError as exc:
        return f"unhealthy: {url} did not answer ({getattr(exc, 'reason', exc)})"
    except OSError as exc:  # e.g. a timeout: the loop is stuck
        return f"unhealthy: {url} did not answer ({exc})"
    return None if status == 200 else f"unhealthy: {url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.health", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get(ENV_PORT) or 0) or None,
                        help=f"the worker's metrics port: ask its /healthz (default: ${ENV_PORT})")
    parser.add_argument("--file", default=os.environ.get(ENV_FILE), help=f"default: ${ENV_FILE}")
    parser.add_argument("--max-age", type=float, default=MAX_AGE_S, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if args.port:
        problem = check_http(args.port)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if not args.file:
        print(f"unhealthy: nothing to check: set {ENV_PORT} (or --port) or {ENV_FILE} (or --file)", file=sys.stderr)
        return 1
    problem = check(Path(args.file), args.max_age)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
