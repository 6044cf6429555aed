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


POISON_AMOUNT = 666.0
UNENCODABLE_AMOUNT = 777.0


class PoisonAware(TransactionMLP):
    """Raises on any batch holding a transaction of amount 666; for amount 777 it emits an
    integer no wire format can carry. Every other transaction scores as the real MLP."""

    name = "poison-aware"

    def preprocess(self, item):  # type: ignore[no-untyped-def]
        features = super().preprocess(item)
        flag = 1.0 if item.amount == POISON_AMOUNT else 2.0 if item.amount == UNENCODABLE_AMOUNT else 0.0
        return torch.cat([features, torch.tensor([flag], dtype=features.dtype)])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        flags = batch[:, -1]
        if (flags == 1.0).any():
            raise ValueError("cannot score amount 666")
        scores = super().forward(batch[:, :-1])
        return torch.cat([scores.reshape(len(batch), -1), flags.reshape(-1, 1).to(scores.dtype)], dim=1)

    def postprocess(self, output: torch.Tensor):  # type: ignore[no-untyped-def]
        rows = list(super().postprocess(output))  # the score comes from column 0
        for row, flag in zip(rows, output[:, -1].tolist(), strict=True):
            if flag == 2.0:
                row["score"] = 2**70
        return rows


def poison_aware() -> PoisonAware:
    return PoisonAware()
