"""Transaction features and the built-in scorer (an MLP)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipeline.models.base import TorchModule
from schemas.models import Frame, InputKind, Transaction

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD")
CHANNELS = ("card_present", "online", "atm", "transfer")
CATEGORY_BUCKETS = 8
EXTRA_FEATURES = 8
FEATURE_DIM = 3 + len(CURRENCIES) + 1 + len(CHANNELS) + CATEGORY_BUCKETS + 1 + EXTRA_FEATURES


def transaction_features(tx: Transaction) -> list[float]:
    """A fixed-width numeric vector; user features are padded/truncated to EXTRA_FEATURES."""
    hour = (tx.timestamp_ms // 3_600_000) % 24
    vec = [
        math.log1p(tx.amount),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
    ]
    vec += [1.0 if tx.currency.upper() == c else 0.0 for c in CURRENCIES]
    vec.append(0.0 if tx.currency.upper() in CURRENCIES else 1.0)
    vec += [1.0 if tx.channel == c else 0.0 for c in CHANNELS]
    bucket = zlib.crc32(tx.merchant_category.lower().encode()) % CATEGORY_BUCKETS
    vec += [1.0 if i == bucket and tx.merchant_category else 0.0 for i in range(CATEGORY_BUCKETS)]
    vec.append(0.0 if tx.country in ("", "US") else 1.0)
    extra = list(tx.features or [])[:EXTRA_FEATURES]
    vec += extra + [0.0] * (EXTRA_FEATURES - len(extra))
    return vec


def transaction_to_tensor(item: Frame | Transaction) -> torch.Tensor:
    if not isinstance(item, Transaction):
        raise TypeError("transaction model got a non-transaction item")
    return torch.tensor(transaction_features(item), dtype=torch.float32)


class TransactionMLP(TorchModule):
    """An MLP with fixed seeded weights: a reference scorer for plumbing and throughput.

    Its scores are not trained on fraud data; plug in a trained model for real scores.
    """

    kind: InputKind = "transaction"
    name = "txn-mlp"
    output_fields: tuple[str, ...] = ("score",)

    def __init__(self, hidden: int = 64, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.module = nn.Sequential(
            nn.Linear(FEATURE_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        ).eval()
        self.version = f"seeded-{seed}"

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        return transaction_to_tensor(item)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        scores = torch.sigmoid(output.float().reshape(output.shape[0], -1)[:, 0])
        return [{"score": float(s)} for s in scores.tolist()]
