"""Reduced precision, channels-last and compiled models give the results fp32 eager gives."""

from __future__ import annotations

from typing import Any

import cv2
import pytest
import torch

from pipeline.acceleration import Acceleration, bucket
from pipeline.models import EfficientNetLite0
from pipeline.models.base import TorchModule
from pipeline.runner import Runner
from schemas import Frame, FrameEncoding, Transaction
from schemas.images import encode_image

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


def test_the_worker_refuses_fp16_without_cuda_as_configuration() -> None:
    from pipeline.app import build_worker
    from pipeline.config import WorkerSettings
    from pipeline.exceptions import ModelError  # the CLI's exit code 2

    with pytest.raises(ModelError, match="fp16 needs a CUDA device"):
        build_worker(WorkerSettings(precision="fp16", frame_model="none", device="cpu"))
