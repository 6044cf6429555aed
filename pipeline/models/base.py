"""The model interface the runner drives.

``preprocess`` runs per item and may reject one item (it becomes a dead letter) without
failing its batch; ``forward`` runs once per batch; ``postprocess`` maps the batch output
back to one JSON-able dict per item, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from pipeline.exceptions import ModelError
from schemas.errors import Reason
from schemas.models import Frame, InputKind, Transaction


class ItemRejected(Exception):
    """Raised by ``preprocess`` for one item that cannot be fed to the model."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@runtime_checkable
class Model(Protocol):
    name: str
    version: str
    kind: InputKind
    # the keys every postprocessed row carries: the output schema results are checked against
    output_fields: tuple[str, ...]

    # optional attribute ``preprocess_in_pool`` (default False): True lets the runner call
    # ``preprocess`` from several threads of its preparation pool at once, ahead of the model
    # optional method ``preprocess_batch(items) -> Tensor``: the inputs of a whole batch of
    # this model's kind in one call, row i equal to ``preprocess(items[i])`` (what a Python
    # loop per item costs is then paid once a batch); if it raises, the runner preprocesses
    # the batch item by item, so the item at fault is the only one to fail
    # optional method ``example_input() -> Tensor | None``: a batch of one as ``forward``
    # takes it; given, the runner may run the module as a frozen graph (``pipeline.acceleration``)

    def to(self, device: torch.device) -> None: ...

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor: ...

    def forward(self, batch: torch.Tensor) -> torch.Tensor: ...

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]: ...


class TorchModule:
    """Shared plumbing for models backed by one ``torch.nn.Module`` in eval mode."""

    module: torch.nn.Module

    def to(self, device: torch.device) -> None:
        self.module.to(device)
        self.module.eval()

    def example_input(self) -> torch.Tensor | None:
        """A batch of one, as ``forward`` takes it; None (the default): the module runs eager."""
        return None

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.module(batch)
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"model {self.name!r} returned {type(out).__name__}, not a Tensor")  # type: ignore[attr-defined]
        return out
