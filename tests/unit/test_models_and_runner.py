from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.models import FrameCNN, ModelError, TransactionMLP, load_model
from pipeline.models.transactions import FEATURE_DIM, transaction_features, transaction_to_tensor, transactions_to_batch
from pipeline.runner import Outcome, Runner
from schemas import Frame, FrameEncoding, Reason, Transaction
from schemas.images import encode_image

CPU = torch.device("cpu")


def frame(seq: int, data: bytes | None = None) -> Frame:
    img = np.full((40, 50, 3), seq * 20 % 255, dtype=np.uint8)
    return Frame(stream_id="s", seq=seq, captured_at_ms=0, encoding=FrameEncoding.JPEG,
                 width=50, height=40, data=data or encode_image(img, FrameEncoding.JPEG))


def tx(i: int, amount: float = 10.0) -> Transaction:
    return Transaction(id=f"t{i}", account_id="a", timestamp_ms=i * 3_600_000, amount=amount, currency="USD")


def test_frame_cnn_gives_top_k_probabilities_per_frame() -> None:
    model = FrameCNN(input_size=64, classes=10, k=3)
    batch = torch.stack([model.preprocess(frame(i)) for i in range(5)])
    assert batch.shape == (5, 3, 64, 64)
    out = model.forward(batch)
    assert out.shape == (5, 10)
    rows = model.postprocess(out)
    assert len(rows) == 5
    for row in rows:
        probs = [entry["prob"] for entry in row["labels"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0 + 1e-6


def test_transaction_mlp_scores_each_transaction_in_unit_interval() -> None:
    model = TransactionMLP()
    batch = torch.stack([model.preprocess(tx(i, amount=i * 100.0)) for i in range(7)])
    assert batch.shape == (7, FEATURE_DIM)
    rows = model.postprocess(model.forward(batch))
    assert len(rows) == 7 and all(0.0 < r["score"] < 1.0 for r in rows)
    assert len({r["score"] for r in rows}) > 1


def test_transaction_features_pad_and_truncate_user_features() -> None:
    short = tx(1).model_copy(update={"features": [1.0]})
    long = tx(1).model_copy(update={"features": [1.0] * 50})
    assert len(transaction_features(short)) == len(transaction_features(long)) == FEATURE_DIM


def _features_as_defined(t: Transaction) -> list[float]:
    """The transaction features spelled out plainly: what the model's lookups must equal."""
    import math
    import zlib

    from pipeline.models.transactions import CATEGORY_BUCKETS, CHANNELS, CURRENCIES, EXTRA_FEATURES

    hour = (t.timestamp_ms // 3_600_000) % 24
    vec = [math.log1p(t.amount), math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)]
    vec += [1.0 if t.currency.upper() == c else 0.0 for c in CURRENCIES]
    vec.append(0.0 if t.currency.upper() in CURRENCIES else 1.0)
    vec += [1.0 if t.channel == c else 0.0 for c in CHANNELS]
    bucket = zlib.crc32(t.merchant_category.lower().encode()) % CATEGORY_BUCKETS
    vec += [1.0 if i == bucket and t.merchant_category else 0.0 for i in range(CATEGORY_BUCKETS)]
    vec.append(0.0 if t.country in ("", "US") else 1.0)
    extra = list(t.features or [])[:EXTRA_FEATURES]
    return vec + extra + [0.0] * (EXTRA_FEATURES - len(extra))


def test_transaction_features_equal_their_plain_definition() -> None:
    import random

    rnd = random.Random(7)
    model = TransactionMLP()
    for i in range(2_000):
        t = Transaction(
            id=f"t{i}", account_id="a", timestamp_ms=rnd.randrange(0, 2**41),
            amount=rnd.random() * 10 ** rnd.randrange(6),
            currency=rnd.choice(["USD", "eur", "Gbp", "XXX", "JPY", "chf"]),
            merchant_category=rnd.choice(["", "food", "GAS", "Travel", "x" * 60]),
            country=rnd.choice(["", "US", "DE", "FR"]),
            channel=rnd.choice(["", "online", "atm", "card_present", "transfer"]),
            features=rnd.choice([None, [], [rnd.random() for _ in range(rnd.randrange(1, 20))]]),
        )
        expected = _features_as_defined(t)
        assert transaction_features(t) == expected, t
        tensor = model.preprocess(t)
        assert tensor.dtype == torch.float32 and torch.equal(tensor, torch.tensor(expected, dtype=torch.float32))


def _random_transactions(n: int, seed: int, categories: Sequence[str] = ("", "food", "GAS", "Travel", "x" * 60),
                         ) -> list[Transaction]:
    import random

    rnd = random.Random(seed)
    return [Transaction(
        id=f"t{i}", account_id="a", timestamp_ms=rnd.randrange(0, 2**41),
        amount=rnd.random() * 10 ** rnd.randrange(6),
        currency=rnd.choice(["USD", "eur", "Gbp", "XXX", "JPY", "chf"]),
        merchant_category=rnd.choice(categories),
        country=rnd.choice(["", "US", "DE", "FR"]),
        channel=rnd.choice(["", "online", "atm", "card_present", "transfer"]),
        features=rnd.choice([None, [], [rnd.random() for _ in range(rnd.randrange(1, 20))]]),
    ) for i in range(n)]


def test_a_batch_of_transactions_preprocessed_at_once_equals_each_alone_bit_for_bit() -> None:
    items = _random_transactions(3_000, seed=11)
    batch = transactions_to_batch(items)
    assert batch.dtype == torch.float32 and batch.shape == (3_000, FEATURE_DIM)
    assert torch.equal(batch, torch.stack([transaction_to_tensor(t) for t in items]))
    # more distinct categories than the bucket lookup keeps: it starts over, still right
    many = _random_transactions(6_000, seed=12, categories=[f"cat-{i}" for i in range(5_000)])
    assert torch.equal(transactions_to_batch(many), torch.stack([transaction_to_tensor(t) for t in many]))
    assert transactions_to_batch([]).shape == (0, FEATURE_DIM)
    with pytest.raises(TypeError):
        transactions_to_batch([tx(0), frame(1)])


class _PerItemOnly(TransactionMLP):
    """The same model without ``preprocess_batch``: the runner goes item by item."""

    preprocess_batch = None  # type: ignore[assignment]


def _same_outcomes(got: Sequence[Outcome], want: Sequence[Outcome]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.error, a.model_name, a.model_version) == (b.error, b.model_name, b.model_version)
        assert (a.outputs is None and b.outputs is None) or a.outputs == pytest.approx(b.outputs, rel=1e-5, abs=1e-6)


def test_a_batch_preprocessed_in_one_call_gives_the_outcomes_of_item_by_item() -> None:
    calls: list[int] = []

    class Counting(TransactionMLP):
        def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
            calls.append(len(items))
            return super().preprocess_batch(items)

    items: list[Frame | Transaction] = list(_random_transactions(64, seed=3))
    runner = Runner({"transaction": Counting()}, CPU)
    got = runner.run_sync(items)
    assert calls == [64] and all(o.error is None for o in got)
    _same_outcomes(got, Runner({"transaction": _PerItemOnly()}, CPU).run_sync(items))
    # a part of a batch prepared whole (what the worker runs when some of it was revoked)
    prepared = runner.prepare_sync(items)
    assert isinstance(prepared.slots, torch.Tensor)
    _same_outcomes(runner.infer_sync(prepared.select([5, 0, 63])), [got[5], got[0], got[63]])
    assert runner.infer_sync(prepared.select([])) == []
    # a batch of two kinds goes item by item: each kind to its own model
    mixed = Runner({"transaction": Counting(), "frame": FrameCNN()}, CPU).run_sync([tx(0), frame(1), tx(2)])
    assert calls == [64, 64] and [o.error for o in mixed] == [None] * 3


def test_a_failing_or_misshapen_batch_preprocess_falls_back_to_item_by_item() -> None:
    class Raises(TransactionMLP):
        def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
            raise ValueError("cannot do the whole batch")

    class ShortByOne(TransactionMLP):
        def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
            return super().preprocess_batch(items)[1:]

    class NotATensor(TransactionMLP):
        def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
            return [self.preprocess(item) for item in items]  # type: ignore[return-value]

    items: list[Frame | Transaction] = [tx(i, amount=5.0 * i) for i in range(9)]
    want = Runner({"transaction": _PerItemOnly()}, CPU).run_sync(items)
    for model in (Raises(), ShortByOne(), NotATensor()):
        runner = Runner({"transaction": model}, CPU)
        assert not isinstance(runner.prepare_sync(items).slots, torch.Tensor)
        _same_outcomes(runner.run_sync(items), want)


def test_batching_does_not_change_a_result() -> None:
    runner = Runner({"frame": FrameCNN(), "transaction": TransactionMLP()}, CPU)
    items: list[Frame | Transaction] = [frame(0), tx(1), frame(2), tx(3, 999.0), frame(4)]
    together = runner.run_sync(items)
    alone = [runner.run_sync([item])[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        assert a.error is None and b.error is None and a.outputs is not None and b.outputs is not None
        if "score" in a.outputs:
            assert a.outputs["score"] == pytest.approx(b.outputs["score"], abs=1e-6)
        else:
            assert a.outputs["labels"][0]["label"] == b.outputs["labels"][0]["label"]
            assert a.outputs["labels"][0]["prob"] == pytest.approx(b.outputs["labels"][0]["prob"], abs=1e-5)


def test_runner_keeps_input_order_across_kinds_and_rejects_bad_items_alone() -> None:
    runner = Runner({"frame": FrameCNN(), "transaction": TransactionMLP()}, CPU)
    jpeg = frame(0).data
    corrupt = frame(1, data=jpeg[:120])  # header passes, pixels do not decode
    outcomes = runner.run_sync([tx(0), corrupt, frame(2), tx(3)])
    assert [o.error is None for o in outcomes] == [True, False, True, True]
    assert outcomes[1].error is not None and outcomes[1].error.reason is Reason.BAD_IMAGE
    assert "score" in outcomes[0].outputs and "labels" in outcomes[2].outputs  # type: ignore[operator]


def test_batches_prepared_on_the_pool_give_the_outcomes_of_a_plain_run() -> None:
    """Frames spread over the preparation pool's threads (OpenCV releases the GIL);
    transactions, whose model does not opt in, in one; outcomes as ``run_sync`` gives them,
    a corrupt frame and a kind without a model included."""
    threads: dict[str, set[str]] = {"frame": set(), "transaction": set()}

    class Recording(FrameCNN):
        def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
            threads["frame"].add(threading.current_thread().name)
            time.sleep(0.02)  # long enough for both pool threads to take a share
            return super().preprocess(item)

    class RecordingMLP(TransactionMLP):
        def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
            threads["transaction"].add(threading.current_thread().name)
            return super().preprocess(item)

    runner = Runner({"frame": Recording(), "transaction": RecordingMLP()}, CPU, prepare_threads=2)
    runner.start()
    corrupt = frame(1, data=frame(0).data[:120])
    items: list[Frame | Transaction] = [tx(0), corrupt, *[frame(i) for i in range(2, 8)], tx(9)]
    try:
        async def prepared_then_run() -> list[Any]:
            return await runner.infer(await runner.prepare(items), "frames")

        outcomes = asyncio.run(prepared_then_run())
    finally:
        runner.stop()
    assert len(threads["frame"]) == 2 and all(t.startswith("streaminfer-prepare") for t in threads["frame"])
    assert len(threads["transaction"]) == 1
    plain = Runner({"frame": FrameCNN(), "transaction": TransactionMLP()}, CPU).run_sync(items)
    assert [(o.error, o.model_name) for o in outcomes] == [(o.error, o.model_name) for o in plain]
    assert outcomes[1].error is not None and outcomes[1].error.reason is Reason.BAD_IMAGE
    for a, b in zip(outcomes, plain, strict=True):
        if a.outputs is not None:
            assert a.outputs == pytest.approx(b.outputs) if "score" in a.outputs else (
                a.outputs["labels"][0]["label"] == b.outputs["labels"][0]["label"])  # type: ignore[index]
    assert runner.prepares_apart([frame(0)]) and not runner.prepares_apart([tx(0)])


def test_items_without_a_model_for_their_kind_get_a_clear_error() -> None:
    runner = Runner({"transaction": TransactionMLP()}, CPU)
    [outcome] = runner.run_sync([frame(0)])
    assert outcome.error is not None and outcome.error.reason is Reason.NO_MODEL_FOR_KIND


class _WrongCount(TransactionMLP):
    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return list(super().postprocess(output))[:-1]


class _Explodes(TransactionMLP):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the model is broken (simulated)")


class _PoisonAmount(TransactionMLP):
    """Raises on any batch holding a transaction of amount 666: the poison item."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(batch))
        if (batch == 666.0).any():
            raise ValueError("cannot score 666")
        return super().forward(batch)

    def preprocess(self, item: Transaction) -> torch.Tensor:  # type: ignore[override]
        t = super().preprocess(item)
        return torch.full_like(t, 666.0) if item.amount == 666 else t


class _NeedsSmallBatches(TransactionMLP):
    """Runs out of memory on batches larger than 8, like a GPU would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(batch))
        if len(batch) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return super().forward(batch)


def test_model_returning_the_wrong_number_of_outputs_fails_every_item_with_its_name() -> None:
    outcomes = Runner({"transaction": _WrongCount()}, CPU).run_sync([tx(i) for i in range(4)])
    assert len(outcomes) == 4
    for o in outcomes:
        assert o.error is not None and o.error.reason is Reason.MODEL_OUTPUT_MISMATCH
        # bisected down to single items, each of which still comes back without its row
        assert "txn-mlp" in o.error.message and "0 results for a batch of 1" in o.error.message


def test_one_raising_item_in_a_batch_of_32_fails_alone_and_the_rest_get_results() -> None:
    model = _PoisonAmount()
    items = [tx(i, amount=666 if i == 13 else 10.0 + i) for i in range(32)]
    outcomes = Runner({"transaction": model}, CPU).run_sync(items)
    failed = [i for i, o in enumerate(outcomes) if o.error is not None]
    assert failed == [13]
    assert outcomes[13].error.reason is Reason.MODEL_FAILED and "cannot score 666" in outcomes[13].error.message  # type: ignore[union-attr]
    # the good items' scores equal a clean run's, up to float rounding: the bisected batches
    # are of other sizes, and a CPU's matrix kernels may sum in another order per size
    clean = Runner({"transaction": TransactionMLP()}, CPU).run_sync(items[:13] + items[14:])
    good = [o.outputs for i, o in enumerate(outcomes) if i != 13]
    assert len(good) == len(clean) == 31
    for got, want in zip(good, clean, strict=True):
        assert got == pytest.approx(want.outputs, rel=1e-5, abs=1e-6)
    # 32 -> 16+16 -> the guilty half splits down to 1: log2(32) levels, not 32 single calls
    assert model.calls[0] == 32 and len(model.calls) <= 2 * 5 + 1


def test_out_of_memory_retries_smaller_and_remembers_the_ceiling() -> None:
    model = _NeedsSmallBatches()
    runner = Runner({"transaction": model}, CPU)
    first = runner.run_sync([tx(i) for i in range(32)])
    assert all(o.error is None for o in first)
    assert runner.ceiling("txn-mlp") == 8
    model.calls.clear()
    second = runner.run_sync([tx(i) for i in range(20)])
    assert all(o.error is None for o in second)
    assert model.calls == [8, 8, 4]  # no second failed attempt at the full size


def test_out_of_memory_on_a_single_item_is_that_items_error() -> None:
    class _AlwaysOOM(TransactionMLP):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    outcomes = Runner({"transaction": _AlwaysOOM()}, CPU).run_sync([tx(1), tx(2)])
    assert [o.error.reason for o in outcomes if o.error] == [Reason.MODEL_OUT_OF_MEMORY] * 2


def test_model_exception_becomes_one_error_per_item() -> None:
    outcomes = Runner({"transaction": _Explodes()}, CPU).run_sync([tx(i) for i in range(3)])
    assert [o.error.reason for o in outcomes if o.error] == [Reason.MODEL_FAILED] * 3
    assert "simulated" in outcomes[0].error.message  # type: ignore[union-attr]


def test_async_run_uses_the_model_thread_and_matches_sync() -> None:
    runner = Runner({"transaction": TransactionMLP()}, CPU)
    runner.start()
    try:
        got = asyncio.run(runner.run([tx(1), tx(2)]))
    finally:
        runner.stop()
    assert [o.outputs for o in got] == [o.outputs for o in runner.run_sync([tx(1), tx(2)])]


def test_torchscript_model_loads_and_runs(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in new torch
        scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(FEATURE_DIM, 2)))
    path = tmp_path / "scorer.pt"
    scripted.save(str(path))
    model = load_model(f"torchscript:{path}", "transaction")
    assert model is not None and model.name == "scorer"
    [outcome] = Runner({"transaction": model}, CPU).run_sync([tx(1)])
    assert outcome.outputs is not None and len(outcome.outputs["outputs"]) == 2


def test_torch_export_program_loads_and_runs(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(FEATURE_DIM, 1)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.zeros(2, FEATURE_DIM),), dynamic_shapes=({0: batch},))
    path = tmp_path / "scorer.pt2"
    torch.export.save(program, str(path))
    model = load_model(f"export:{path}", "transaction")
    assert model is not None
    outcomes = Runner({"transaction": model}, CPU).run_sync([tx(1), tx(2), tx(3)])
    expected = module(torch.stack([model.preprocess(tx(i)) for i in (1, 2, 3)]))
    assert [o.outputs["outputs"][0] for o in outcomes] == pytest.approx(expected[:, 0].tolist(), abs=1e-6)  # type: ignore[index]


def test_malformed_model_file_fails_at_load_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a torchscript archive")
    with pytest.raises(ModelError, match=r"broken\.pt"):
        load_model(f"torchscript:{path}", "frame")


def test_bad_model_specs_are_refused() -> None:
    with pytest.raises(ModelError, match="unknown built-in"):
        load_model("builtin:nope", "frame")
    with pytest.raises(ModelError, match="configured for"):
        load_model("builtin:txn-mlp", "frame")
    assert load_model("none", "frame") is None


class _WrongKeys(TransactionMLP):
    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return [{"probability": r["score"]} for r in super().postprocess(output)]


def test_rows_carry_the_declared_fields_for_the_result_check() -> None:
    # the runner passes rows on; pipeline.outcomes turns a row lacking a field into invalid_output
    outcomes = Runner({"transaction": _WrongKeys()}, CPU).run_sync([tx(1), tx(2)])
    for o in outcomes:
        assert o.error is None and o.output_fields == ("score",) and "score" not in (o.outputs or {})


def test_each_lane_s_model_thread_runs_with_the_intra_op_threads_it_was_given() -> None:
    from pipeline.app import lane_threads

    seen: list[int] = []

    class Probe:
        name, version, kind, output_fields = "probe", "1", "transaction", ("n",)

        def to(self, device: torch.device) -> None:
            pass

        def preprocess(self, item: Any) -> torch.Tensor:
            return torch.zeros(1)

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return batch

        def postprocess(self, output: torch.Tensor) -> list[dict[str, Any]]:
            return [{"n": 0} for _ in output]

    main_threads = torch.get_num_threads()
    wanted = main_threads + 1  # not what a new thread gets by default, on any machine
    runner = Runner({"transaction": Probe()}, torch.device("cpu"), threads_per_lane=wanted)  # type: ignore[dict-item]
    runner.start()
    try:
        tx = Transaction(id="t", account_id="a", timestamp_ms=1, amount=1.0, currency="EUR")
        asyncio.run(runner.run([tx], "txns"))
    finally:
        runner.stop()
    assert seen == [wanted] and torch.get_num_threads() == main_threads  # the caller's setting is left alone
    assert [lane_threads(lanes, cpus) for lanes, cpus in ((1, 2), (2, 2), (2, 16), (1, 1), (3, 8))] == [1, 1, 7, 1, 2]
    # a single frame lane on a small machine gets every CPU (its batches then prepared in the model thread)
    assert [lane_threads(lanes, cpus, frames_only=True) for lanes, cpus in ((1, 2), (1, 1), (2, 2), (1, 3), (1, 8))] \
        == [2, 1, 1, 2, 7]


FRAMES, TXNS = "builtin:frame-cnn", "builtin:txn-mlp"


@pytest.mark.parametrize(("cpus", "frame_model", "transaction_model", "model_streams", "torch_threads",
                          "streams", "threads", "ahead"),
                         [# a frame-only worker on a CPU: a model thread per CPU of its lane, one intra-op thread
                          # each, each preprocessing its own batches
                          (8, FRAMES, "none", 0, 0, 7, 1, False), (2, FRAMES, "none", 0, 0, 2, 1, False),
                          # any other worker: one model thread per lane with the CPUs less one
                          (8, FRAMES, TXNS, 0, 0, 1, 7, True), (8, "none", TXNS, 0, 0, 1, 7, False),
                          (2, FRAMES, TXNS, 0, 0, 1, 1, True), (2, "none", TXNS, 0, 0, 1, 1, False),
                          # set by hand: one model thread (every CPU on a small frame worker); intra-op
                          # threads that share the lane's CPUs out; ahead on the pool only while a CPU is
                          # left beside one model thread's intra-op threads
                          (2, FRAMES, "none", 1, 0, 1, 2, False), (2, FRAMES, "none", 1, 1, 1, 1, True),
                          (8, FRAMES, "none", 0, 2, 3, 2, False), (8, FRAMES, "none", 0, 8, 1, 8, False),
                          (8, FRAMES, TXNS, 3, 0, 3, 2, False)])
def test_the_worker_chooses_its_model_threads_and_their_intra_op_threads_for_the_machine(
        monkeypatch: pytest.MonkeyPatch, cpus: int, frame_model: str, transaction_model: str, model_streams: int,
        torch_threads: int, streams: int, threads: int, ahead: bool) -> None:
    from pipeline import app
    from pipeline.config import WorkerSettings

    monkeypatch.setattr(app, "available_cpus", lambda: cpus)
    worker = app.build_worker(WorkerSettings(input_topics="in", frame_model=frame_model, device="cpu",
                                             transaction_model=transaction_model, model_streams=model_streams,
                                             torch_threads=torch_threads))
    assert (worker.runner.streams, worker.runner.threads_per_lane) == (streams, threads)
    assert bool(worker.runner.pool_kinds) == ahead  # frames prepared ahead on the pool, or in the model thread


def test_efficientnet_folded_for_inference_computes_what_the_library_model_does() -> None:
    """Batch norms folded into their convolutions and symmetric padding moved into them:
    no batch norm and no separate symmetric zero-padding is left, and the logits of two
    real photographs and of noise are the library model's up to float rounding."""
    pytest.importorskip("efficientnet_lite_pytorch")
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite_pytorch import EfficientNet

    from pipeline.models.efficientnet import EfficientNetLite0, _weights_path, fold_for_inference

    model = EfficientNetLite0()
    library = EfficientNet.from_name("efficientnet-lite0")
    library.load_state_dict(torch.load(_weights_path(), weights_only=True))
    library.eval()
    folded = model.module
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    pads = [m.padding for m in folded.modules() if isinstance(m, torch.nn.ZeroPad2d)]
    assert pads and all(p[0] != p[1] or p[2] != p[3] for p in pads)  # only TF's uneven stride-2 padding stays
    bgrs = {name: getattr(skimage_data, name)()[:, :, ::-1].copy() for name in ("chelsea", "coffee")}
    photos = [Frame(stream_id=name, seq=0, captured_at_ms=0, encoding=FrameEncoding.JPEG, width=bgr.shape[1],
                    height=bgr.shape[0], data=encode_image(bgr, FrameEncoding.JPEG)) for name, bgr in bgrs.items()]
    torch.manual_seed(0)
    batch = torch.cat([torch.stack([model.preprocess(p) for p in photos]), torch.randn(1, 3, 224, 224)])
    with torch.inference_mode():
        want, got = library(batch), folded(batch)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert torch.equal(got.topk(5).indices, want.topk(5).indices)
    labels = [row["labels"][0]["label"] for row in model.postprocess(got[:2])]
    assert labels == ["Egyptian cat", "espresso"]
    with pytest.raises(ValueError):
        fold_for_inference(EfficientNet.from_name("efficientnet-lite0"))  # still in training mode


class _Warmable:
    """A model with an example input, recording on which thread each forward ran, at what size."""

    name, version, kind, output_fields = "warmable", "1", "transaction", ("score",)

    def __init__(self, fails_at: int = 0) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fails_at = fails_at
        self._lock = threading.Lock()

    def to(self, device: torch.device) -> None:
        pass

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 1)

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        return torch.zeros(1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.calls.append((threading.get_ident(), len(batch)))
        if len(batch) == self.fails_at:
            raise RuntimeError("no batch of that size")
        time.sleep(0.001 * len(batch))
        return batch

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return [{"score": 0.0} for _ in range(len(output))]


def test_warm_up_runs_every_size_on_every_model_thread_of_the_lane_and_times_it() -> None:
    model = _Warmable()
    runner = Runner({"transaction": model}, CPU, streams=2)
    runner.start()
    try:
        timings = asyncio.run(runner.warm_up("txns", [1, 2, 4]))
    finally:
        runner.stop()
    for size in (1, 2, 4):
        threads = [thread for thread, n in model.calls if n == size]
        assert len(threads) == 6 and len(set(threads)) == 2, model.calls  # two set-up runs and one timed, each thread
    assert set(timings) == {"transaction"} and set(timings["transaction"]) == {1, 2, 4}
    assert all(0.0009 < s < 0.5 for s in timings["transaction"].values()), timings  # seconds an item


def test_a_size_a_model_fails_to_warm_up_on_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = _Warmable(fails_at=4)
    runner = Runner({"transaction": model}, CPU)
    runner.start()
    try:
        with caplog.at_level("WARNING", logger="streaminfer.runner"):
            timings = asyncio.run(runner.warm_up("txns", [1, 2, 4, 8]))
    finally:
        runner.stop()
    assert set(timings["transaction"]) == {1, 2, 8}
    assert "failed to warm up at batch 4" in caplog.text


class _NoExample(_Warmable):
    def example_input(self) -> torch.Tensor | None:  # type: ignore[override]
        return None  # as TorchModule's default: the module runs eager


def test_a_model_without_an_example_input_is_not_warmed_up() -> None:
    model = _NoExample()
    runner = Runner({"transaction": model}, CPU)
    runner.start()
    try:
        assert asyncio.run(runner.warm_up("txns", [1, 2])) == {}
        assert not model.calls
    finally:
        runner.stop()
