"""How a model runs on its device beyond fp32 eager: reduced precision, channels-last
memory, ``torch.compile`` with bucketed batch sizes. All off by default; for GPUs.

- ``precision``: ``bf16`` (CPU and CUDA) or ``fp16`` (CUDA) runs the forward pass under
  ``torch.autocast``; outputs go back to fp32 before ``postprocess``, so results keep
  their schema and numerics downstream.
- ``channels_last``: 4-D inputs (image batches) and the model's weights in NHWC, the
  layout convolutions are fastest in on tensor cores.
- ``compile``: the model's module through ``torch.compile`` (static shapes). A batch is
  padded up to the next power of two (at most the bound), so the compiled graph is
  specialised for a handful of sizes instead of every size the batcher makes; the padding
  rows are cut from the output before anything reads it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

log = logging.getLogger("streaminfer.runner")

Precision = Literal["fp32", "fp16", "bf16"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class Acceleration:
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    max_batch_size: int = 256  # the largest bucket
    compile_backend: str = "inductor"

    def check(self, device: torch.device) -> None:
        """Refuse a combination the device cannot run, at start-up, in one line."""
        if self.precision == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; on a CPU use bf16")

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module to call: in channels-last memory and compiled, as asked."""
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compile:
            module = torch.compile(module, dynamic=False, backend=self.compile_backend)  # type: ignore[assignment]
        return module

    def layout(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last and batch.ndim == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        if self.precision == "fp32":
            yield
            return
        with torch.autocast(device_type=device.type, dtype=_DTYPES[self.precision]):
            yield

    def padded(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``batch`` padded to its bucket (compile only), and how many rows are real."""
        n = batch.shape[0]
        if not self.compile:
            return batch, n
        size = bucket(n, self.max_batch_size)
        if size == n:
            return batch, n
        pad = batch[-1:].expand(size - n, *batch.shape[1:])  # copies of a real row: finite, in range
        return torch.cat([batch, pad]), n


def bucket(n: int, bound: int) -> int:
    """The next power of two at or above ``n``, but never above ``bound`` (nor below ``n``)."""
    size = 1
    while size < n:
        size *= 2
    return max(n, min(size, bound))
