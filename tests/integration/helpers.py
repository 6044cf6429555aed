from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import TypeVar

from consumers.results_reader import read_dead_letters, read_results, until
from schemas import DeadLetter, Result

T = TypeVar("T")


async def _collect(stream: AsyncGenerator[T, None], count: int, timeout_s: float) -> list[T]:
    got: list[T] = []
    async with contextlib.aclosing(stream):
        async for item in until(stream, time.monotonic() + timeout_s):
            got.append(item)
            if len(got) >= count:
                break
    return got


def collect_results(bootstrap: str, topic: str, count: int, timeout_s: float = 120) -> list[Result]:
    """Read the results topic from the start until ``count`` arrive (or the timeout)."""
    return asyncio.run(_collect(read_results(bootstrap=bootstrap, topic=topic, follow=True), count, timeout_s))


def read_all(bootstrap: str, topic: str) -> list[Result]:
    """Everything on the topic now (duplicates included)."""
    async def go() -> list[Result]:
        return [r async for r in read_results(bootstrap=bootstrap, topic=topic, follow=False)]

    return asyncio.run(go())


def collect_dead_letters(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> list[DeadLetter]:
    return asyncio.run(
        _collect(read_dead_letters(bootstrap=bootstrap, topic=topic, follow=True), count, timeout_s)
    )
