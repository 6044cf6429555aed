from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pytest
import torch

from pipeline.models import ModelError, load_model, load_state_dict
from pipeline.models.efficientnet import EfficientNetLite0, imagenet_labels
from pipeline.runner import Runner
from schemas import Frame, FrameEncoding, Transaction
from schemas.images import encode_image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_scorer"


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "scorer", raising=False)


def tx(i: int, amount: float) -> Transaction:
    return Transaction(id=f"t{i}", account_id="a", timestamp_ms=i * 3_600_000, amount=amount, currency="USD",
                       channel="online")


def test_the_worked_example_loads_as_a_python_entry_point_and_scores(example_on_path: None) -> None:
    model = load_model("python:scorer:make_model", "transaction")
    assert model is not None and model.name == "amount-time-scorer"
    outcomes = Runner({"transaction": model}, torch.device("cpu")).run_sync([tx(1, 5.0), tx(2, 5000.0)])
    risks = [o.outputs["risk"] for o in outcomes if o.outputs]
    assert len(risks) == 2 and all(0 < r < 1 for r in risks) and risks[0] != risks[1]


def test_entry_point_errors_name_the_target(example_on_path: None) -> None:
    with pytest.raises(ModelError, match="no_such_module"):
        load_model("python:no_such_module:make", "transaction")
    with pytest.raises(ModelError, match="scorer:nope"):
        load_model("python:scorer:nope", "transaction")
    with pytest.raises(ModelError, match="expected python:MODULE:FACTORY"):
        load_model("python:scorer", "transaction")
    with pytest.raises(ModelError, match="configured for frame"):
        load_model("python:scorer:make_model", "frame")


def test_entry_point_returning_something_else_is_refused(example_on_path: None) -> None:
    with pytest.raises(ModelError, match="without"):
        load_model("python:scorer:AmountTimeNet", "transaction")


def test_state_dict_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weights": object()}, path)  # not tensors: needs unpickling arbitrary code
    with pytest.raises(ModelError, match=r"evil\.pt"):
        load_state_dict(torch.nn.Linear(2, 1), path, "victim")


def test_state_dict_of_the_wrong_shape_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(torch.nn.Linear(3, 1).state_dict(), path)
    with pytest.raises(ModelError, match="'mine'"):
        load_state_dict(torch.nn.Linear(2, 1), path, "mine")


def test_imagenet_labels_ship_with_the_package() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[285] == "Egyptian cat" and labels[967] == "espresso"


@pytest.mark.parametrize(("image", "label"), [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_efficientnet_lite0_gives_the_known_answer(image: str, label: str) -> None:
    data = pytest.importorskip("skimage.data")
    bgr = cv2.cvtColor(getattr(data, image)(), cv2.COLOR_RGB2BGR)
    frame = Frame(stream_id="s", seq=0, captured_at_ms=0, encoding=FrameEncoding.PNG, width=bgr.shape[1],
                  height=bgr.shape[0], data=encode_image(bgr, FrameEncoding.PNG))
    [outcome] = Runner({"frame": EfficientNetLite0()}, torch.device("cpu")).run_sync([frame])
    assert outcome.outputs is not None
    top = outcome.outputs["labels"]
    assert top[0]["label"] == label and top[0]["prob"] > 0.5
    assert len(top) == 5
