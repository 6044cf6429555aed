"""Frozen graphs, reduced precision, channels-last and compiled models give the results fp32 eager gives."""

from __future__ import annotations

from typing import Any

import cv2
import pytest
import torch

from pipeline.acceleration import Acceleration, bucket, freeze_for_inference
from pipeline.models import EfficientNetLite0, load_model
from pipeline.models.base import TorchModule
from pipeline.runner import Runner
from schemas import Frame, FrameEncoding, Transaction
from schemas.images import encode_image
from schemas.models import InputKind

CPU = torch.device("cpu")


def test_batches_are_padded_to_a_few_bucket_sizes() -> None:
    assert [bucket(n, 256) for n in (1, 2, 3, 5, 8, 9, 200, 256)] == [1, 2, 4, 8, 8, 16, 256, 256]
    assert bucket(20, 24) == 24 and bucket(24, 24) == 24 and bucket(30, 24) == 30  # never below n
    batch = torch.arange(6.0).reshape(3, 2)
    padded, real = Acceleration(compile=True).padded(batch)
    assert real == 3 and padded.shape == (4, 2) and torch.equal(padded[3], batch[2])
    assert Acceleration().padded(batch)[0] is batch  # eager: no padding


def test_fp16_on_a_cpu_is_refused_at_start_in_one_line() -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Runner({}, CPU, acceleration=Acceleration(precision="fp16"))


@pytest.mark.parametrize("image", ["chelsea", "coffee"])
def test_bf16_and_channels_last_give_the_fp32_answer(image: str) -> None:
    data = pytest.importorskip("skimage.data")
    bgr = cv2.cvtColor(getattr(data, image)(), cv2.COLOR_RGB2BGR)
    frame = Frame(stream_id="s", seq=0, captured_at_ms=0, encoding=FrameEncoding.PNG, width=bgr.shape[1],
                  height=bgr.shape[0], data=encode_image(bgr, FrameEncoding.PNG))
    answers = {}
    for accel in (Acceleration(), Acceleration(channels_last=True), Acceleration(precision="bf16")):
        runner = Runner({"frame": EfficientNetLite0()}, CPU, acceleration=accel)
        runner.start()
        [outcome] = runner.run_sync([frame, frame])[:1]
        assert outcome.outputs is not None
        answers[accel] = outcome.outputs["labels"]
    fp32, channels_last, bf16 = answers.values()
    assert [x["label"] for x in channels_last] == [x["label"] for x in fp32]
    assert all(abs(a["prob"] - b["prob"]) < 1e-4 for a, b in zip(channels_last, fp32, strict=True))
    assert bf16[0]["label"] == fp32[0]["label"] and abs(bf16[0]["prob"] - fp32[0]["prob"]) < 0.05
    assert all(isinstance(x["prob"], float) for x in bf16)


class Doubler(TorchModule):
    """A tiny TorchModule that records the batch sizes its module is called with."""

    name, version, kind, output_fields = "doubler", "1", "transaction", ("y",)

    def __init__(self) -> None:
        self.module = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.module.weight.fill_(2.0)
            self.module.bias.zero_()
        self.seen: list[int] = []
        self.module.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].shape[0]))

    def preprocess(self, item: Any) -> torch.Tensor:
        return torch.tensor([item.amount])

    def postprocess(self, output: torch.Tensor) -> list[dict[str, Any]]:
        return [{"y": float(v)} for v in output[:, 0]]


def test_a_compiled_model_runs_bucketed_batches_and_answers_only_the_real_rows() -> None:
    model = Doubler()
    # the "eager" backend runs the torch.compile path (graph capture, static shapes) without
    # a C++ toolchain; the worker uses the default backend
    runner = Runner({"transaction": model}, CPU,
                    acceleration=Acceleration(compile=True, max_batch_size=8, compile_backend="eager"))
    runner.start()
    for n in (3, 5, 8):
        items = [Transaction(id=f"t{i}", account_id="a", timestamp_ms=1, amount=float(i), currency="EUR")
                 for i in range(n)]
        outcomes = runner.run_sync(items)
        assert [o.outputs for o in outcomes] == [{"y": 2.0 * i} for i in range(n)]
    assert model.seen == [4, 8, 8]


_COMPILED: list[int] = []  # the batch size of each graph the counting backend was given


@torch._dynamo.register_backend  # type: ignore[misc]
def counting(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
    _COMPILED.append(example_inputs[0].shape[0] if example_inputs else -1)
    return gm.forward


class Tripler(Doubler):
    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.module.weight.fill_(3.0)


def test_every_bucket_up_to_1024_is_compiled_not_only_the_first_eight() -> None:
    torch._dynamo.reset()  # its cache is per code object: other tests compiled nn.Linear's forward too
    _COMPILED.clear()
    runner = Runner({"transaction": Tripler()}, CPU,
                    acceleration=Acceleration(compile=True, max_batch_size=1024, compile_backend="counting"))
    runner.start()
    sizes = [1, 2, 3, 7, 9, 17, 33, 65, 129, 257, 513, 1000]  # one batch in each of the 11 buckets
    for n in sizes:
        items = [Transaction(id=f"t{i}", account_id="a", timestamp_ms=1, amount=float(i), currency="EUR")
                 for i in range(n)]
        assert [o.outputs for o in runner.run_sync(items)] == [{"y": 3.0 * i} for i in range(n)]
    # torch's own limit is 8 graphs: past it the forward ran eager, and 256-1024 never compiled
    assert sorted(set(_COMPILED)) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    torch._dynamo.reset()


def test_compile_without_a_c_compiler_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.acceleration.shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="C compiler"):
        Acceleration(compile=True).check(CPU)
    Acceleration(compile=True, compile_backend="eager").check(CPU)  # no compiler needed: runs


def test_the_worker_refuses_fp16_without_cuda_as_configuration() -> None:
    from pipeline.app import build_worker
    from pipeline.config import WorkerSettings
    from pipeline.exceptions import ModelError  # the CLI's exit code 2

    with pytest.raises(ModelError, match="fp16 needs a CUDA device"):
        build_worker(WorkerSettings(precision="fp16", frame_model="none", device="cpu"))


def _photo(image: str = "chelsea") -> Frame:
    data = pytest.importorskip("skimage.data")
    bgr = cv2.cvtColor(getattr(data, image)(), cv2.COLOR_RGB2BGR)
    return Frame(stream_id="s", seq=0, captured_at_ms=0, encoding=FrameEncoding.PNG, width=bgr.shape[1],
                 height=bgr.shape[0], data=encode_image(bgr, FrameEncoding.PNG))


@pytest.mark.parametrize(("spec", "kind"), [("builtin:efficientnet-lite0", "frame"), ("builtin:frame-cnn", "frame"),
                                            ("builtin:txn-mlp", "transaction"),
                                            ("builtin:lending-club-mlp", "transaction")])
def test_every_builtin_model_runs_as_a_frozen_graph_on_a_cpu_and_answers_as_eager(spec: str, kind: str) -> None:
    from producers.lending_club_source import FEATURE_DIM

    if kind == "frame":
        items: list[Frame | Transaction] = [_photo("chelsea"), _photo("coffee"), _photo("astronaut")]
    else:
        items = [Transaction(id=f"t{i}", account_id=f"a{i}", timestamp_ms=1_700_000_000_000, amount=12.5 * i + 1,
                             currency="EUR", features=[float(i + j) / 7 for j in range(FEATURE_DIM)])
                 for i in range(3)]
    answers = {}
    for graph in ("auto", "eager"):
        model = load_model(spec, kind)  # type: ignore[arg-type]
        assert model is not None
        runner = Runner({kind: model}, CPU, acceleration=Acceleration(graph=graph))  # type: ignore[dict-item]
        runner.start()
        assert isinstance(model.module, torch.jit.ScriptModule) == (graph == "auto")  # type: ignore[attr-defined]
        answers[graph] = [o.outputs for o in runner.run_sync(items)]
        runner.stop()
    frozen, eager = answers["auto"], answers["eager"]
    assert all(o is not None for o in frozen)
    if kind == "transaction":
        assert [o["score"] for o in frozen] == pytest.approx([o["score"] for o in eager], abs=1e-6)  # type: ignore[index]
    else:
        for got, want in zip(frozen, eager, strict=True):
            assert [x["label"] for x in got["labels"]] == [x["label"] for x in want["labels"]]  # type: ignore[index]
            assert [x["prob"] for x in got["labels"]] == pytest.approx(  # type: ignore[index]
                [x["prob"] for x in want["labels"]], abs=1e-4)  # type: ignore[index]


class _ByBatchSize(torch.nn.Module):
    """Answers by the batch's size: tracing one batch keeps only that branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[0] == 1 else x * 3


def test_a_module_whose_graph_answers_otherwise_keeps_running_eager(caplog: pytest.LogCaptureFixture) -> None:
    module = _ByBatchSize()
    assert freeze_for_inference(module, torch.ones(1, 4)) is module
    assert "_ByBatchSize runs eager" in caplog.text and "batch of 3" in caplog.text
    linear = torch.nn.Linear(4, 2).eval()
    assert isinstance(freeze_for_inference(linear, torch.ones(1, 4)), torch.jit.ScriptModule)


@pytest.mark.parametrize("accel", [Acceleration(graph="eager"), Acceleration(precision="bf16"),
                                   Acceleration(compile=True, compile_backend="eager")])
def test_no_frozen_graph_when_eager_is_asked_or_another_acceleration_runs(accel: Acceleration) -> None:
    kind: InputKind = "transaction"
    model = load_model("builtin:txn-mlp", kind)
    assert model is not None
    Runner({kind: model}, CPU, acceleration=accel).start()
    assert not isinstance(model.module, torch.jit.ScriptModule)  # type: ignore[attr-defined]
