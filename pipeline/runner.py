"""Run a batch through the models in a dedicated thread; one outcome per item, in order.

A batch may mix frames and transactions: items are grouped by kind, each group runs
through its model, and outcomes are put back in input order. Whatever happens every item
gets exactly one outcome: a row of outputs or a typed error that becomes a dead letter.

Poison isolation: when a model raises (or returns the wrong number of rows) on a batch,
the batch is split in halves and each half retried, down to single items, so only the
guilty items fail. A batch that runs out of memory is retried in halves too, and the
largest size that ran is remembered as the model's ceiling for later batches.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.acceleration import Acceleration
from pipeline.allocator import keep_freed_memory
from pipeline.exceptions import DeviceFailed
from pipeline.models.base import ItemRejected, Model
from schemas.errors import DecodeError, Reason
from schemas.models import Frame, InputKind, Transaction, wall_ms

log = logging.getLogger("streaminfer.runner")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch preprocessed: per item its input tensor, or the outcome that already ends it;
    or, where one model preprocessed the whole batch at once (``preprocess_batch``), that
    batch's tensor, row i the input of item i."""

    items: tuple[Frame | Transaction, ...]
    slots: tuple[torch.Tensor | Outcome, ...] | torch.Tensor

    def select(self, indices: Sequence[int]) -> Prepared:
        if isinstance(self.slots, torch.Tensor):
            return Prepared(tuple(self.items[i] for i in indices), self.slots[list(indices)])
        return Prepared(tuple(self.items[i] for i in indices), tuple(self.slots[i] for i in indices))


# made per record: not frozen, whose __init__ costs four times as much (0.8 against 0.19 us for 7 fields)
@dataclass(slots=True)
class Outcome:
    outputs: dict[str, Any] | None
    error: DecodeError | None
    model_name: str = ""
    model_version: str = ""
    inference_start_ms: int = 0
    inference_end_ms: int = 0
    # the fields the model declares every row carries (checked when the result is built)
    output_fields: tuple[str, ...] = ()



class Runner:
    def __init__(
        self,
        models: Mapping[InputKind, Model],
        device: torch.device,
        clock_ms: Callable[[], int] = wall_ms,
        threads_per_lane: int = 0,
        acceleration: Acceleration | None = None,
        prepare_threads: int = 1,
        prepare_ahead: bool = True,
        streams: int = 1,
    ) -> None:
        """``threads_per_lane``: intra-op threads of each of a lane's model threads (torch
        sets them per thread); 0 keeps torch's default. ``streams``: model threads per
        lane, each running a batch of its own at the same time (the worker keeps up to this
        many of a lane's batches in its model, and sends their results in batch order).
        ``prepare_threads``: the preparation
        pool, where batches are preprocessed ahead of their model (``prepare``);
        ``prepare_ahead`` False: no batch is (``prepares_apart`` says no), each is
        preprocessed in its model thread."""
        self.models = dict(models)
        # the kinds whose model preprocesses on the preparation pool (frames); none if nothing is prepared ahead
        self.pool_kinds = frozenset(kind for kind, model in self.models.items()
                                    if prepare_ahead and getattr(model, "preprocess_in_pool", False))
        self.threads_per_lane = threads_per_lane
        self.streams = max(1, streams)
        self.acceleration = acceleration or Acceleration()
        self.acceleration.check(device)
        self.device = device
        self._clock_ms = clock_ms
        # model threads per lane (input topic): torch releases the GIL, so a transaction
        # batch runs while a frame batch is in the model
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self.prepare_threads = max(1, prepare_threads)
        self._prep_pool: ThreadPoolExecutor | None = None
        self._started = False
        self._pin = device.type == "cuda"
        # model name -> largest batch size that did not run out of memory
        self._ceilings: dict[str, int] = {}

    def start(self) -> None:
        keep_freed_memory()  # batches reuse freed activations instead of faulting in fresh pages
        for model in self.models.values():
            model.to(self.device)
            module = getattr(model, "module", None)
            if isinstance(module, torch.nn.Module):  # TorchModule-backed: layout, compile, a frozen graph apply
                example = getattr(model, "example_input", lambda: None)()
                model.module = self.acceleration.prepare(  # type: ignore[attr-defined]
                    module, self.device, None if example is None else example.to(self.device))
        self._started = True

    async def warm_up(self, lane: str, sizes: Sequence[int], set_up_runs: int = 2) -> dict[InputKind, dict[int, float]]:
        """Run every model that gives an example input (``example_input``) on each of
        ``lane``'s model threads at each of ``sizes``: ``set_up_runs`` batches, then one
        timed (three timed, the quickest counting, made a frozen EfficientNet-Lite0 on one
        model thread of 2 intra-op threads drain 61-65 frames/s afterwards against 91-98:
        more calls of a graph per shape are not free). Each thread sets up its own kernels
        for each shape (a frozen graph profiles
        a shape on its first call and optimises it on its second: EfficientNet-Lite0 at
        batch 1 took 23, 14, then 9 ms on one thread here), so this is what a lane's first
        batches of a size would otherwise pay on live records. The threads run each size at
        the same time, as they do under load. Returns, per kind, the seconds per item of
        each size's timed batch (the median over the threads); a size a model fails on is
        left out, with a warning: warming up never stops a worker."""
        examples = {kind: example for kind, model in self.models.items()
                    if isinstance(example := getattr(model, "example_input", lambda: None)(), torch.Tensor)}
        if not examples or not sizes:
            return {}
        together = threading.Barrier(self.streams)
        loop = asyncio.get_running_loop()
        executor = self._executor(lane)
        per_thread = await asyncio.gather(*(
            loop.run_in_executor(executor, self._warm_up_sync, examples, tuple(sizes), set_up_runs, together)
            for _ in range(self.streams)))
        timings: dict[InputKind, dict[int, float]] = {}
        for kind in examples:
            for size in sizes:
                seconds = [thread[kind][size] for thread in per_thread if size in thread.get(kind, {})]
                if seconds:
                    timings.setdefault(kind, {})[size] = statistics.median(seconds) / size
        return timings

    def _warm_up_sync(self, examples: Mapping[InputKind, torch.Tensor], sizes: Sequence[int], set_up_runs: int,
                      together: threading.Barrier) -> dict[InputKind, dict[int, float]]:
        timings: dict[InputKind, dict[int, float]] = {}
        for kind, example in examples.items():
            model = self.models[kind]
            for size in sizes:
                try:
                    # on every thread at once (a barrier per shape; one that never comes, a
                    # thread that failed, lets the others go on after a while)
                    together.wait(timeout=60)
                except threading.BrokenBarrierError:
                    pass
                batch = torch.cat([example] * size)
                try:
                    for _ in range(set_up_runs):
                        self._infer(model, batch)
                    start = time.perf_counter()
                    self._infer(model, batch)
                    timings.setdefault(kind, {})[size] = time.perf_counter() - start
                except Exception as exc:
                    log.warning("model %s failed to warm up at batch %d (%s: %s); its first batches of that "
                                "size set it up", model.name, size, type(exc).__name__, exc)
        return timings

    def stop(self) -> None:
        for executor in [*self._executors.values(), *([self._prep_pool] if self._prep_pool else [])]:
            executor.shutdown(wait=True)
        self._executors.clear()
        self._prep_pool = None
        self._started = False

    async def run(self, items: Sequence[Frame | Transaction], lane: str = "") -> list[Outcome]:
        """``run_sync`` on ``lane``'s own model thread."""
        return (await self.run_timed(items, lane))[0]

    async def run_timed(self, items: Sequence[Frame | Transaction], lane: str = "") -> tuple[list[Outcome], float]:
        """``run``, and the seconds it took in its model thread (not the wait for the
        thread, nor the event loop's for its answer)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(lane), _timed, self.run_sync, items)

    async def prepare(self, items: Sequence[Frame | Transaction]) -> Prepared:
        """Preprocess ``items`` on the preparation pool, off the model threads, so that a
        lane's next batch is decoded while its model runs the current one. Items whose model
        opts in (``preprocess_in_pool``: frame models, whose JPEG decoding and resizing in
        OpenCV release the GIL) are spread over the pool's threads; the others run in one."""
        if not self._started:
            raise RuntimeError("Runner.start() was not called")
        if self._prep_pool is None:
            self._prep_pool = ThreadPoolExecutor(max_workers=self.prepare_threads,
                                                 thread_name_prefix="streaminfer-prepare")
        loop = asyncio.get_running_loop()
        spread = [i for i, item in enumerate(items) if self._parallel_preprocess(item.kind)]
        if len(spread) < 2 or self.prepare_threads < 2:
            return await loop.run_in_executor(self._prep_pool, self.prepare_sync, items)
        rest = [i for i, item in enumerate(items) if not self._parallel_preprocess(item.kind)]
        chunks = [spread[at::self.prepare_threads] for at in range(self.prepare_threads)] + [rest]
        parts = await asyncio.gather(*(loop.run_in_executor(self._prep_pool, self.prepare_sync,
                                                            [items[i] for i in chunk])
                                       for chunk in chunks if chunk))
        slots: list[torch.Tensor | Outcome | None] = [None] * len(items)
        for chunk, part in zip((c for c in chunks if c), parts, strict=True):
            for i, slot in zip(chunk, part.slots, strict=True):
                slots[i] = slot
        return Prepared(tuple(items), tuple(slots))  # type: ignore[arg-type]

    async def infer(self, prepared: Prepared, lane: str = "") -> list[Outcome]:
        """``infer_sync`` on ``lane``'s own model thread."""
        return (await self.infer_timed(prepared, lane))[0]

    async def infer_timed(self, prepared: Prepared, lane: str = "") -> tuple[list[Outcome], float]:
        """``infer``, and the seconds it took in its model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(lane), _timed, self.infer_sync, prepared)

    def _executor(self, lane: str) -> ThreadPoolExecutor:
        if not self._started:
            raise RuntimeError("Runner.start() was not called")
        executor = self._executors.get(lane)
        if executor is None:
            executor = self._executors[lane] = ThreadPoolExecutor(
                max_workers=self.streams, thread_name_prefix=f"streaminfer-model-{lane or 'main'}",
                initializer=self._init_thread,
            )
        return executor

    def _parallel_preprocess(self, kind: InputKind) -> bool:
        return kind in self.pool_kinds

    def prepares_apart(self, items: Sequence[Frame | Transaction]) -> bool:
        """Whether a batch of ``items`` is worth preparing ahead (its preprocessing is costly)."""
        kinds = self.pool_kinds
        return bool(kinds) and any(item.kind in kinds for item in items)

    def _init_thread(self) -> None:
        if self.threads_per_lane:
            torch.set_num_threads(self.threads_per_lane)
        if self.device.type == "cuda":  # cuda:N: pinning and the allocator act on N, not on device 0
            torch.cuda.set_device(self.device)

    def run_sync(self, items: Sequence[Frame | Transaction]) -> list[Outcome]:
        return self.infer_sync(self.prepare_sync(items))

    def prepare_sync(self, items: Sequence[Frame | Transaction]) -> Prepared:
        """One slot per item: its input tensor, or the outcome that ends it (no model for its
        kind, or its model's ``preprocess`` refused or failed on it). A batch of one kind
        whose model has ``preprocess_batch`` is preprocessed in one call; if that raises, item
        by item, which says which item fails and why."""
        if items and (whole := self._preprocess_batch(items)) is not None:
            return Prepared(tuple(items), whole)
        slots: list[torch.Tensor | Outcome] = []
        for item in items:
            model = self.models.get(item.kind)
            if model is None:
                error = DecodeError(Reason.NO_MODEL_FOR_KIND, f"this worker runs no {item.kind} model")
                slots.append(Outcome(None, error))
                continue
            try:
                slots.append(model.preprocess(item))
            except ItemRejected as exc:
                slots.append(Outcome(None, DecodeError(exc.reason, exc.message), model.name, model.version))
            except Exception as exc:
                slots.append(Outcome(
                    None,
                    DecodeError(Reason.PREPROCESS_FAILED, f"model {model.name!r}: {type(exc).__name__}: {exc}"),
                    model.name,
                    model.version,
                ))
        return Prepared(tuple(items), tuple(slots))

    def _preprocess_batch(self, items: Sequence[Frame | Transaction]) -> torch.Tensor | None:
        kind = items[0].kind
        model = self.models.get(kind)
        preprocess_batch = getattr(model, "preprocess_batch", None)
        if preprocess_batch is None or any(item.kind != kind for item in items):
            return None
        try:
            batch = preprocess_batch(items)
        except Exception:  # item by item, the failing item gets its dead letter
            return None
        if not isinstance(batch, torch.Tensor) or batch.ndim == 0 or batch.shape[0] != len(items):
            return None
        return batch

    def infer_sync(self, prepared: Prepared) -> list[Outcome]:
        """Each kind's tensors through its model (a batch may mix kinds); outcomes in input order."""
        if isinstance(prepared.slots, torch.Tensor):  # one kind, every item preprocessed
            if not prepared.items:
                return []
            model = self.models[prepared.items[0].kind]
            start_ms = self._clock_ms()
            rows = self._infer_isolating(model, prepared.slots)
            end_ms = self._clock_ms()
            fields = tuple(model.output_fields)
            name, version = model.name, model.version
            return [Outcome(None, row, name, version, start_ms, end_ms, fields) if isinstance(row, DecodeError)
                    else Outcome(row, None, name, version, start_ms, end_ms, fields) for row in rows]
        outcomes: list[Outcome | None] = [slot if isinstance(slot, Outcome) else None for slot in prepared.slots]
        by_kind: dict[InputKind, list[int]] = {}
        for i, (item, slot) in enumerate(zip(prepared.items, prepared.slots, strict=True)):
            if not isinstance(slot, Outcome):
                by_kind.setdefault(item.kind, []).append(i)
        for kind, indices in by_kind.items():
            model = self.models[kind]
            start_ms = self._clock_ms()
            rows = self._infer_isolating(model, [prepared.slots[i] for i in indices])  # type: ignore[misc]
            end_ms = self._clock_ms()
            for i, row in zip(indices, rows, strict=True):
                error = row if isinstance(row, DecodeError) else None
                outputs = None if error is not None else row
                outcomes[i] = Outcome(
                    outputs, error, model.name, model.version, start_ms, end_ms, tuple(model.output_fields)
                )
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    def _infer_isolating(self, model: Model, tensors: list[torch.Tensor] | torch.Tensor) -> list[Any]:
        """One row or one ``DecodeError`` per tensor (or row of a batch tensor): failures are
        bisected down to the guilty items."""
        ceiling = self._ceilings.get(model.name)
        if ceiling is not None and len(tensors) > ceiling:
            return [row for at in range(0, len(tensors), ceiling)
                    for row in self._infer_isolating(model, tensors[at:at + ceiling])]
        try:
            return self._infer(model, tensors)
        except Exception as exc:
            if is_device_failure(exc):
                raise DeviceFailed(model.name, exc) from exc
            if is_out_of_memory(exc):
                self._release_cached_memory()
                if len(tensors) == 1:
                    return [DecodeError(Reason.MODEL_OUT_OF_MEMORY,
                                        f"model {model.name!r} ran out of memory on one item: {exc}")]
                self._ceilings[model.name] = len(tensors) // 2
                log.warning("model %s ran out of memory on a batch of %d: batches are capped at %d from now on",
                            model.name, len(tensors), len(tensors) // 2)
            elif len(tensors) == 1:
                return [self._error_for(model, exc)]
            half = len(tensors) // 2
            return self._infer_isolating(model, tensors[:half]) + self._infer_isolating(model, tensors[half:])

    def ceiling(self, model_name: str) -> int | None:
        """The largest batch this model is run with after running out of memory (None: no cap)."""
        return self._ceilings.get(model_name)

    def _release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _infer(self, model: Model, tensors: list[torch.Tensor] | torch.Tensor) -> list[dict[str, Any]]:
        accel = self.acceleration
        batch, real = self.device_batch(tensors)
        with torch.inference_mode():
            with accel.autocast(self.device):
                output = model.forward(batch)
            if output.ndim == 0 or output.shape[0] != batch.shape[0]:
                raise _OutputMismatch(
                    f"model {model.name!r} returned output of shape {tuple(output.shape)} "
                    f"for a batch of {len(tensors)}"
                )
            output = output[:real]
            if output.is_floating_point() and output.dtype != torch.float32:
                output = output.float()  # results keep fp32 numerics whatever ran inside
            rows = list(model.postprocess(output.detach().cpu()))
        if len(rows) != len(tensors):
            raise _OutputMismatch(
                f"model {model.name!r} postprocess gave {len(rows)} results for a batch of {len(tensors)}"
            )
        return rows

    def device_batch(self, tensors: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, int]:
        """The batch as the model gets it: stacked, padded to its bucket (compile), on the
        device, in the model's layout; and how many of its rows are real."""
        batch, real = self.acceleration.padded(tensors if isinstance(tensors, torch.Tensor)
                                               else self._stacked(tensors))
        if self._pin and batch.device.type == "cpu":  # a model's preprocess may hand over a CUDA tensor
            batch = (batch if batch.is_pinned() else batch.pin_memory()).to(self.device, non_blocking=True)
        return self.acceleration.layout(batch), real

    def _stacked(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The batch of ``tensors``; on CUDA, stacked straight into pinned memory (stacked,
        then pinned, a batch of 256 frames at 224 x 224 was copied twice, 154 MB more)."""
        if not self._pin or not tensors or tensors[0].device.type != "cpu":
            return torch.stack(tensors)
        first = tensors[0]
        pinned = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
        return torch.stack(tensors, out=pinned)

    @staticmethod
    def _error_for(model: Model, exc: Exception) -> DecodeError:
        if isinstance(exc, _OutputMismatch):
            return DecodeError(Reason.MODEL_OUTPUT_MISMATCH, str(exc))
        return DecodeError(Reason.MODEL_FAILED, f"model {model.name!r}: {type(exc).__name__}: {exc}")


def _timed(run: Callable[[Any], list[Outcome]], arg: Any) -> tuple[list[Outcome], float]:
    start = time.perf_counter()
    outcomes = run(arg)
    return outcomes, time.perf_counter() - start


_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


# torch raises AcceleratorError for a CUDA error (torch 2.8 on); before it, a RuntimeError
# whose message says so
_ACCELERATOR_ERROR: type[BaseException] | None = getattr(torch, "AcceleratorError", None)


def is_device_failure(exc: BaseException) -> bool:
    """A CUDA error other than running out of memory: the device's context is unusable
    from then on (every later call fails too), so no batch and no item is to blame."""
    if is_out_of_memory(exc):
        return False
    if _ACCELERATOR_ERROR is not None and isinstance(exc, _ACCELERATOR_ERROR):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error" in str(exc)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError of a failed (CPU or device) allocation."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


class _OutputMismatch(Exception):
    pass
