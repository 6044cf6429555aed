"""Run a batch through the models in a dedicated thread; one outcome per item, in order.

A batch may mix frames and transactions: items are grouped by kind, each group runs
through its model, and outcomes are put back in input order. Whatever happens (a bad
item, a model exception, a model returning the wrong number of rows) every item gets
exactly one outcome: a result dict or a typed error that becomes a dead letter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.models.base import ItemRejected, Model
from schemas.errors import DecodeError, Reason
from schemas.models import Frame, InputKind, Transaction


@dataclass(frozen=True, slots=True)
class Outcome:
    outputs: dict[str, Any] | None
    error: DecodeError | None
    model_name: str = ""
    model_version: str = ""
    inference_start_ms: int = 0
    inference_end_ms: int = 0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Runner:
    def __init__(
        self,
        models: Mapping[InputKind, Model],
        device: torch.device,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.models = dict(models)
        self.device = device
        self._clock_ms = clock_ms
        self._executor: ThreadPoolExecutor | None = None
        self._pin = device.type == "cuda"

    def start(self) -> None:
        for model in self.models.values():
            model.to(self.device)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streaminfer-model")

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run(self, items: Sequence[Frame | Transaction]) -> list[Outcome]:
        if self._executor is None:
            raise RuntimeError("Runner.start() was not called")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, items)

    def run_sync(self, items: Sequence[Frame | Transaction]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        by_kind: dict[InputKind, list[int]] = {}
        for i, item in enumerate(items):
            by_kind.setdefault(item.kind, []).append(i)
        for kind, indices in by_kind.items():
            model = self.models.get(kind)
            if model is None:
                err = DecodeError(Reason.NO_MODEL_FOR_KIND, f"this worker runs no {kind} model")
                for i in indices:
                    outcomes[i] = Outcome(None, err)
                continue
            for i, outcome in zip(indices, self._run_model(model, [items[i] for i in indices]), strict=True):
                outcomes[i] = outcome
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    def _run_model(self, model: Model, items: list[Frame | Transaction]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        tensors: list[torch.Tensor] = []
        ok: list[int] = []
        for i, item in enumerate(items):
            try:
                tensors.append(model.preprocess(item))
                ok.append(i)
            except ItemRejected as exc:
                outcomes[i] = Outcome(None, DecodeError(exc.reason, exc.message), model.name, model.version)
            except Exception as exc:
                outcomes[i] = Outcome(
                    None,
                    DecodeError(Reason.PREPROCESS_FAILED, f"model {model.name!r}: {type(exc).__name__}: {exc}"),
                    model.name,
                    model.version,
                )
        if ok:
            start_ms = self._clock_ms()
            try:
                rows = self._infer(model, tensors)
                error = None
            except Exception as exc:
                rows, error = None, self._error_for(model, exc)
            end_ms = self._clock_ms()
            for j, i in enumerate(ok):
                outcomes[i] = Outcome(
                    rows[j] if rows is not None else None,
                    error,
                    model.name,
                    model.version,
                    start_ms,
                    end_ms,
                )
        return outcomes  # type: ignore[return-value]

    def _infer(self, model: Model, tensors: list[torch.Tensor]) -> list[dict[str, Any]]:
        batch = torch.stack(tensors)
        if self._pin:
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            output = model.forward(batch)
            if output.ndim == 0 or output.shape[0] != len(tensors):
                raise _OutputMismatch(
                    f"model {model.name!r} returned output of shape {tuple(output.shape)} "
                    f"for a batch of {len(tensors)}"
                )
            rows = list(model.postprocess(output.detach().cpu()))
        if len(rows) != len(tensors):
            raise _OutputMismatch(
                f"model {model.name!r} postprocess gave {len(rows)} results for a batch of {len(tensors)}"
            )
        for row in rows:
            if not isinstance(row, dict) or any(field not in row for field in model.output_fields):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise _OutputMismatch(
                    f"model {model.name!r} declares outputs {list(model.output_fields)}, postprocess gave {got}"
                )
        return rows

    @staticmethod
    def _error_for(model: Model, exc: Exception) -> DecodeError:
        if isinstance(exc, _OutputMismatch):
            return DecodeError(Reason.MODEL_OUTPUT_MISMATCH, str(exc))
        return DecodeError(Reason.MODEL_FAILED, f"model {model.name!r}: {type(exc).__name__}: {exc}")


class _OutputMismatch(Exception):
    pass
