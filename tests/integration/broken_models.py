"""Models that misbehave on purpose, loaded by workers as python:tests.integration.broken_models:..."""

from __future__ import annotations

import torch

from pipeline.models.transactions import TransactionMLP


class DropsOneRow(TransactionMLP):
    name = "drops-one-row"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return super().forward(batch)[:-1]  # one row short, whatever the batch size


def drops_one_row() -> DropsOneRow:
    return DropsOneRow()
