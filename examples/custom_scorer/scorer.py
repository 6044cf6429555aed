"""A worked example: wrap your own PyTorch model for streaminfer.

Run it with

    STREAMINFER_TRANSACTION_MODEL=python:scorer:make_model PYTHONPATH=examples/custom_scorer \\
        streaminfer worker

A model is any object with ``name``, ``version``, ``kind`` ("frame" or "transaction"),
``output_fields`` (the keys of each result's ``outputs``), ``to(device)``,
``preprocess(item) -> Tensor`` (one item; raise ``ItemRejected`` to send just that item
to the dead-letter topic), ``forward(batch) -> Tensor`` (one row per item)
and ``postprocess(output) -> list[dict]`` (one JSON-able dict per row, in order: that dict
becomes the result's ``outputs``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models import ItemRejected, load_state_dict
from schemas import Reason, Transaction

WEIGHTS = Path(__file__).with_name("scorer_weights.pt")
FEATURES = ("log_amount", "hour_sin", "hour_cos", "is_online", "is_foreign")


class AmountTimeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AmountTimeScorer:
    name = "amount-time-scorer"
    kind = "transaction"
    output_fields = ("risk",)  # every result's outputs carry these keys

    def __init__(self, weights: Path = WEIGHTS) -> None:
        # weights are a state dict read with weights_only=True: tensors, never pickled code
        self.module = load_state_dict(AmountTimeNet(), weights, self.name)
        self.version = "example-1"

    def to(self, device: torch.device) -> None:
        self.module.to(device)

    def preprocess(self, item: Any) -> torch.Tensor:
        if not isinstance(item, Transaction):
            raise ItemRejected(Reason.PREPROCESS_FAILED, f"{self.name} scores transactions only")
        hour = (item.timestamp_ms // 3_600_000) % 24
        return torch.tensor([
            math.log1p(item.amount),
            math.sin(2 * math.pi * hour / 24),
            math.cos(2 * math.pi * hour / 24),
            1.0 if item.channel == "online" else 0.0,
            0.0 if item.country in ("", "US") else 1.0,
        ])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)

    def postprocess(self, output: torch.Tensor) -> list[dict[str, Any]]:
        return [{"risk": float(p)} for p in torch.sigmoid(output[:, 0]).tolist()]


def make_model() -> AmountTimeScorer:
    return AmountTimeScorer()


if __name__ == "__main__":
    # writes the example's (untrained, seeded) weights file
    torch.manual_seed(0)
    torch.save(AmountTimeNet().state_dict(), WEIGHTS)
    print(f"wrote {WEIGHTS}")
