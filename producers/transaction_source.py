"""Transactions: a deterministic generator with plausible fields, or a CSV/JSONL replay."""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.models import Transaction

CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "CAD")
CATEGORIES = ("grocery", "electronics", "travel", "gaming", "fuel", "restaurants", "pharmacy")
COUNTRIES = ("US", "US", "US", "US", "GB", "DE", "FR", "CA")
CHANNELS = ("card_present", "card_present", "online", "online", "atm", "transfer")
RISKY_COUNTRIES = ("NG", "RU", "BR", "VN")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def iter_synthetic_transactions(
    count: int | None,
    *,
    seed: int = 0,
    accounts: int = 200,
    clock_ms: Callable[[], int] = _wall_ms,
) -> Iterator[Transaction]:
    """Deterministic for a seed (but for timestamps); about 2% look risky."""
    rng = random.Random(seed)
    n = 0
    while count is None or n < count:
        risky = rng.random() < 0.02
        amount = rng.lognormvariate(3.5, 1.0) * (rng.uniform(8, 30) if risky else 1.0)
        yield Transaction(
            id=f"tx-{seed}-{n}",
            account_id=f"acct-{rng.randrange(accounts):04d}",
            timestamp_ms=clock_ms(),
            amount=round(amount, 2),
            currency=rng.choice(CURRENCIES),
            merchant_id=f"m-{rng.randrange(5000):05d}",
            merchant_category=rng.choice(CATEGORIES),
            country=rng.choice(RISKY_COUNTRIES) if risky else rng.choice(COUNTRIES),
            channel="online" if risky else rng.choice(CHANNELS),  # type: ignore[arg-type]
        )
        n += 1


def _from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
    if "features" in record:
        record["features"] = [float(x) for x in record["features"].split(";") if x.strip()]
    return record


def iter_file_transactions(path: str | Path) -> Iterator[Transaction]:
    """Replay ``.jsonl`` (one object a line) or ``.csv`` (a header row of field names)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"transactions file {path} does not exist")
    if path.suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{path}: expected a .jsonl or .csv file")
    with path.open(newline="") as fh:
        if path.suffix == ".jsonl":
            rows: Iterator[tuple[int, str | dict[str, str]]] = enumerate(fh, 1)
        else:
            rows = enumerate(csv.DictReader(fh), 2)  # line 1 is the header
        for line, raw in rows:
            try:
                if isinstance(raw, str):
                    if not raw.strip():
                        continue
                    record = json.loads(raw)
                else:
                    record = _from_csv_row(raw)
                yield Transaction.model_validate({"kind": "transaction", **record})
            except (ValidationError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{line}: not a valid transaction: {exc}") from exc
