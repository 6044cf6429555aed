"""Build a model from a spec: ``builtin:NAME``, ``torchscript:PATH``, ``export:PATH.pt2``, ``none``."""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.models.base import Model, ModelError, TorchModule
from pipeline.models.efficientnet import EfficientNetLite0
from pipeline.models.frames import FrameCNN, frame_to_tensor, top_k
from pipeline.models.lending_club import LendingClubMLP
from pipeline.models.transactions import TransactionMLP, transaction_to_tensor, transactions_to_batch
from schemas.models import Frame, InputKind, Transaction

BUILTINS: dict[str, Callable[[], Model]] = {
    "efficientnet-lite0": EfficientNetLite0,
    "frame-cnn": FrameCNN,
    "lending-club-mlp": LendingClubMLP,
    "txn-mlp": TransactionMLP,
}


class TorchScriptModel(TorchModule):
    """A user's TorchScript or ``torch.export`` (.pt2) program, fed with the built-in
    preprocessing of its input kind.

    Frame models get 3x96x96 normalised RGB and their output rows are read as class
    logits (top-3); transaction models get the built-in feature vector and their outputs
    are returned as they are.
    """

    def __init__(self, path: Path, kind: InputKind, input_size: int = 96) -> None:
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        try:
            self.module = _load_program(path)
        except Exception as exc:
            raise ModelError(
                f"model file {path} is not a loadable TorchScript or torch.export file: {exc}"
            ) from exc
        self.kind = kind
        self.preprocess_in_pool = kind == "frame"  # our own decoding and resizing, pure and thread-safe
        if kind == "transaction":  # the built-in features, a batch at a time
            self.preprocess_batch = transactions_to_batch
        self.output_fields: tuple[str, ...] = ("labels",) if kind == "frame" else ("outputs",)
        self.name = path.stem
        self.version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.input_size = input_size

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        if self.kind == "frame":
            return frame_to_tensor(item, self.input_size)
        return transaction_to_tensor(item)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        if self.kind == "frame":
            return top_k(output.reshape(output.shape[0], -1), [], 3)
        return [{"outputs": row} for row in output.float().reshape(output.shape[0], -1).tolist()]


def _load_program(path: Path) -> torch.nn.Module:
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        # torch >= 2.10 marks TorchScript deprecated; existing user files still load fine
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_model(spec: str, kind: InputKind) -> Model | None:
    scheme, _, arg = spec.partition(":")
    if scheme == "none":
        return None
    if scheme == "builtin":
        factory = BUILTINS.get(arg)
        if factory is None:
            raise ModelError(f"unknown built-in model {arg!r}; choose from {sorted(BUILTINS)}")
        model: Model = factory()
    elif scheme in ("torchscript", "export"):
        model = TorchScriptModel(Path(arg), kind)
    elif scheme == "python":
        model = _from_entry_point(arg)
    else:
        raise ModelError(
            f"model spec {spec!r}: expected builtin:NAME, torchscript:PATH, export:PATH.pt2, "
            "python:MODULE:FACTORY or none"
        )
    if model.kind != kind:
        raise ModelError(f"model {model.name!r} takes {model.kind} inputs, configured for {kind}")
    return model


def _from_entry_point(target: str) -> Model:
    """``package.module:factory``: call the factory, check it returned a Model."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"python model {target!r}: expected python:MODULE:FACTORY")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"python model {target!r} could not be imported: {exc}") from exc
    try:
        model = factory()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"python model {target!r}: the factory failed: {type(exc).__name__}: {exc}") from exc
    missing = [a for a in ("name", "version", "kind", "output_fields", "to", "preprocess", "forward", "postprocess")
               if not hasattr(model, a)]
    if missing:
        raise ModelError(f"python model {target!r} returned {type(model).__name__} without {missing}")
    if model.kind not in ("frame", "transaction"):
        raise ModelError(f"python model {target!r}: kind must be 'frame' or 'transaction', got {model.kind!r}")
    return model  # type: ignore[no-any-return]


def load_state_dict(module: torch.nn.Module, path: str | Path, name: str) -> torch.nn.Module:
    """Weights for a user's architecture: tensors only (``weights_only=True``), never pickled code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"model {name!r}: weights {path} did not load: {exc}") from exc
    return module.eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ModelError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved
