"""The worker loop on in-memory fakes: every input gets one outcome, offsets are committed
only after their outcomes are acked, and only infrastructure faults stop the worker."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from consumers.source import Record
from consumers.testing import MemorySource
from pipeline.batcher import Batch, Batcher, CloseReason
from pipeline.config import WorkerSettings
from pipeline.exceptions import BrokerUnavailable, ClusterChanged, DeviceFailed
from pipeline.inflight import WorkItem
from pipeline.runner import Runner
from pipeline.worker import Worker, WorkerStats, _Ahead, _Lane
from producers.sinks import Delivery, OutRecord
from producers.testing import MemorySink, MemoryTransactions
from schemas import JSON, Transaction, encode
from schemas.codec import DLQ_ORIGINAL_SHA256, DLQ_ORIGINAL_SIZE, DLQ_REASON, DLQ_TRUNCATED, decode_result
from schemas.models import Frame, FrameEncoding

CPU = torch.device("cpu")
RESULTS, DLQ = "results", "dlq"
POISON, HUGE, NAN = 666.0, 777.0, 888.0


class Scorer:
    """A tiny real model: the score is the amount. Raises on POISON, emits an unencodable
    integer for HUGE and NaN for NAN; ``gate`` (when given) blocks forward until set."""

    name, version, kind, output_fields = "scorer", "1", "transaction", ("score",)

    def __init__(self, gate: threading.Event | None = None, per_batch_s: float = 0.0,
                 per_item_per_item_s: float = 0.0, per_item_s: float = 0.0) -> None:
        self.gate = gate
        self.per_batch_s = per_batch_s  # a fixed cost per batch: larger batches are cheaper per item
        self.per_item_s = per_item_s  # a cost per item: every size costs the same per item
        # a cost that grows with the square of the batch: larger batches are dearer per item
        self.per_item_per_item_s = per_item_per_item_s
        self.batches: list[int] = []

    def to(self, device: torch.device) -> None:
        pass

    def preprocess(self, item: Any) -> torch.Tensor:
        return torch.tensor([item.amount], dtype=torch.float64)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.per_batch_s + self.per_item_s * len(batch) + self.per_item_per_item_s * len(batch) ** 2)
        self.batches.append(len(batch))
        if (batch == POISON).any():
            raise ValueError("cannot score the poison amount")
        return batch

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for (amount,) in output.tolist():
            score: Any = 2**70 if amount == HUGE else math.nan if amount == NAN else amount
            rows.append({"score": score})
        return rows


def txn(i: int, amount: float | None = None) -> bytes:
    return encode(Transaction(id=f"t{i}", account_id=f"a{i % 3}", timestamp_ms=1_700_000_000_000 + i,
                              amount=float(i) if amount is None else amount, currency="EUR"))


def settings(**overrides: Any) -> WorkerSettings:
    """Tests that need a batch of a given size or composition say ``batching="fixed"``:
    adaptive batching (the default) closes a window as soon as the model is free."""
    base: dict[str, Any] = dict(
        input_topics=["in"], results_topic=RESULTS, dead_letter_topic=DLQ, worker_id="w1",
        max_batch_size=8, max_wait_ms=5, commit_interval_ms=0, queued_batches=2,
    )
    return WorkerSettings(**(base | overrides))


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


class Harness:
    def __init__(self, source: MemorySource, sink: MemorySink | None, model: Any = None,
                 transactions: MemoryTransactions | None = None, streams: int = 1, **overrides: Any) -> None:
        self.source, self.sink = source, sink
        self.model = model or Scorer()
        self.worker = Worker(settings(**overrides), Runner({"transaction": self.model}, CPU, streams=streams),
                             source, sink, transactions=transactions)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[WorkerStats] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run(self.stop))

    async def finish(self) -> WorkerStats:
        assert self.task is not None
        self.stop.set()
        return await self.task

    def committed(self, partition: int = 0) -> int:
        return self.source.committed.get(TopicPartition("in", partition), 0)


def result_ids(sink: MemorySink) -> list[str]:
    return [decode_result(r.value).event_id for r in sink.on(RESULTS)]


def reasons(sink: MemorySink) -> list[str]:
    return [dict(r.headers)[DLQ_REASON].decode() for r in sink.on(DLQ)]


def test_every_input_gets_one_outcome_and_offsets_commit_after_acks() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(partitions=2), MemorySink()
        for i in range(40):
            source.add(txn(i), partition=i % 2)
        source.add(b"\xc1 not msgpack", partition=0)
        sink.hold()
        h = Harness(source, sink, batching="fixed")
        h.start()
        await eventually(lambda: len(sink.sent) >= 16, "outcomes sent")
        await asyncio.sleep(0.05)
        assert source.committed == {}, "committed before the broker acked"
        sink.release()
        await eventually(lambda: h.committed(0) == 21 and h.committed(1) == 20, "commits after acks")
        stats = await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(40))
        assert reasons(sink) == ["malformed_msgpack"]
        assert (stats.results, stats.dead_letters) == (40, 1)

    run(scenario)


BROKEN_DEVICE = 555.0


class FailingDevice(Scorer):
    """A CUDA error (an illegal memory access) on the batch holding BROKEN_DEVICE: a device
    that fails so runs nothing after it in this process."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if (batch == BROKEN_DEVICE).any():
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return super().forward(batch)


def test_a_failed_device_stops_the_worker_with_exit_6_and_commits_nothing_of_the_batch() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(partitions=1), MemorySink()
        for i in range(8):
            source.add(txn(i))
        h = Harness(source, sink, model=FailingDevice(), batching="fixed")
        h.start()
        await eventually(lambda: h.committed(0) == 8, "the first batch committed")
        for i in range(8, 16):
            source.add(txn(i, BROKEN_DEVICE if i == 11 else None))
        assert h.task is not None
        with pytest.raises(DeviceFailed) as failed:
            await asyncio.wait_for(h.task, 10)
        assert failed.value.exit_code == 6 and "illegal memory access" in str(failed.value)
        # not bisected into dead letters (a failed device runs nothing): read again on restart
        assert sink.on(DLQ) == [] and sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(8))
        assert h.committed(0) == 8

    run(scenario)


class SlowFirst(Scorer):
    """The first batch (the one holding ``txn(0)``, amount 0) takes ``first_s``, the others
    almost nothing; counts how many batches were in ``forward`` at once. By content, not by
    which forward call comes first: two threads may enter in either order, and the second
    batch, entering first and slowed, let the first one's results out ahead of the test's
    look (a clean-clone CI run, 2026-12-07)."""

    def __init__(self, first_s: float) -> None:
        super().__init__()
        self.first_s = first_s
        self.lock = threading.Lock()
        self.inside = self.most_inside = 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self.lock:
            first = bool((batch == 0.0).any())
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(self.first_s if first else 0.01)
        with self.lock:
            self.inside -= 1
            self.batches.append(len(batch))
        return batch


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_batches_run_in_two_model_threads_at_once_and_their_results_go_out_in_batch_order(delivery: str) -> None:
    """The first batch is slow: the batches after it run meanwhile in the other model
    thread, yet its results are sent, and its offsets committed, before theirs."""
    async def scenario() -> None:
        source = MemorySource()
        for i in range(16):
            source.add(txn(i))
        model = SlowFirst(first_s=0.4)
        sink = MemorySink() if delivery == "at-least-once" else None
        transactions = MemoryTransactions(source) if sink is None else None
        h = Harness(source, sink, model=model, transactions=transactions, streams=2, max_batch_size=4,
                    max_wait_ms=1, batching="fixed", queued_batches=4, delivery=delivery)
        h.start()
        await eventually(lambda: h.committed() == 16, "all committed")
        await h.finish()
        assert model.most_inside == 2, "the batches after the slow one did not run beside it"
        assert model.batches[-1] == 4 and len(model.batches) == 4
        sent = sink.on(RESULTS) if sink is not None else [
            r for r in transactions.records() if r.topic == RESULTS]  # type: ignore[union-attr]
        assert [decode_result(r.value).event_id for r in sent] == [f"t{i}" for i in range(16)]

    run(scenario)


def test_a_model_thread_whose_batch_waits_on_the_one_before_takes_the_next_batch() -> None:
    """The first batch is slow; the other model thread runs the second, and then, while the
    second's results wait for the first's, the third: a thread is free once its batch is out
    of the model, not once that batch's results are sent."""
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(16):
            source.add(txn(i))
        model = SlowFirst(first_s=2.0)  # long enough that a busy CI machine runs three 10 ms batches meanwhile
        h = Harness(source, sink, model=model, streams=2, max_batch_size=4, max_wait_ms=1, batching="fixed",
                    queued_batches=4)
        h.start()
        await eventually(lambda: len(model.batches) == 3, "three batches beside the slow first one", timeout_s=1.5)
        assert model.inside == 1 and not sink.sent, "the slow first batch is still in the model"
        await eventually(lambda: h.committed() == 16, "all committed")
        await h.finish()
        assert [decode_result(r.value).event_id for r in sink.on(RESULTS)] == [f"t{i}" for i in range(16)]

    run(scenario)


def test_the_next_batch_runs_while_the_one_before_sends_its_results() -> None:
    """One model thread; handing a batch's outcomes to the producer is held up: the next
    batch runs in the model meanwhile (its results still go out after the first's)."""
    async def scenario() -> None:
        source, sink = MemorySource(), _GatedHandOff()
        for i in range(8):
            source.add(txn(i))
        model = Scorer()
        h = Harness(source, sink, model=model, max_batch_size=4, max_wait_ms=1, batching="fixed", queued_batches=2)
        h.start()
        await eventually(lambda: sink.waiting == 1, "the first batch's hand-off waits")
        await eventually(lambda: len(model.batches) == 2, "the second batch ran meanwhile", timeout_s=2)
        sink.gate.set()
        await eventually(lambda: h.committed() == 8, "all committed")
        await h.finish()
        assert model.batches == [4, 4]
        assert [decode_result(r.value).event_id for r in sink.on(RESULTS)] == [f"t{i}" for i in range(8)]

    run(scenario)


class JitteryScorer(Scorer):
    """Each batch takes a random 0-4 ms (seeded): batches end out of order on two threads."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self.lock:
            delay = self.random.random() * 0.004
        time.sleep(delay)
        with self.lock:
            self.batches.append(len(batch))
        return batch


@pytest.mark.parametrize(("streams", "prepared_ahead"), [(1, False), (2, False), (1, True)])
def test_results_keep_input_order_while_records_trickle_in_and_batches_end_out_of_order(
        streams: int, prepared_ahead: bool) -> None:
    """Records arrive a few at a time (the queue runs empty and fills again, so batches are
    taken both by the infer loop and by batches leaving their threads); batches take random
    times; ``prepared_ahead``: the next batch is taken and preprocessed on the pool while
    the model runs one (as frames are). Every partition's results still go out in offset
    order."""
    N = 2000

    async def scenario() -> None:
        source, sink = MemorySource(partitions=2), MemorySink()
        model = JitteryScorer(seed=streams)
        model.preprocess_in_pool = prepared_ahead  # type: ignore[attr-defined]
        h = Harness(source, sink, model=model, streams=streams, max_batch_size=2, max_wait_ms=1, batching="fixed",
                    queued_batches=2)
        h.start()
        feed = random.Random(7)
        for i in range(N):
            source.add(txn(i, amount=1.0), partition=i % 2)  # none of the amounts the scorer fails on
            if feed.random() < 0.15:
                await asyncio.sleep(feed.random() * 0.004)
        await eventually(lambda: h.committed(0) + h.committed(1) == N, "all committed", timeout_s=60)
        await h.finish()
        for partition in (0, 1):
            ids = [int(decode_result(r.value).event_id[1:]) for r in sink.on(RESULTS)
                   if decode_result(r.value).input.partition == partition]
            assert ids == list(range(partition, N, 2)), f"partition {partition} out of order"

    run(scenario)


class _GatedHandOff(MemorySink):
    """A producer hand-off that waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        self.waiting += 1
        await self.gate.wait()
        return await super().send_many(records)


def test_an_early_dead_letter_acked_alone_does_not_commit_past_unacked_results() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        source.add(b"")  # empty: a dead letter at offset 1
        source.add(txn(2))
        sink.hold()
        h = Harness(source, sink, max_batch_size=1)  # one batch per record: three deliveries
        h.start()
        await eventually(lambda: len(sink.sent) == 3, "three outcomes sent")
        assert sink.release(DLQ) == 1
        await asyncio.sleep(0.05)
        assert h.committed() == 0, "the dead letter's ack committed past offset 0's unacked result"
        sink.release()
        await eventually(lambda: h.committed() == 3, "everything committed")
        await h.finish()

    run(scenario)


def test_one_raising_item_in_a_batch_of_32_is_its_only_dead_letter() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(32):
            source.add(txn(i, POISON if i == 7 else None))
        for i in range(32, 36):  # later messages still get results
            source.add(txn(i))
        h = Harness(source, sink, max_batch_size=32, max_wait_ms=200, batching="fixed")
        h.start()
        await eventually(lambda: h.committed() == 36, "all committed")
        stats = await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(36) if i != 7)
        assert reasons(sink) == ["model_failed"]
        assert stats.results == 35 and h.model.batches[0] == 32

    run(scenario)


def test_results_that_cannot_be_encoded_or_are_not_finite_become_dead_letters() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0, HUGE))
        source.add(txn(1, NAN))
        source.add(txn(2))
        # a timestamp past int64 used to crash the encoder: now the schema refuses it
        source.add(b'{"kind":"transaction","id":"x","account_id":"a","timestamp_ms":18446744073709551616,'
                   b'"amount":1,"currency":"EUR"}', headers=[("content-type", JSON.encode())])
        h = Harness(source, sink)
        h.start()
        await eventually(lambda: h.committed() == 4, "all committed")
        await h.finish()
        assert result_ids(sink) == ["t2"]
        assert reasons(sink) == ["result_encoding_failed", "invalid_output", "invalid_schema"]
        messages = [dict(r.headers)["streaminfer-error"].decode() for r in sink.on(DLQ)]
        assert "OverflowError" in messages[0] and "outputs.score is nan" in messages[1]

    run(scenario)


def test_an_input_over_the_payload_limit_is_dead_lettered_truncated_with_size_and_hash() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        big = b"\x00" * 5000
        source.add(big)
        source.add(txn(1))
        h = Harness(source, sink, max_payload_bytes=1024)
        h.start()
        await eventually(lambda: h.committed() == 2, "all committed")
        await h.finish()
        [dl] = sink.on(DLQ)
        headers = dict(dl.headers)
        assert headers[DLQ_REASON] == b"payload_too_large" and headers[DLQ_TRUNCATED] == b"true"
        assert len(dl.value) == 1024 and headers[DLQ_ORIGINAL_SIZE] == b"5000"
        import hashlib

        assert headers[DLQ_ORIGINAL_SHA256].decode() == hashlib.sha256(big).hexdigest()
        assert result_ids(sink) == ["t1"]

    run(scenario)


def test_a_refused_result_becomes_its_dead_letter_and_a_refused_dead_letter_goes_without_original() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        source.add(b"\xc1")  # malformed
        sink.refuse(lambda r: r.topic == RESULTS, lambda: MessageSizeTooLargeError("too big"), times=1)
        sink.refuse(lambda r: r.topic == DLQ and r.value == b"\xc1", lambda: MessageSizeTooLargeError("too big"),
                    times=1)
        h = Harness(source, sink)
        h.start()
        await eventually(lambda: h.committed() == 2, "all committed")
        stats = await h.finish()
        assert reasons(sink) == ["result_rejected", "malformed_msgpack"]
        assert [r.value for r in sink.on(DLQ)][1] == b"" and stats.results == 0 and stats.dead_letters == 2

    run(scenario)


def test_records_sharing_a_delivery_each_get_their_outcome_and_a_refused_one_its_dead_letter() -> None:
    # as KafkaSink sends them: one delivery per record batch; the broker refuses the batch
    # that holds t3's result for its size, the batch goes again one by one, and only t3
    # becomes a dead letter (result_rejected); a malformed record's dead letter goes too
    async def scenario() -> None:
        source, sink = MemorySource(partitions=2), MemorySink(share=True)
        for i in range(12):
            source.add(txn(i), partition=i % 2)
        source.add(b"\xc1", partition=1)
        sink.refuse(lambda r: r.topic == RESULTS and decode_result(r.value).event_id == "t3",
                    lambda: MessageSizeTooLargeError("too big"), times=1)
        h = Harness(source, sink, max_batch_size=64, batching="fixed")
        h.start()
        await eventually(lambda: h.committed(0) == 6 and h.committed(1) == 7, "all committed")
        stats = await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(12) if i != 3)
        assert sorted(reasons(sink)) == ["malformed_msgpack", "result_rejected"]
        assert stats.results == 11 and stats.dead_letters == 2 and stats.produce_retries == 0
        # deliveries were shared: fewer of them than records sent together
        assert 0 < sink.shared_deliveries < 13

    run(scenario)


def test_an_outage_failing_a_shared_delivery_resends_its_records_and_loses_none() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink(share=True)
        for i in range(10):
            source.add(txn(i))
        sink.refuse(lambda r: True, lambda: KafkaTimeoutError("broker gone"), times=1)
        h = Harness(source, sink, max_batch_size=64, batching="fixed")
        h.start()
        await eventually(lambda: h.committed() == 10, "committed")
        stats = await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(10))
        assert stats.results == 10 and stats.produce_retries == 10  # each record of the failed batch went again

    run(scenario)


def test_produce_timeouts_are_retried_through_an_outage_and_nothing_is_lost() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(10):
            source.add(txn(i))
        sink.refuse(lambda r: True, lambda: KafkaTimeoutError("broker gone"), times=5)
        h = Harness(source, sink)
        h.start()
        await eventually(lambda: h.worker.checkpoint.cluster_id is not None, "the worker started")
        source.cluster_error = KafkaConnectionError("down")
        await eventually(lambda: len(sink.acked) == 10, "all acked after retries")
        source.cluster_error = None  # the broker is back: commits resume
        await eventually(lambda: h.committed() == 10, "committed")
        stats = await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(10)) and stats.produce_retries == 5

    run(scenario)


def test_an_outage_past_the_deadline_stops_the_worker_with_its_exit_code() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        source.poll_error = KafkaConnectionError("connection refused")
        h = Harness(source, sink, broker_outage_deadline_s=0.3)
        h.start()
        assert h.task is not None
        with pytest.raises(BrokerUnavailable) as info:
            await h.task
        assert info.value.exit_code == 3 and source.stopped and sink.stopped

    run(scenario)


def test_a_changed_cluster_id_stops_the_worker_before_it_commits_there() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        h = Harness(source, sink)
        h.start()
        await eventually(lambda: h.committed() == 1, "first commit")
        source.cluster = "cluster-b"  # the broker was wiped and restarted under the worker
        source.add(txn(1))
        assert h.task is not None
        with pytest.raises(ClusterChanged) as info:
            await h.task
        assert info.value.exit_code == 5 and source.commits == [{TopicPartition("in", 0): 1}]

    run(scenario)


def test_revoke_mid_batch_finishes_and_commits_before_the_partition_moves() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(partitions=2), MemorySink()
        for i in range(20):
            source.add(txn(i), partition=i % 2)
        sink.hold()
        h = Harness(source, sink, batching="fixed")
        h.start()
        await eventually(lambda: len(sink.sent) >= 16, "in flight")
        revoke = asyncio.create_task(source.revoke([TopicPartition("in", 1)]))
        await asyncio.sleep(0.05)
        assert not revoke.done(), "revoke returned while its partition's outcomes were unacked"
        sink.release()
        await revoke
        assert h.committed(1) == 10  # the next owner starts after everything delivered here
        for i in range(20, 24):
            source.add(txn(i), partition=i % 2)  # partition 1's new records are not ours anymore
        await eventually(lambda: h.committed(0) == 12, "partition 0 goes on")
        await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(24) if i < 20 or i % 2 == 0)

    run(scenario)


def test_backpressure_stops_polling_while_the_model_is_behind() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(500):
            source.add(txn(i))
        gate = threading.Event()
        h = Harness(source, sink, model=Scorer(gate), max_batch_size=4, queued_batches=1)
        h.start()
        await asyncio.sleep(0.3)
        # one batch in the model, one queued, one blocked on the queue, one poll's worth open
        assert source.polled <= 4 * 4, f"polled {source.polled} records while the model was stuck"
        gate.set()
        await eventually(lambda: h.committed() == 500, "the backlog drains", 20)
        await h.finish()
        assert len(result_ids(sink)) == 500

    run(scenario)


def test_an_idle_checkpoint_probes_the_cluster_and_notices_outage_recovery_and_change() -> None:
    from pipeline.checkpoint import PROBE_INTERVAL_S, Checkpoint
    from pipeline.outage import Outage

    async def scenario() -> None:
        now = [0.0]
        source = MemorySource()
        outage = Outage(deadline_s=60, clock=lambda: now[0])
        checkpoint = Checkpoint(source, outage, interval_s=0.2, clock=lambda: now[0])
        await checkpoint.begin()
        source.cluster_error = KafkaConnectionError("refused")
        await checkpoint.probe()
        assert not outage.down, "probed before the interval passed"
        now[0] += PROBE_INTERVAL_S
        await checkpoint.probe()
        assert outage.down
        now[0] += 70
        assert outage.expired()
        source.cluster_error = None
        await checkpoint.probe()
        assert not outage.down and checkpoint.fatal is None
        source.cluster = "cluster-b"
        now[0] += PROBE_INTERVAL_S
        await checkpoint.probe()
        assert isinstance(checkpoint.fatal, ClusterChanged)

    run(scenario)


def committed_ids(txns: MemoryTransactions) -> list[str]:
    return [decode_result(r.value).event_id for r in txns.records() if r.topic == RESULTS]


def test_exactly_once_commits_each_partitions_outcomes_with_its_offset_in_one_transaction() -> None:
    async def scenario() -> None:
        source = MemorySource(partitions=2)
        txns = MemoryTransactions(source)
        for i in range(30):
            source.add(txn(i), partition=i % 2)
        source.add(b"", partition=1)
        h = Harness(source, None, transactions=txns)
        h.start()
        await eventually(lambda: h.committed(0) == 15 and h.committed(1) == 16, "all committed")
        stats = await h.finish()
        assert sorted(committed_ids(txns)) == sorted(f"t{i}" for i in range(30))
        assert [r.topic for r in txns.records()].count(DLQ) == 1 and stats.dead_letters == 1
        for tp, records, next_offset in txns.committed:  # a transaction's offset covers its records
            offsets = sorted(int(decode_result(r.value).input.offset) if r.topic == RESULTS else
                             int(dict(r.headers)["streaminfer-source-offset"]) for r in records)
            assert offsets == list(range(offsets[0], next_offset)), (tp, offsets, next_offset)
        assert source.commits == [], "exactly-once committed offsets outside a transaction"
        assert txns.owned == set()

    run(scenario)


def test_exactly_once_replays_an_aborted_transaction_from_the_committed_offset_without_duplicates() -> None:
    async def scenario() -> None:
        source = MemorySource(partitions=2)
        txns = MemoryTransactions(source)
        for i in range(40):
            source.add(txn(i), partition=i % 2)
        txns.fail_next(TopicPartition("in", 0), KafkaTimeoutError("coordinator gone"))
        h = Harness(source, None, transactions=txns)
        h.start()
        await eventually(lambda: h.committed(0) == 20 and h.committed(1) == 20, "all committed")
        await h.finish()
        assert len(txns.aborted) == 1 and txns.recovered == [TopicPartition("in", 0)]
        assert source.seeks == 2  # the first assignment, then the replay
        ids = committed_ids(txns)
        assert sorted(ids) == sorted(f"t{i}" for i in range(40)) and len(ids) == len(set(ids))

    run(scenario)


def test_exactly_once_revoke_mid_batch_aborts_the_failed_work_and_the_next_owner_finishes_it() -> None:
    async def scenario() -> None:
        source = MemorySource(partitions=2)
        txns = MemoryTransactions(source)
        for i in range(20):
            source.add(txn(i), partition=i % 2)
        gate = asyncio.Event()
        txns.hold = gate
        tp1 = TopicPartition("in", 1)
        txns.fail_next(tp1, KafkaConnectionError("broker restarting"))
        h = Harness(source, None, transactions=txns, batching="fixed")
        h.start()
        await eventually(lambda: source.polled == 20, "all polled")
        revoke = asyncio.create_task(source.revoke([tp1]))
        await asyncio.sleep(0.05)
        assert not revoke.done(), "revoke returned while a transaction of its partition was open"
        gate.set()
        await revoke
        assert tp1 not in txns.owned and [tp for tp, _ in txns.aborted] == [tp1]
        await source.assign([tp1])  # the next owner (here: this worker again) replays from the commit
        await eventually(lambda: h.committed(0) == 10 and h.committed(1) == 10, "all committed")
        await h.finish()
        ids = committed_ids(txns)
        assert sorted(ids) == sorted(f"t{i}" for i in range(20)) and len(ids) == len(set(ids))

    run(scenario)


def test_exactly_once_a_refused_record_is_replaced_by_its_dead_letter_inside_the_transaction() -> None:
    async def scenario() -> None:
        source = MemorySource()
        txns = MemoryTransactions(source)
        for i in range(4):
            source.add(txn(i))
        txns.refuse(lambda r: r.topic == RESULTS and decode_result(r.value).event_id == "t2")
        h = Harness(source, None, transactions=txns, max_batch_size=4, max_wait_ms=100, batching="fixed")
        h.start()
        await eventually(lambda: h.committed() == 4, "all committed")
        await h.finish()
        assert sorted(committed_ids(txns)) == ["t0", "t1", "t3"]
        [dl] = [r for r in txns.records() if r.topic == DLQ]
        headers = dict(dl.headers)
        assert headers[DLQ_REASON] == b"result_rejected" and headers["streaminfer-source-offset"] == b"2"
        # the batch's transaction was aborted; its records then went one transaction each
        assert [len(records) for _, records, _ in txns.committed] == [1, 1, 1, 1] and len(txns.aborted) == 2

    run(scenario)


@pytest.mark.parametrize("exactly_once", [False, True])
def test_records_a_poll_returns_after_a_rebalance_inside_it_are_processed_not_dropped(exactly_once: bool) -> None:
    # found by the chaos test: dropping them advanced the position past records never processed
    async def scenario() -> None:
        source = MemorySource()
        sink = None if exactly_once else MemorySink()
        txns = MemoryTransactions(source) if exactly_once else None
        for i in range(10):
            source.add(txn(i))
        h = Harness(source, sink, transactions=txns)
        h.start()
        await eventually(lambda: h.committed() == 10, "the first records committed")
        tp = TopicPartition("in", 0)

        async def rebalance() -> None:
            await source.revoke([tp])
            await source.assign([tp])

        source.during_next_poll = rebalance
        for i in range(10, 20):
            source.add(txn(i))
        await eventually(lambda: h.committed() == 20, "the records after the rebalance committed")
        await h.finish()
        ids = committed_ids(txns) if txns is not None else result_ids(sink)  # type: ignore[arg-type]
        assert sorted(ids) == sorted(f"t{i}" for i in range(20))

    run(scenario)


def test_exactly_once_reads_nothing_until_a_replay_has_rewound_even_through_an_outage() -> None:
    async def scenario() -> None:
        source = MemorySource(partitions=2)
        txns = MemoryTransactions(source)
        for i in range(20):
            source.add(txn(i), partition=i % 2)
        txns.fail_next(TopicPartition("in", 1), KafkaTimeoutError("broker lost mid-transaction"))
        txns.recover_failures = 3  # the producer can only be re-created once the broker is back
        h = Harness(source, None, transactions=txns)
        h.start()
        for i in range(20, 60):  # input keeps coming meanwhile
            source.add(txn(i), partition=i % 2)
            await asyncio.sleep(0.01)
        await eventually(lambda: h.committed(0) == 30 and h.committed(1) == 30, "all committed")
        await h.finish()
        ids = committed_ids(txns)
        assert sorted(ids) == sorted(f"t{i}" for i in range(60)) and len(ids) == len(set(ids))
        assert txns.recover_failures == 0 and source.seeks == 2  # the first assignment, then the replay

    run(scenario)


def test_a_fatal_error_while_a_revoke_waits_ends_the_worker_instead_of_hanging_it(
        caplog: pytest.LogCaptureFixture) -> None:
    from aiokafka.errors import TopicAuthorizationFailedError

    from pipeline.exceptions import KafkaAccessDenied

    class CoordinatorLikeSource(MemorySource):
        """Like aiokafka: stop() awaits the coordination task running the revoke callback."""

        revoking: asyncio.Task[None] | None = None

        async def stop(self) -> None:
            if self.revoking is not None:
                await self.revoking
            self.stopped = True

    async def scenario() -> None:
        source, sink = CoordinatorLikeSource(), MemorySink()
        for i in range(20):
            source.add(txn(i))
        sink.hold()
        h = Harness(source, sink, max_batch_size=4)
        h.start()
        await eventually(lambda: len(sink.sent) >= 4, "outcomes in flight")
        source.revoking = asyncio.create_task(source.revoke([TopicPartition("in", 0)]))
        await asyncio.sleep(0.05)
        assert sink.fail_held(TopicAuthorizationFailedError) >= 4  # the broker now refuses this worker's writes
        assert h.task is not None
        with pytest.raises(KafkaAccessDenied) as info:
            await asyncio.wait_for(h.task, 5)
        assert info.value.exit_code == 4 and source.revoking.done()

    run(scenario)
    gc.collect()  # the deliveries the worker never got to: one line said why it stopped, and no more
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_exactly_once_refused_credentials_inside_a_transaction_end_the_worker_with_exit_4() -> None:
    from aiokafka.errors import TopicAuthorizationFailedError

    from pipeline.exceptions import KafkaAccessDenied

    async def scenario() -> None:
        source = MemorySource()
        txns = MemoryTransactions(source)
        source.add(txn(0))
        txns.fail_next(TopicPartition("in", 0), TopicAuthorizationFailedError())
        h = Harness(source, None, transactions=txns)
        h.start()
        assert h.task is not None
        with pytest.raises(KafkaAccessDenied):
            await asyncio.wait_for(h.task, 5)
        assert txns.committed == []

    run(scenario)


class FrameCounter:
    """A tiny real frame model: the label is the frame's mean pixel value. ``gate`` (when
    given) blocks forward until set."""

    name, version, kind, output_fields = "frame-counter", "1", "frame", ("labels",)

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.seen = 0
        self.gate = gate

    def to(self, device: torch.device) -> None:
        pass

    def preprocess(self, item: Any) -> torch.Tensor:
        return torch.tensor([float(sum(item.data)) / len(item.data)])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(10)
        self.seen += len(batch)
        return batch

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return [{"labels": [{"label": f"mean-{v:.0f}", "prob": 1.0}]} for (v,) in output.tolist()]


def frame(seq: int, captured_at_ms: int) -> bytes:
    return encode(Frame(stream_id="cam", seq=seq, captured_at_ms=captured_at_ms, encoding=FrameEncoding.RAW,
                        width=2, height=1, channels=1, data=bytes([seq, seq])))


def test_a_frame_weighs_what_it_holds_decoded_against_max_batch_bytes() -> None:
    """A JPEG of a 64x48 frame is well under 9,216 bytes, its pixels are 9,216: four of them
    fill a batch of 36,864 bytes, however many JPEGs would fit (windows counted by the JPEGs
    grew to hundreds of 640x480 frames, and a worker ran out of memory)."""
    from schemas.images import encode_image

    image = encode_image(np.zeros((48, 64, 3), np.uint8), FrameEncoding.JPEG)
    assert len(image) * 8 < 64 * 48 * 3

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for seq in range(40):
            source.add(encode(Frame(stream_id="cam", seq=seq, captured_at_ms=seq, encoding=FrameEncoding.JPEG,
                                    width=64, height=48, data=image)))
        worker = Worker(settings(batching="fixed", max_batch_size=64, max_batch_bytes=4 * 64 * 48 * 3,
                                 max_wait_ms=10_000), Runner({"frame": FrameCounter()}, CPU), source, sink)
        task = asyncio.create_task(worker.run(stop := asyncio.Event()))
        await eventually(lambda: len(sink.on(RESULTS)) == 40, "every frame's result")
        stop.set()
        await task
        sizes = [decode_result(r.value).batch_size for r in sink.on(RESULTS)]
        assert max(sizes) == 4, sizes

    run(scenario)


def test_frames_older_than_max_frame_age_get_a_skipped_stale_result_and_skip_the_model() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        now = int(time.time() * 1000)
        for seq in range(6):
            source.add(frame(seq, now - 60_000 if seq % 2 else now + 60_000))  # odd: a minute old
        model = FrameCounter()
        worker = Worker(settings(max_frame_age_ms=5_000), Runner({"frame": model}, CPU), source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: len(sink.on(RESULTS)) == 6, "six results")
        stop.set()
        stats = await task
        results = {r.event_id: r for r in (decode_result(x.value) for x in sink.on(RESULTS))}
        for seq in range(6):
            r = results[f"cam/{seq}"]
            if seq % 2:
                assert r.status == "skipped_stale" and r.outputs["max_frame_age_ms"] == 5_000
                assert 60_000 <= r.outputs["age_ms"] < 70_000 and r.batch_size == 0
                assert r.model_name == "frame-counter"
            else:
                assert r.status == "ok" and r.outputs["labels"][0]["label"] == f"mean-{seq}"
        assert model.seen == 3  # the stale frames never reached the model
        assert (stats.results, stats.skipped_stale, stats.dead_letters) == (6, 3, 0)
        assert h_committed(source) == 6

    run(scenario)


def test_without_a_max_frame_age_every_frame_is_classified() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(frame(0, 0))  # captured in 1970
        model = FrameCounter()
        worker = Worker(settings(), Runner({"frame": model}, CPU), source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: len(sink.on(RESULTS)) == 1, "a result")
        stop.set()
        await task
        assert decode_result(sink.on(RESULTS)[0].value).status == "ok" and model.seen == 1

    run(scenario)


def h_committed(source: MemorySource, partition: int = 0) -> int:
    return source.committed.get(TopicPartition("in", partition), 0)


def test_a_transaction_never_waits_behind_a_frame_batch_in_the_model() -> None:
    """One lane per input topic: while a frame batch is stuck in the model, transactions
    of the other topic still get their results."""

    async def scenario() -> None:
        source, sink = MemorySource(topic="frames", other_topics=["txns"]), MemorySink()
        source.add(frame(0, int(time.time() * 1000)), topic="frames")
        for i in range(20):
            source.add(txn(i), topic="txns")
        gate = threading.Event()
        frames = FrameCounter(gate)
        runner = Runner({"frame": frames, "transaction": Scorer()}, CPU)
        worker = Worker(settings(input_topics=["frames", "txns"]), runner, source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await eventually(lambda: len(sink.on(RESULTS)) == 20, "the transactions' results")
            assert frames.seen == 0, "the frame batch was not held in the model"
            assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(20))
        finally:
            gate.set()
        await eventually(lambda: len(sink.on(RESULTS)) == 21, "the frame's result")
        stop.set()
        await task
        committed = {tp.topic: offset for tp, offset in source.committed.items()}
        assert committed == {"frames": 1, "txns": 20}

    run(scenario)


def test_a_lane_whose_model_is_behind_pauses_its_topic_and_the_others_read_on() -> None:
    """The frame lane's queue fills while its model is held: its partitions are paused and
    the consume loop goes on polling, so transactions published afterwards are answered."""

    async def scenario() -> None:
        source, sink = MemorySource(topic="frames", other_topics=["txns"]), MemorySink()
        now = int(time.time() * 1000)
        for seq in range(12):  # batch size 1: twelve batches, far more than the queue holds
            source.add(frame(seq, now), topic="frames")
        gate = threading.Event()
        frames = FrameCounter(gate)
        runner = Runner({"frame": frames, "transaction": Scorer()}, CPU)
        worker = Worker(settings(input_topics=["frames", "txns"], max_batch_size=1, queued_batches=2),
                        runner, source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await eventually(lambda: bool(source.paused), "the frame partition paused")
            assert {tp.topic for tp in source.paused} == {"frames"}
            for i in range(10):  # only now: they must be polled past the stuck frame lane
                source.add(txn(i), topic="txns")
            await eventually(lambda: len(sink.on(RESULTS)) == 10, "the transactions' results")
            assert frames.seen == 0
        finally:
            gate.set()
        await eventually(lambda: len(sink.on(RESULTS)) == 22, "every frame's result")
        assert not source.paused, "the frame partition stayed paused after its lane caught up"
        stop.set()
        await task
        ids = result_ids(sink)
        assert [i for i in ids if i.startswith("cam/")] == [f"cam/{s}" for s in range(12)]  # in order
        assert {tp.topic: o for tp, o in source.committed.items()} == {"frames": 12, "txns": 10}

    run(scenario)


def test_adaptive_batching_sends_an_item_at_once_when_the_model_is_free() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        h = Harness(source, sink, max_batch_size=32, max_wait_ms=10_000)
        h.start()
        await asyncio.sleep(0.1)
        source.add(txn(0))
        # fixed windows would hold it for max_wait_ms (10 s) waiting for company
        await eventually(lambda: len(sink.on(RESULTS)) == 1, "the lone item's result", timeout_s=2)
        await h.finish()
        assert h.model.batches == [1]

    run(scenario)


def test_adaptive_batching_grows_batches_to_the_size_the_model_is_cheapest_at() -> None:
    """A model with a fixed cost per batch: the cap climbs from 4 to max_batch_size while a
    backlog drains; then, while the model is busy, arrivals gather into one batch."""

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(600):
            source.add(txn(i))
        gate = threading.Event()
        gate.set()
        model = Scorer(gate, per_batch_s=0.003)
        h = Harness(source, sink, model=model, max_batch_size=64, max_wait_ms=10_000)
        h.start()
        await eventually(lambda: h.committed() == 600, "the backlog drains")
        assert model.batches[:2] == [4, 4] and model.batches[-2] == 64, model.batches
        # a few dozen batches (one per size to set it up), not hundreds: 12-25 on a quiet
        # machine; up to 33 with two CPU hogs beside it, where a noisy sample made 8 look
        # dearer than 4 and the cap stepped down to 2 before it climbed again
        assert 64 in model.batches[:45], model.batches
        gate.clear()
        source.add(txn(600))
        await eventually(lambda: len(model.batches) > 0 and source.polled == 601, "polled")
        await asyncio.sleep(0.05)  # the lone item is in the model, held at the gate
        for i in range(601, 606):
            source.add(txn(i))
        await eventually(lambda: source.polled == 606, "the five polled")
        await asyncio.sleep(0.05)
        before = len(model.batches)
        gate.set()
        await eventually(lambda: h.committed() == 606, "the rest answered")
        assert model.batches[before:] == [1, 5], model.batches[before:]
        await h.finish()
        assert len(result_ids(sink)) == 606

    run(scenario)


class _SlowHandOff(MemorySink):
    """A producer hand-off with a fixed cost per batch (the produce request, the results)."""

    def __init__(self, seconds: float = 0.003) -> None:
        super().__init__()
        self.seconds = seconds

    async def send_many(self, records: Sequence[OutRecord]) -> list[Delivery]:
        await asyncio.sleep(self.seconds)
        return await super().send_many(records)


def test_adaptive_batching_counts_the_work_around_the_model_not_the_model_alone() -> None:
    """The model costs the same per item at every size; handing a batch's outcomes to the
    producer costs a fixed 3 ms. Timed on the model alone, batch 8 is no cheaper per item
    than 4 and the cap stays at 4; timed on the lane (model to producer), larger batches
    are cheaper per item and the cap climbs to the bound."""

    async def scenario() -> None:
        source, sink = MemorySource(), _SlowHandOff()
        for i in range(400):
            source.add(txn(i))
        model = Scorer(per_item_s=0.0005)
        h = Harness(source, sink, model=model, max_batch_size=16, max_wait_ms=10_000)
        h.start()
        await eventually(lambda: h.committed() == 400, "the backlog drains")
        await h.finish()
        assert model.batches[:2] == [4, 4] and 16 in model.batches, model.batches
        assert h.worker.lane_cap("in") == 16, model.batches
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(400))

    run(scenario)


def test_with_two_model_threads_the_cap_comes_from_the_batches_time_in_their_threads() -> None:
    """Two model threads, a model dearer per item the larger its batch (0.5 ms x size an
    item), and a hand-off to the producer of a fixed 6 ms a batch. The hand-off overlaps the
    next batch in the thread, so the threads bound the lane and the cap settles on the
    small sizes. Timed from the model to the producer, as for one thread, batch 4 looked
    the cheapest ((8 + 6) / 4 = 3.5 ms an item, against 6.5 at batch 1)."""

    async def scenario() -> None:
        source, sink = MemorySource(), _SlowHandOff(0.006)
        for i in range(200):
            source.add(txn(i))
        model = Scorer(per_item_per_item_s=0.0005)
        h = Harness(source, sink, model=model, streams=2, max_batch_size=8, max_wait_ms=10_000, queued_batches=4)
        h.start()
        await eventually(lambda: h.committed() == 200, "the backlog drains")
        await h.finish()
        assert h.worker.lane_cap("in") <= 2, model.batches
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(200))

    run(scenario)


def test_a_batch_in_a_model_thread_beside_one_of_another_size_is_marked_mixed() -> None:
    """Model threads share the CPU's caches: a batch's time beside one of another size says
    little about its own size, and the sizer is not told it."""
    def ahead(size: int) -> _Ahead:
        return _Ahead(Batch(tuple(range(size)), size, 0.0, 0.0, CloseReason.SIZE), 0, None)  # type: ignore[arg-type]

    lane = _Lane("in", Batcher(8, 1 << 20, 10), asyncio.Queue(), streams=2)
    first, second, third = ahead(4), ahead(4), ahead(2)
    lane.enter_model(first)
    lane.enter_model(second)
    assert not first.mixed and not second.mixed and not lane.model_free()
    lane.leave_model(first)
    assert lane.model_free()
    lane.enter_model(third)
    assert third.mixed and second.mixed and not first.mixed


def test_the_sizer_is_told_a_mixed_batch_as_one_beside_another_size() -> None:
    """``_learn`` hands a batch marked mixed to ``observe_beside`` (which only ends a try
    it shows far dearer), any other to ``observe``; with two threads, the time in its thread."""

    class Spy:
        def __init__(self, sizer: Any) -> None:
            self.sizer, self.calls = sizer, list[tuple[str, int, float]]()

        def observe(self, size: int, seconds: float) -> int:
            self.calls.append(("observe", size, seconds))
            return int(self.sizer.observe(size, seconds))

        def observe_beside(self, size: int, seconds: float) -> int:
            self.calls.append(("beside", size, seconds))
            return int(self.sizer.observe_beside(size, seconds))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sizer, name)

    async def scenario() -> None:
        h = Harness(MemorySource(), MemorySink(), streams=2, max_batch_size=8)
        lane = h.worker._lanes["in"]
        assert lane.sizer is not None
        spy = Spy(lane.sizer)
        lane.sizer = spy  # type: ignore[assignment]
        mixed, alone = (_Ahead(Batch(tuple(range(4)), 4, 0.0, 0.0, CloseReason.SIZE), 0, None)  # type: ignore[arg-type]
                        for _ in range(2))
        mixed.mixed = True
        h.worker._learn(lane, mixed, 4, 0.2, 0.04)
        h.worker._learn(lane, alone, 4, 0.2, 0.03)
        assert spy.calls == [("beside", 4, 0.04), ("observe", 4, 0.03)]

    run(scenario)


class _Warmable(Scorer):
    """A Scorer with an example input: the worker warms it up before reading."""

    def example_input(self) -> torch.Tensor:
        return torch.tensor([[1.0]], dtype=torch.float64)


def test_the_worker_warms_its_model_up_before_reading_and_starts_the_cap_at_the_cheapest_size() -> None:
    """Cheapest per item at batch 1 (dearer per item the larger): warmed up at 1, 2, 4, 8
    and 16 before a record is read (two set-up runs and one timed each), the cap starts
    at 1, not at 4."""

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        model = _Warmable(per_item_per_item_s=0.001)
        h = Harness(source, sink, model=model, max_batch_size=32, max_wait_ms=10_000)
        h.start()
        await eventually(lambda: source.started, "the source started")
        assert sorted(model.batches) == sorted([1, 2, 4, 8, 16] * 3), model.batches  # before it
        assert h.worker.lane_cap("in") == 1
        for i in range(8):
            source.add(txn(i))
        await eventually(lambda: h.committed() == 8, "all committed")
        await h.finish()
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(8))

    run(scenario)


def test_batches_closed_at_a_size_found_dearer_are_cut_to_the_new_cap_before_they_run() -> None:
    """A model dearer per item the larger its batch (a CNN on a CPU): the probe of batch 8
    runs its set-up batch and one sample, twice as dear per item as batch 4 (that ends the
    try), and the batch that took the model thread as the sample left it (before that
    sample's time was in); the batches of 8 closed
    meanwhile and still waiting are cut to the smaller cap, not run at 8. Every input still
    gets one result."""

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        for i in range(400):
            source.add(txn(i))
        model = Scorer(per_item_per_item_s=0.002)  # 128 ms a batch of 8, 2 ms a batch of 1
        h = Harness(source, sink, model=model, max_batch_size=8, max_wait_ms=10_000, queued_batches=4)
        h.start()
        await eventually(lambda: h.committed() == 400, "the backlog drains")
        await h.finish()
        assert model.batches.count(8) == 3, model.batches  # set-up, one sample, the one started: nothing queued
        assert model.batches[-1] <= 2, model.batches  # and it settles on the cheap sizes
        assert sorted(result_ids(sink)) == sorted(f"t{i}" for i in range(400))

    run(scenario)


def test_no_re_cut_while_in_flight_work_is_being_finished_then_order_is_kept() -> None:
    """Finishing in-flight work (a rebalance, the stop) moves held batches into the queue
    one await at a time: a re-cut then would put later batches ahead of the one waiting
    in put(). Otherwise the waiting batches are cut in order, the open window's full part
    after them."""

    async def scenario() -> None:
        runner = Runner({"transaction": Scorer()}, CPU)
        worker = Worker(settings(queued_batches=2), runner, MemorySource(), MemorySink())
        lane = worker._lanes["in"]
        items = [WorkItem(Record("in", 0, i, None, txn(i), (), 0), Transaction.model_construct(), 0, 0)
                 for i in range(11)]
        lane.queue.put_nowait((Batch(tuple(items[:8]), 8, 0.0, 0.0, CloseReason.SIZE), 1))
        for item in items[8:]:
            lane.batcher.add(item, 1, 0.0)
        worker._finishing = 1
        worker._recut(lane, 2)
        assert lane.queue.qsize() == 1 and len(lane.queue.get_nowait()[0]) == 8 and not lane.held
        lane.queue.task_done()
        lane.queue.put_nowait((Batch(tuple(items[:8]), 8, 0.0, 0.0, CloseReason.SIZE), 1))
        worker._finishing = 0
        worker._recut(lane, 2)
        parts = [lane.queue.get_nowait()[0] for _ in range(lane.queue.qsize())] + [b for b, _ in lane.held]
        assert [[it.record.offset for it in p.items] for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
        assert len(lane.batcher) == 1  # the window's last item waits for company

    run(scenario)


@pytest.mark.parametrize("content_type", ["msgpack", "json"])
def test_results_are_encoded_as_the_setting_says_and_labelled_so(content_type: str) -> None:
    async def scenario() -> None:
        import json

        source, sink = MemorySource(), MemorySink()
        source.add(txn(0))
        h = Harness(source, sink, result_content_type=content_type)
        h.start()
        await eventually(lambda: h.committed() == 1, "committed")
        await h.finish()
        [record] = sink.on(RESULTS)
        header = dict(record.headers)["content-type"].decode()
        assert header == f"application/{content_type}"
        if content_type == "json":
            assert json.loads(record.value)["event_id"] == "t0"
        assert decode_result(record.value, record.headers).outputs == {"score": 0.0}

    run(scenario)


class PreparedFrames(FrameCounter):
    """FrameCounter that opts into preparation ahead; records which frames were preprocessed
    on which thread, and how many batches its (gated) forward has finished."""

    preprocess_in_pool = True

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(gate)
        self.prepared: dict[int, str] = {}
        self.forwards_done = 0

    def preprocess(self, item: Any) -> torch.Tensor:
        self.prepared[item.seq] = threading.current_thread().name
        return super().preprocess(item)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = super().forward(batch)
        self.forwards_done += 1
        return out


def test_the_next_frame_batch_is_preprocessed_while_the_current_one_is_in_the_model() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        now = int(time.time() * 1000)
        for seq in range(6):
            source.add(frame(seq, now))
        gate = threading.Event()
        model = PreparedFrames(gate)
        runner = Runner({"frame": model}, CPU, prepare_threads=2)
        worker = Worker(settings(batching="fixed", max_batch_size=2), runner, source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            # frames 0-1 are held in the model; 2-3 are decoded meanwhile, off the model thread
            await eventually(lambda: {2, 3} <= model.prepared.keys(), "the next batch prepared")
            assert model.forwards_done == 0 and not sink.on(RESULTS)
            assert all(name.startswith("streaminfer-prepare") for name in model.prepared.values())
            await asyncio.sleep(0.2)  # time enough to take and prepare frames 4-5 too, had it gone further
            assert 4 not in model.prepared, "prepared more than one batch ahead"
        finally:
            gate.set()
        await eventually(lambda: len(sink.on(RESULTS)) == 6, "six results")
        stop.set()
        await task
        assert result_ids(sink) == [f"cam/{seq}" for seq in range(6)]  # the stream's order kept
        assert [decode_result(r.value).outputs["labels"][0]["label"] for r in sink.on(RESULTS)] == [
            f"mean-{seq}" for seq in range(6)]
        assert h_committed(source) == 6

    run(scenario)


def test_frames_that_go_stale_while_prepared_ahead_still_skip_the_model() -> None:
    """The age is checked when the batch reaches the model, not when it was prepared."""

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        now = int(time.time() * 1000)
        for seq in range(4):
            source.add(frame(seq, now))
        gate = threading.Event()
        model = PreparedFrames(gate)
        worker = Worker(settings(batching="fixed", max_batch_size=2, max_frame_age_ms=300),
                        Runner({"frame": model}, CPU, prepare_threads=2), source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: {2, 3} <= model.prepared.keys(), "the next batch prepared")
        await asyncio.sleep(0.5)  # everything is now older than 300 ms
        gate.set()
        await eventually(lambda: len(sink.on(RESULTS)) == 4, "four results")
        stop.set()
        await task
        statuses = {decode_result(r.value).event_id: decode_result(r.value).status for r in sink.on(RESULTS)}
        # 0-1 reached the model before they aged (the gate held them inside it); 2-3 did not
        assert statuses == {"cam/0": "ok", "cam/1": "ok", "cam/2": "skipped_stale", "cam/3": "skipped_stale"}
        assert model.seen == 2

    run(scenario)


class LateSource(MemorySource):
    """A consumer whose broker does not answer its first ``fails`` starts (it is still coming up)."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails, self.attempts, self.stops = fails, 0, 0

    async def start(self, on_revoked: Any, on_assigned: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.fails:
            raise KafkaConnectionError("Unable to bootstrap from [('kafka', 9092)]")
        await super().start(on_revoked, on_assigned)

    async def stop(self) -> None:
        self.stops += 1
        await super().stop()


def test_a_worker_that_starts_before_its_broker_waits_for_it() -> None:
    async def scenario() -> None:
        source, sink = LateSource(fails=3), MemorySink()
        for i in range(5):
            source.add(txn(i))
        h = Harness(source, sink, broker_outage_deadline_s=30)
        h.start()
        await eventually(lambda: len(sink.on(RESULTS)) == 5, "results once the broker answers")
        stats = await h.finish()
        assert source.attempts == 4 and stats.results == 5
        assert source.stops >= 3  # each half-started client was closed before the next try

    run(scenario)


def test_a_broker_that_never_answers_at_start_ends_the_worker_at_the_outage_deadline() -> None:
    async def scenario() -> None:
        source, sink = LateSource(fails=10_000), MemorySink()
        h = Harness(source, sink, broker_outage_deadline_s=0.4)
        h.start()
        assert h.task is not None
        with pytest.raises(BrokerUnavailable, match="unreachable"):
            await h.task
        assert source.attempts >= 2 and sink.stopped

    run(scenario)


def test_a_stop_while_waiting_for_the_broker_at_start_ends_the_worker_cleanly() -> None:
    async def scenario() -> None:
        source, sink = LateSource(fails=10_000), MemorySink()
        h = Harness(source, sink, broker_outage_deadline_s=60)
        h.start()
        await eventually(lambda: source.attempts >= 2, "a retried start")
        stats = await h.finish()
        assert stats.results == 0 and sink.stopped

    run(scenario)
