"""Transactions: a deterministic generator with plausible fields, or a CSV/JSONL replay.

The generator is seeded so a test or a demo can publish the same ids and amounts again
and match results back to inputs; only timestamps come from the clock, because the
pipeline measures latency from event time.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from schemas.models import Transaction, wall_ms

Channel = Literal["card_present", "online", "atm", "transfer"]

# Repeats weight the choice: mostly domestic USD card payments, as in real traffic.
CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "CAD")
CATEGORIES = ("grocery", "electronics", "travel", "gaming", "fuel", "restaurants", "pharmacy")
COUNTRIES = ("US", "US", "US", "US", "GB", "DE", "FR", "CA")
CHANNELS: tuple[Channel, ...] = (
    "card_present", "card_present", "online", "online", "atm", "transfer"
)
RISKY_COUNTRIES = ("NG", "RU", "BR", "VN")
RISKY_SHARE = 0.02



def iter_synthetic_transactions(
    count: int | None,
    *,
    seed: int = 0,
    accounts: int = 200,
    clock_ms: Callable[[], int] = wall_ms,
) -> Iterator[Transaction]:
    """Endless when ``count`` is None; about 2% are large, foreign and online.

    The risky share gives a fraud model something to flag, so a demo shows more than
    one kind of output.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if accounts < 1:
        raise ValueError(f"accounts must be >= 1, got {accounts}")
    return _synthetic(count, seed, accounts, clock_ms)


def _synthetic(
    count: int | None, seed: int, accounts: int, clock_ms: Callable[[], int]
) -> Iterator[Transaction]:
    rng = random.Random(seed)
    n = 0
    while count is None or n < count:
        risky = rng.random() < RISKY_SHARE
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
            channel="online" if risky else rng.choice(CHANNELS),
        )
        n += 1


def iter_file_transactions(path: str | Path) -> Iterator[Transaction]:
    """Replay ``.jsonl`` (one object a line) or ``.csv`` (a header row of field names).

    The path is checked at the call so a typo fails before a producer is started; each
    bad record raises ``ValueError`` with ``file:line`` so it can be found and fixed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{path}: expected a .jsonl or .csv file")
    if not path.is_file():
        raise FileNotFoundError(f"transactions file {path} does not exist")
    records = _jsonl_records(path) if suffix == ".jsonl" else _csv_records(path)
    return (_validate(path, line, record) for line, record in records)


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line}: not valid JSON: {exc.msg}") from exc


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    # utf-8-sig: spreadsheets often write a BOM that would otherwise stick to the first column
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            # line_num counts physical lines, so blank lines and quoted newlines stay exact
            line = reader.line_num
            if None in row:
                raise ValueError(f"{path}:{line}: more values than header columns")
            try:
                yield line, _from_csv_row(row)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from exc


def _from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    """Empty cells mean "not given", so optional columns fall back to the model defaults."""
    record: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
    if "features" in record:
        try:
            record["features"] = [float(x) for x in record["features"].split(";") if x.strip()]
        except ValueError as exc:
            raise ValueError(f"features: expected ';'-separated numbers ({exc})") from exc
    return record


def _validate(path: Path, line: int, record: Any) -> Transaction:
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    try:
        return Transaction.model_validate(record)
    except ValidationError as exc:
        raise ValueError(f"{path}:{line}: not a valid transaction: {_summary(exc)}") from exc


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
