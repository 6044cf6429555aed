"""How a model runs on its device beyond fp32 eager: a frozen graph on a CPU (the default),
reduced precision, channels-last memory, ``torch.compile`` with bucketed batch sizes (those
three off by default; for GPUs).

- ``graph``: ``auto`` runs a model that offers an example input (every built-in one) as a
  frozen TorchScript graph optimised for inference on a CPU, in fp32 without ``compile``;
  anything else, and ``eager``, runs the module as it is (``freeze_for_inference``).

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
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.batch_sizing import candidate_sizes

log = logging.getLogger("streaminfer.runner")

Precision = Literal["fp32", "fp16", "bf16"]
Graph = Literal["auto", "eager"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# inductor compiles its kernels' C launchers (and, on a CPU, the kernels) with one of these
_C_COMPILERS = ("cc", "gcc", "clang")


@dataclass(frozen=True, slots=True)
class Acceleration:
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    max_batch_size: int = 256  # the largest bucket
    compile_backend: str = "inductor"
    graph: Graph = "auto"

    def check(self, device: torch.device) -> None:
        """Refuse a combination the device cannot run, at start-up, in one line (each would
        otherwise fail every batch, and every record would become a dead letter)."""
        if self.precision == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; on a CPU use bf16")
        if self.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not run bfloat16; "
                             "use fp16")
        if self.compile and self.compile_backend == "inductor" and not any(map(shutil.which, _C_COMPILERS)):
            raise ValueError("--compile builds its kernels with a C compiler, and none is on PATH "
                             f"(looked for {', '.join(_C_COMPILERS)}): install gcc, or run without --compile")

    def prepare(self, module: torch.nn.Module, device: torch.device | None = None,
                example: torch.Tensor | None = None) -> torch.nn.Module:
        """The module to call: in channels-last memory and compiled, as asked; else, on a CPU
        in fp32 and given an ``example`` batch, as a frozen graph (``graph`` auto)."""
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compile:
            allow_recompiles(len(candidate_sizes(self.max_batch_size)))  # every bucket's graph
            return torch.compile(module, dynamic=False, backend=self.compile_backend)  # type: ignore[return-value]
        if (self.graph == "auto" and example is not None and self.precision == "fp32"
                and (device is None or device.type == "cpu")):
            return freeze_for_inference(module, self.layout(example))
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


def freeze_for_inference(module: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """``module`` traced on ``example`` (a batch of one), frozen and optimised for inference
    (``torch.jit.optimize_for_inference``: weights as constants, convolutions prepacked
    for oneDNN); ``module`` itself, with a warning line, if that fails or answers
    otherwise than it on ``example`` and on a batch of three.

    Two things make it worth it on a CPU. One call from Python runs the whole forward: eager,
    every operator gives up the GIL and takes it back, and a model thread that wants it back
    while the event loop holds it waits up to the switch interval (5 ms): an eager
    transaction MLP beside a busy Python thread took 25 ms a batch of 256 against 65 us
    alone, frozen 10.5 ms. And it is faster alone: EfficientNet-Lite0 ran 105 frames/s at
    batch 2 on 2 threads against 76 eager (77.6 against 57.4 at batch 1; five interleaved
    runs each, forward only), outputs equal to 4e-6.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return module  # already a graph (prepared before, or loaded as one)
    name = type(module).__name__
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # torch marks torch.jit deprecated; it still runs it
            graph = torch.jit.optimize_for_inference(torch.jit.trace(module.eval(), example, check_trace=False))
            for batch in (example, torch.cat([example] * 3)):
                want, got = module(batch), graph(batch)
                if not (isinstance(got, torch.Tensor) and got.shape == want.shape
                        and torch.allclose(got, want, rtol=1e-3, atol=1e-4)):
                    raise ValueError(f"its answer on a batch of {batch.shape[0]} differs from the module's")
    except Exception as exc:  # a module tracing cannot follow: it runs eager, as it would have
        log.warning("%s runs eager: no frozen graph of it (%s: %s)", name, type(exc).__name__, exc)
        return module
    return graph  # type: ignore[no-any-return]


def allow_recompiles(graphs: int) -> None:
    """Let ``torch.compile`` keep ``graphs`` static-shape graphs of one forward. Past its
    recompile limit (8) torch runs the forward eager from then on, without an error: with
    batches up to 1024 (11 buckets) the sizes 256 to 1024, the ones a GPU runs best, were
    never compiled. The limit is process-wide; it is only ever raised here."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), graphs))


def bucket(n: int, bound: int) -> int:
    """The next power of two at or above ``n``, but never above ``bound`` (nor below ``n``)."""
    size = 1
    while size < n:
        size *= 2
    return max(n, min(size, bound))
