"""Riding out broker outages: one line when the cluster goes away, a summary while it
stays away, one line when it is back, and a deadline after which the worker gives up.

Pure bookkeeping with an injected clock (no I/O besides logging), so it is tested
without a broker and without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("streaminfer.worker")


def describe(exc: BaseException) -> str:
    """``Type: message``, the type once (Kafka's errors already start their message with it),
    and just ``Type`` for an error without a message (e.g. CancelledError)."""
    text = str(exc)
    name = type(exc).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class Outage:
    """Tracks whether the cluster answers the worker.

    ``failed`` after each failed broker call, ``ok`` after each successful one;
    ``expired`` turns true once calls have failed for ``deadline_s`` without a success.
    Blips shorter than ``grace_s`` (a connection closing as the broker stops while the
    call before it still got through) are not logged at all.
    """

    def __init__(
        self,
        deadline_s: float,
        summary_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        grace_s: float = 1.0,
    ) -> None:
        self.deadline_s = deadline_s
        self.summary_every_s = summary_every_s
        self.grace_s = grace_s
        self._announced = False
        self._clock = clock
        self._log = logger
        self.since: float | None = None
        self.errors = 0
        self.last_error: BaseException | None = None
        self._last_summary = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def seconds(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def expired(self) -> bool:
        return self.since is not None and self.seconds() >= self.deadline_s

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        self.errors += 1
        self.last_error = exc
        if self.since is None:
            self.since = now
        if not self._announced and now - self.since >= self.grace_s:
            self._announced = True
            self._last_summary = now
            self._log.warning(
                "Kafka unreachable (%s); retrying, giving up after %.0fs", describe(exc), self.deadline_s
            )
        elif self._announced and now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            self._log.warning(
                "Kafka still unreachable after %.0fs (%d failed calls; last: %s)",
                now - self.since, self.errors, describe(exc),
            )

    def ok(self) -> None:
        if self._announced:
            self._log.warning(
                "Kafka reachable again after %.1fs (%d failed calls meanwhile)", self.seconds(), self.errors
            )
        self.since = None
        self._announced = False
        self.errors = 0
        self.last_error = None


class RateLimitFilter(logging.Filter):
    """Lets each distinct message of the ``prefix`` loggers through once per ``window_s``.

    Client libraries log every failed reconnect; during an outage that is ~100 lines a
    second. The first occurrence passes, repeats within the window are counted, and the
    next one after the window passes with the count of those it hid.
    """

    def __init__(self, prefix: str, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefix = prefix
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        passed_at, hidden = self._seen.get(key, (None, 0))
        if passed_at is not None and now - passed_at < self.window_s:
            self._seen[key] = (passed_at, hidden + 1)
            return False
        self._seen[key] = (now, 0)
        if hidden:
            record.msg = f"{record.msg} [{hidden} similar messages hidden in the last {now - passed_at:.0f}s]"  # type: ignore[operator]
        return True


def install_rate_limit(prefix: str = "aiokafka", window_s: float = 30.0) -> None:
    """Rate-limit ``prefix`` loggers on every root handler (logger filters don't reach children)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RateLimitFilter) for f in handler.filters):
            handler.addFilter(RateLimitFilter(prefix, window_s))
