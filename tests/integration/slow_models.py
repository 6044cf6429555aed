"""A frame model with a known, fixed cost, loaded by workers as python:tests.integration.slow_models:..."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

SECONDS_PER_FRAME = 0.04  # 25 frames/s at any batch size


class FixedCostFrames:
    name, version, kind, output_fields = "fixed-cost-frames", "1", "frame", ("labels",)

    def to(self, device: torch.device) -> None:
        pass

    def preprocess(self, item: Any) -> torch.Tensor:
        return torch.tensor([float(item.seq)])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(SECONDS_PER_FRAME * len(batch))
        return batch

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return [{"labels": [{"label": f"seq-{int(v)}", "prob": 1.0}]} for (v,) in output.tolist()]


def fixed_cost_frames() -> FixedCostFrames:
    return FixedCostFrames()
