"""W3C trace context from input to outcome (https://www.w3.org/TR/trace-context/).

An input record that carries a ``traceparent`` header (and ``tracestate``) gets results
and dead letters that carry the same trace: the same trace id and flags, and as parent a
span id of the worker's own, so a trace viewer shows the inference as one hop of the
message's path. A missing or malformed ``traceparent`` is not an error of the record: its
outcome simply carries none (the W3C rule is to restart the trace, and there is no one
here to restart it for, unless OpenTelemetry is on).

``HeaderTracer`` (the default) only propagates: a fresh random span id per outcome, no
spans recorded. ``OtelTracer`` (``--tracing otel``, needs the ``otel`` extra) records one
span per record through the OpenTelemetry API, from received to produced, child of the
input's context (or the root of a new trace), with the model, batch size and outcome as
attributes; its span id is the outcome's parent id. Spans go wherever the process's
tracer provider sends them (configure the SDK, e.g. ``opentelemetry-instrument``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version 00, or a later version's first four fields (it may append more after a '-')
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lowercase hex
    parent_id: str  # 16 lowercase hex
    flags: str  # 2 lowercase hex; 01 = sampled
    state: bytes | None = None  # tracestate, passed on unchanged

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


def parse(headers: Sequence[tuple[str, bytes]]) -> TraceContext | None:
    """The record's trace context, or None when it has no valid ``traceparent``."""
    parent = state = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == TRACEPARENT:
            parent = value
        elif lowered == TRACESTATE:
            state = value
    if parent is None:
        return None
    try:
        text = parent.decode("ascii").strip()
    except (UnicodeDecodeError, AttributeError):
        return None
    match = _TRACEPARENT.fullmatch(text)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, flags, state)


def carries_trace(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether ``headers`` hold a ``traceparent`` at all (valid or not): the cheap question
    asked of every record, most of which carry only a content type."""
    for name, _ in headers:
        if len(name) == len(TRACEPARENT) and name.lower() == TRACEPARENT:
            return True
    return False


def child_headers(context: TraceContext, span_id: str) -> Headers:
    """``traceparent`` (and ``tracestate``) of an outcome whose parent is span ``span_id``."""
    headers: Headers = ((TRACEPARENT, f"00-{context.trace_id}-{span_id}-{context.flags}".encode()),)
    return (*headers, (TRACESTATE, context.state)) if context.state else headers


class HeaderTracer:
    """Propagation only: the input's trace, a new random span id per outcome."""

    records_spans = False

    def __init__(self, rng: random.Random | None = None) -> None:
        self._bits = (rng or random.Random()).getrandbits

    def outcome_headers(self, headers: Sequence[tuple[str, bytes]], **_: Any) -> Headers:
        if not headers:  # the usual record: nothing to carry
            return ()
        context = parse(headers)
        if context is None:
            return ()
        return child_headers(context, f"{self._bits(64) or 1:016x}")


class OtelTracer:
    """One OpenTelemetry span per record; its span id is the parent in the outcome's headers."""

    records_spans = True

    def __init__(self, tracer: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer or trace.get_tracer("streaminfer")
        self._fallback = HeaderTracer()

    def outcome_headers(self, headers: Sequence[tuple[str, bytes]], *, name: str = "streaminfer process",
                        start_ms: int = 0, end_ms: int = 0, attributes: dict[str, Any] | None = None) -> Headers:
        trace = self._trace
        context = parse(headers) if headers else None
        parent = None
        if context is not None:
            remote = trace.SpanContext(int(context.trace_id, 16), int(context.parent_id, 16), is_remote=True,
                                       trace_flags=trace.TraceFlags(int(context.flags, 16)))
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context=parent, kind=trace.SpanKind.CONSUMER,
                                       start_time=start_ms * 1_000_000 or None, attributes=attributes)
        recording = span.is_recording()  # False: no tracer provider configured, the API's no-op spans
        span.end(end_time=end_ms * 1_000_000 or None)
        if not recording:
            return self._fallback.outcome_headers(headers)
        made = span.get_span_context()
        own = TraceContext(f"{made.trace_id:032x}", f"{made.span_id:016x}", f"{int(made.trace_flags):02x}",
                           context.state if context else None)
        return child_headers(own, own.parent_id)
