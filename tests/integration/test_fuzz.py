"""Property: whatever bytes land on the input topic, a running worker never exits and every
message ends as exactly one result or one dead letter.

Hypothesis makes the messages: random bytes, random msgpack and JSON structures, valid
transactions and frames with one field made hostile (huge integers, NaN, wrong types,
lying image dimensions, unknown kinds), under random content types. One worker serves
every example; each example's messages are matched to outcomes by input offset.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.results_reader import read_dead_letters, read_results
from schemas.codec import JSON, MSGPACK
from schemas.images import encode_image
from schemas.models import FrameEncoding
from tests.integration.conftest import Topics
from tests.integration.workers import WorkerProcess

Message = tuple[bytes, list[tuple[str, bytes]]]

_JPEG = encode_image(np.full((24, 32, 3), 90, dtype=np.uint8), FrameEncoding.JPEG)

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1)
           | st.floats() | st.text(max_size=20) | st.binary(max_size=40))
structures = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)


def _transaction(i: int) -> dict[str, Any]:
    return {"kind": "transaction", "id": f"fz{i}", "account_id": "acct", "timestamp_ms": 1_700_000_000_000,
            "amount": 12.5, "currency": "EUR"}


def _frame(i: int) -> dict[str, Any]:
    return {"kind": "frame", "stream_id": "cam", "seq": i, "captured_at_ms": 1_700_000_000_000,
            "encoding": "jpeg", "width": 32, "height": 24, "channels": 3, "data": _JPEG}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid transaction or frame, maybe with one field replaced by something hostile."""
    i = draw(st.integers(0, 10**6))
    event = draw(st.sampled_from([_transaction, _frame]))(i)
    if draw(st.booleans()):
        field = draw(st.sampled_from([*event, "extra"]))
        event[field] = draw(structures | st.sampled_from([2**64, -1, 10**30, float("nan"), float("inf"), 0, "", []]))
    return event


def _encode(obj: Any, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(obj, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)).encode()
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # an integer past msgpack's range: send an invalid byte instead


@st.composite
def messages(draw: st.DrawFn) -> Message:
    shape = draw(st.sampled_from(["bytes", "structure", "event", "event"]))
    as_json = draw(st.booleans())
    if shape == "bytes":
        value = draw(st.binary(max_size=300))
    else:
        value = _encode(draw(structures if shape == "structure" else events()), as_json)
    content_type = draw(st.sampled_from([JSON if as_json else MSGPACK, None, "text/plain", JSON, MSGPACK]))
    return value, [("content-type", content_type.encode())] if content_type else []


@pytest.fixture(scope="module")
def fuzz_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Topics, WorkerProcess]]:
    topics = Topics(kafka_bootstrap, partitions=2)
    worker = WorkerProcess("fuzz", topics.worker_env() | {
        "STREAMINFER_FRAME_MODEL": "builtin:frame-cnn", "STREAMINFER_MAX_WAIT_MS": "10",
    }, tmp_path_factory.mktemp("fuzz"))
    worker.wait_assigned(2)
    yield topics, worker
    assert worker.stop() == 0, worker.log()[-3000:]


async def _publish(bootstrap: str, topic: str, batch: list[Message]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=b"fz", headers=headers) for value, headers in batch]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def _outcomes(topics: Topics) -> Counter[tuple[int, int]]:
    seen: Counter[tuple[int, int]] = Counter()
    async for r in read_results(bootstrap=topics.bootstrap, topic=topics.results, follow=False):
        seen[(r.input.partition, r.input.offset)] += 1
    async for d in read_dead_letters(bootstrap=topics.bootstrap, topic=topics.dead_letters, follow=False):
        seen[(d.input.partition, d.input.offset)] += 1
    return seen


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(messages(), min_size=10, max_size=60))
def test_every_hostile_message_ends_as_exactly_one_outcome(
    fuzz_worker: tuple[Topics, WorkerProcess], batch: list[Message]
) -> None:
    topics, worker = fuzz_worker
    sent = asyncio.run(_publish(topics.bootstrap, topics.inputs, batch))
    deadline = time.monotonic() + 90
    while True:
        seen = asyncio.run(_outcomes(topics))
        missing = [ref for ref in sent if seen[ref] == 0]
        if not missing or time.monotonic() > deadline:
            break
        assert worker.alive(), worker.log()[-3000:]
        time.sleep(0.5)
    assert worker.alive(), worker.log()[-3000:]
    assert missing == [], f"{len(missing)} of {len(sent)} messages got no outcome"
    assert [ref for ref in sent if seen[ref] > 1] == [], "a message got two outcomes"
