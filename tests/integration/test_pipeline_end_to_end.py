"""The acceptance run: two worker processes in one group on a real broker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path

import msgpack
import numpy as np
from aiokafka import AIOKafkaProducer

from producers.publisher import publish
from producers.transaction_source import iter_synthetic_transactions
from producers.video_source import iter_video_frames
from schemas import Frame, FrameEncoding, Reason, encode
from schemas.images import encode_image
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_dead_letters, collect_results
from tests.integration.workers import WorkerProcess, wait_until

N_TRANSACTIONS = 2000
N_FRAMES = 300
STREAMS = ("cam-north", "cam-south", "cam-east")


def malformed_messages() -> list[tuple[bytes, bytes, str, Reason]]:
    """(key, value, content-type, expected reason): 4 each of 5 kinds."""
    rng = np.random.default_rng(7)
    jpeg = encode_image(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), FrameEncoding.JPEG)
    out = []
    for i in range(4):
        out.append((b"bad-random", bytes([0xC1]) + rng.bytes(50 + i), "application/msgpack", Reason.NOT_MSGPACK))
        out.append((b"bad-schema", msgpack.packb({"kind": "transaction", "id": f"x{i}", "amount": "lots"}),
                    "application/msgpack", Reason.INVALID_SCHEMA))
        huge = Frame(stream_id="bad-huge", seq=i, captured_at_ms=0, encoding=FrameEncoding.JPEG,
                     width=20_000, height=20_000, data=jpeg)
        out.append((b"bad-huge", encode(huge), "application/msgpack", Reason.FRAME_TOO_LARGE))
        corrupt = Frame(stream_id="bad-jpeg", seq=i, captured_at_ms=0, encoding=FrameEncoding.JPEG,
                        width=80, height=64, data=jpeg[: 150 + i])
        out.append((b"bad-jpeg", encode(corrupt), "application/msgpack", Reason.BAD_IMAGE))
        out.append((b"bad-json", json.dumps({"kind": "transaction", "id": f"j{i}", "currency": "USD"}).encode(),
                    "application/json", Reason.INVALID_SCHEMA))
    return out


async def _publish_all(topics: Topics, bad: list[tuple[bytes, bytes, str, Reason]]) -> None:
    txs = list(iter_synthetic_transactions(N_TRANSACTIONS, seed=11))
    frames = [f for s in STREAMS for f in iter_video_frames("synthetic", stream_id=s, count=N_FRAMES // len(STREAMS))]
    await publish(txs[:1000] + frames[:150], bootstrap=topics.bootstrap, topic=topics.inputs)
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, content_type, _ in bad:
            headers = [("content-type", content_type.encode())]
            await producer.send_and_wait(topics.inputs, value, key=key, headers=headers)
    finally:
        await producer.stop()
    # good input after the bad: the workers must keep going
    await publish(txs[1000:] + frames[150:], bootstrap=topics.bootstrap, topic=topics.inputs)


def test_two_workers_give_exactly_one_result_per_input_and_dead_letter_bad_ones(
    topics: Topics, tmp_path: Path
) -> None:
    env = topics.worker_env() | {"STREAMINFER_MAX_BATCH_SIZE": "16", "STREAMINFER_MAX_WAIT_MS": "25"}
    workers = [WorkerProcess(f"w{i}", env, tmp_path) for i in (1, 2)]
    try:
        wait_until(lambda: all(len(w.assigned()) == 2 for w in workers), 90,
                   "both workers to hold two partitions each", workers)
        bad = malformed_messages()
        asyncio.run(_publish_all(topics, bad))

        expected = N_TRANSACTIONS + N_FRAMES
        results = collect_results(topics.bootstrap, topics.results, expected, timeout_s=240)
        dead = collect_dead_letters(topics.bootstrap, topics.dead_letters, len(bad), timeout_s=60)
        assert all(w.alive() for w in workers), "a worker died on bad input"
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], [w.log()[-2000:] for w in workers]

    # exactly one result per input message
    ids = Counter(r.event_id for r in results)
    assert len(results) == expected, f"got {len(results)} results, expected {expected}"
    assert len(ids) == expected and max(ids.values()) == 1
    assert Counter(r.kind for r in results) == {"transaction": N_TRANSACTIONS, "frame": N_FRAMES}
    coords = {(r.input.partition, r.input.offset) for r in results}
    assert len(coords) == expected

    # per-key order: results of one key come out in input-offset order
    by_key: dict[str | None, list[int]] = defaultdict(list)
    for r in results:
        by_key[r.key].append(r.input.offset)
    assert all(offs == sorted(offs) for offs in by_key.values())
    for stream in STREAMS:
        seqs = [int(r.event_id.rsplit("/", 1)[1]) for r in results if r.key == stream]
        assert seqs == list(range(N_FRAMES // len(STREAMS)))

    # both workers served partitions and produced results
    assert {r.worker_id for r in results} == {"w1", "w2"}
    assert all(r.batch_size >= 1 for r in results) and max(r.batch_size for r in results) > 1

    # every malformed message is a dead letter with its reason; nothing else is
    assert len(dead) == len(bad)
    want = Counter((key.decode(), reason.value) for key, _, _, reason in bad)
    got = Counter(((d.key or b"").decode(), d.reason) for d in dead)
    assert got == want
    assert all(d.message and d.input.topic == topics.inputs and d.original for d in dead)
    originals = {value for _, value, _, _ in bad}
    assert {d.original for d in dead} == originals
