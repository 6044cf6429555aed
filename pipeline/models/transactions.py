"""Transaction features and the built-in scorer (an MLP)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.base import TorchModule
from schemas.models import Frame, InputKind, Transaction

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD")
CHANNELS = ("card_present", "online", "atm", "transfer")
CATEGORY_BUCKETS = 8
EXTRA_FEATURES = 8
FEATURE_DIM = 3 + len(CURRENCIES) + 1 + len(CHANNELS) + CATEGORY_BUCKETS + 1 + EXTRA_FEATURES


def _one_hot(width: int, at: int | None) -> tuple[float, ...]:
    return tuple(1.0 if i == at else 0.0 for i in range(width))


# per item, the one-hot parts are looked up, not built (the features are per transaction)
_HOURS = tuple((math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)) for hour in range(24))
_CURRENCY = {c: (*_one_hot(len(CURRENCIES), i), 0.0) for i, c in enumerate(CURRENCIES)}
_OTHER_CURRENCY = (*_one_hot(len(CURRENCIES), None), 1.0)
_CHANNEL = {c: _one_hot(len(CHANNELS), i) for i, c in enumerate(CHANNELS)}
_NO_CHANNEL = _one_hot(len(CHANNELS), None)
_BUCKETS = tuple(_one_hot(CATEGORY_BUCKETS, i) for i in range(CATEGORY_BUCKETS))
_NO_BUCKET = _one_hot(CATEGORY_BUCKETS, None)
_NO_EXTRA = (0.0,) * EXTRA_FEATURES


def transaction_features(tx: Transaction) -> list[float]:
    """A fixed-width numeric vector; user features are padded/truncated to EXTRA_FEATURES."""
    sin_hour, cos_hour = _HOURS[(tx.timestamp_ms // 3_600_000) % 24]
    category = tx.merchant_category
    bucket = _BUCKETS[zlib.crc32(category.lower().encode()) % CATEGORY_BUCKETS] if category else _NO_BUCKET
    extra = tx.features
    if extra:
        extra = extra[:EXTRA_FEATURES]
        extra = [*extra, *_NO_EXTRA[len(extra):]]
    return [
        math.log1p(tx.amount), sin_hour, cos_hour,
        *_CURRENCY.get(tx.currency.upper(), _OTHER_CURRENCY),
        *_CHANNEL.get(tx.channel, _NO_CHANNEL),
        *bucket,
        0.0 if tx.country in ("", "US") else 1.0,
        *(extra or _NO_EXTRA),
    ]


_CURRENCY_AT = {c: i for i, c in enumerate(CURRENCIES)}  # an other currency: the flag after them
_CHANNEL_AT = {c: i for i, c in enumerate(CHANNELS)}
_SIN_HOUR = np.array([sin for sin, _ in _HOURS])
_COS_HOUR = np.array([cos for _, cos in _HOURS])
_BUCKET_AT: dict[str, int] = {}  # merchant category -> its bucket (-1: none), as met
_BUCKETS_KEPT = 4096
# where each part of the vector starts (transaction_features' order)
_AT_CURRENCY = 3
_AT_CHANNEL = _AT_CURRENCY + len(CURRENCIES) + 1
_AT_BUCKET = _AT_CHANNEL + len(CHANNELS)
_AT_COUNTRY = _AT_BUCKET + CATEGORY_BUCKETS
_AT_EXTRA = _AT_COUNTRY + 1


def _bucket_at(category: str) -> int:
    at = _BUCKET_AT.get(category)
    if at is None:
        if len(_BUCKET_AT) >= _BUCKETS_KEPT:  # categories are the user's strings: keep a bounded few
            _BUCKET_AT.clear()
        at = _BUCKET_AT[category] = zlib.crc32(category.lower().encode()) % CATEGORY_BUCKETS if category else -1
    return at


def transactions_to_batch(items: Sequence[Frame | Transaction]) -> torch.Tensor:
    """``transaction_to_tensor`` of each item, stacked, computed a column at a time (a
    quarter of the cost per item); the same float32 values, bit for bit."""
    if not all(isinstance(item, Transaction) for item in items):
        raise TypeError("transaction model got a non-transaction item")
    txs: Sequence[Transaction] = items  # type: ignore[assignment]
    n = len(txs)
    out = np.zeros((n, FEATURE_DIM), np.float32)
    rows = np.arange(n)
    out[:, 0] = np.fromiter([math.log1p(tx.amount) for tx in txs], np.float64, n)
    hour = np.fromiter([(tx.timestamp_ms // 3_600_000) % 24 for tx in txs], np.intp, n)
    out[:, 1], out[:, 2] = _SIN_HOUR[hour], _COS_HOUR[hour]
    other = len(CURRENCIES)
    out[rows, _AT_CURRENCY + np.fromiter([_CURRENCY_AT.get(tx.currency.upper(), other) for tx in txs], np.intp, n)] = 1
    for at, start in ((np.fromiter([_CHANNEL_AT.get(tx.channel, -1) for tx in txs], np.intp, n), _AT_CHANNEL),
                      (np.fromiter([_bucket_at(tx.merchant_category) for tx in txs], np.intp, n), _AT_BUCKET)):
        some = at >= 0
        out[rows[some], start + at[some]] = 1
    out[:, _AT_COUNTRY] = np.fromiter([tx.country not in ("", "US") for tx in txs], np.float32, n)
    for i, tx in enumerate(txs):
        if tx.features:
            extra = tx.features[:EXTRA_FEATURES]
            out[i, _AT_EXTRA:_AT_EXTRA + len(extra)] = extra
    return torch.from_numpy(out)


def transaction_to_tensor(item: Frame | Transaction) -> torch.Tensor:
    if not isinstance(item, Transaction):
        raise TypeError("transaction model got a non-transaction item")
    # through numpy: a third of what torch.tensor takes for a short list of floats
    return torch.from_numpy(np.array(transaction_features(item), dtype=np.float32))


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

    def example_input(self) -> torch.Tensor:
        return torch.randn(1, FEATURE_DIM, generator=torch.Generator().manual_seed(0))

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        return transaction_to_tensor(item)

    def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
        if type(self).preprocess is not TransactionMLP.preprocess:  # a subclass's own features
            return torch.stack([self.preprocess(item) for item in items])
        return transactions_to_batch(items)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        scores = torch.sigmoid(output.float().reshape(output.shape[0], -1)[:, 0])
        return [{"score": float(s)} for s in scores.tolist()]
