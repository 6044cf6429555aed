from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from producers.transaction_source import (
    RISKY_COUNTRIES,
    iter_file_transactions,
    iter_synthetic_transactions,
)
from schemas import Transaction, decode_input, encode

FIELDS = list(Transaction.model_fields)


def fixed_clock() -> int:
    return 1_700_000_000_000


def write_csv(path: Path, txs: list[Transaction]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for tx in txs:
            row = tx.model_dump()
            row["features"] = ";".join(repr(x) for x in tx.features or [])
            writer.writerow(row)


def write_jsonl(path: Path, txs: list[Transaction]) -> None:
    path.write_text("".join(tx.model_dump_json() + "\n" for tx in txs))


def sample() -> list[Transaction]:
    txs = list(iter_synthetic_transactions(20, seed=4, clock_ms=fixed_clock))
    txs[0] = txs[0].model_copy(update={"features": [0.5, -1.25, 3e-7]})
    return txs


def test_synthetic_transactions_are_deterministic_for_a_seed() -> None:
    a = list(iter_synthetic_transactions(200, seed=7, clock_ms=fixed_clock))
    b = list(iter_synthetic_transactions(200, seed=7, clock_ms=fixed_clock))
    c = list(iter_synthetic_transactions(200, seed=8, clock_ms=fixed_clock))
    assert a == b
    assert a != c


def test_synthetic_transactions_are_valid_wire_events_with_plausible_fields() -> None:
    txs = list(iter_synthetic_transactions(500, seed=1, accounts=50, clock_ms=fixed_clock))

    assert [t.id for t in txs[:3]] == ["tx-1-0", "tx-1-1", "tx-1-2"]
    assert len({t.id for t in txs}) == 500
    for tx in txs:
        assert decode_input(encode(tx)) == tx
        assert tx.account_id.startswith("acct-") and int(tx.account_id[5:]) < 50
        assert tx.amount >= 0 and len(tx.currency) == 3 and len(tx.country) == 2
        assert tx.channel and tx.merchant_category and tx.timestamp_ms == fixed_clock()


def test_about_two_percent_of_synthetic_transactions_look_risky() -> None:
    txs = list(iter_synthetic_transactions(5000, seed=3))
    risky = [t for t in txs if t.country in RISKY_COUNTRIES]
    assert 0.01 < len(risky) / len(txs) < 0.03
    assert all(t.channel == "online" for t in risky)
    median = sorted(t.amount for t in txs)[len(txs) // 2]
    assert sorted(t.amount for t in risky)[len(risky) // 2] > 5 * median


def test_synthetic_count_none_is_endless() -> None:
    it = iter_synthetic_transactions(None, seed=0)
    assert [next(it).id for _ in range(3000)][-1] == "tx-0-2999"


def test_csv_round_trips_including_features(tmp_path: Path) -> None:
    path = tmp_path / "txs.csv"
    txs = sample()
    write_csv(path, txs)
    assert list(iter_file_transactions(path)) == txs


def test_jsonl_round_trips_including_features(tmp_path: Path) -> None:
    path = tmp_path / "txs.jsonl"
    txs = sample()
    write_jsonl(path, txs)
    assert list(iter_file_transactions(str(path))) == txs


def test_csv_missing_optional_columns_take_model_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text("id,account_id,timestamp_ms,amount,currency\ntx-1,acct-1,5,12.50,EUR\n")

    (tx,) = iter_file_transactions(path)

    assert tx == Transaction(
        id="tx-1", account_id="acct-1", timestamp_ms=5, amount=12.5, currency="EUR"
    )


def test_jsonl_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "txs.jsonl"
    txs = sample()[:2]
    path.write_text(f"{txs[0].model_dump_json()}\n\n{txs[1].model_dump_json()}\n")
    assert list(iter_file_transactions(path)) == txs


def test_a_bad_jsonl_line_raises_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = sample()[0].model_dump_json()
    bad = json.dumps(
        {"id": "x", "account_id": "a", "timestamp_ms": 1, "amount": -3, "currency": "USD"}
    )
    path.write_text(f"{good}\n{good}\n{bad}\n")

    with pytest.raises(ValueError, match=r"bad\.jsonl:3: .*amount"):
        list(iter_file_transactions(path))


def test_invalid_json_raises_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(sample()[0].model_dump_json() + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: not valid JSON"):
        list(iter_file_transactions(path))


def test_a_bad_csv_row_raises_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "id,account_id,timestamp_ms,amount,currency,features\n"
        "tx-1,acct-1,5,1.0,EUR,1;2\n"
        "tx-2,acct-1,5,1.0,EUR,1;oops\n"
    )
    with pytest.raises(ValueError, match=r"bad\.csv:3: features"):
        list(iter_file_transactions(path))


def test_unknown_csv_columns_are_rejected_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("id,account_id,timestamp_ms,amount,currency,colour\ntx-1,a,5,1.0,EUR,red\n")
    with pytest.raises(ValueError, match=r"extra\.csv:2: .*colour"):
        list(iter_file_transactions(path))


def test_a_missing_transactions_file_fails_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        iter_file_transactions(tmp_path / "absent.jsonl")


def test_an_unknown_file_type_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "txs.parquet"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"jsonl or \.csv"):
        iter_file_transactions(path)
