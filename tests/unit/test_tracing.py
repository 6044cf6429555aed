"""W3C trace context carried from input headers to results and dead letters; with
OpenTelemetry on, one span per record, child of the input's context."""

from __future__ import annotations

import asyncio
import random

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumers.testing import MemorySource
from pipeline.runner import Runner
from pipeline.tracing import HeaderTracer, OtelTracer, TraceContext, carries_trace, parse
from pipeline.worker import Worker
from producers.testing import MemorySink
from schemas.codec import DLQ_REASON
from tests.unit.test_worker_loop import CPU, DLQ, RESULTS, Scorer, eventually, run, settings, txn

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01".encode()


@pytest.mark.parametrize(("value", "valid"), [
    (TRACEPARENT, True),
    (b" " + TRACEPARENT + b" ", True),  # surrounding blanks are tolerated
    (f"00-{TRACE}-{PARENT}-00".encode(), True),  # not sampled: still propagated
    (f"cc-{TRACE}-{PARENT}-01-future-field".encode(), True),  # a later version may append fields
    (f"00-{TRACE}-{PARENT}-01-extra".encode(), False),  # version 00 may not
    (f"ff-{TRACE}-{PARENT}-01".encode(), False),  # the forbidden version
    (f"00-{'0' * 32}-{PARENT}-01".encode(), False),  # all-zero trace id
    (f"00-{TRACE}-{'0' * 16}-01".encode(), False),  # all-zero parent id
    (f"00-{TRACE.upper()}-{PARENT}-01".encode(), False),  # hex must be lowercase
    (f"00-{TRACE[:-1]}-{PARENT}-01".encode(), False),
    (b"\xff\xfe", False),
    (b"", False),
])
def test_traceparent_is_read_as_the_w3c_spec_says(value: bytes, valid: bool) -> None:
    context = parse([("content-type", b"application/msgpack"), ("Traceparent", value), ("tracestate", b"k=v")])
    assert (context is not None) == valid
    if valid:
        assert context is not None and context.trace_id == TRACE and context.parent_id == PARENT
        assert context.state == b"k=v"


def test_no_traceparent_no_context() -> None:
    assert parse([("tracestate", b"k=v")]) is None and parse([]) is None


def test_an_outcome_continues_the_trace_under_a_span_id_of_its_own() -> None:
    tracer = HeaderTracer(random.Random(7))
    first = dict(tracer.outcome_headers([("traceparent", TRACEPARENT), ("tracestate", b"vendor=1")]))
    second = dict(tracer.outcome_headers([("traceparent", TRACEPARENT)]))
    context = parse(list(first.items()))
    assert context == TraceContext(TRACE, context.parent_id, "01", b"vendor=1") if context else False
    assert context is not None and context.parent_id not in (PARENT, "0" * 16)
    assert parse(list(second.items())).parent_id != context.parent_id  # type: ignore[union-attr]
    assert "tracestate" not in second
    assert tracer.outcome_headers([]) == () and tracer.outcome_headers([("traceparent", b"junk")]) == ()


def _headers_of(records: list) -> list[dict[str, bytes]]:  # type: ignore[type-arg]
    return [dict(r.headers) for r in records]


def test_results_and_dead_letters_carry_their_input_s_trace() -> None:
    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0), headers=[("traceparent", TRACEPARENT), ("tracestate", b"vendor=1")])
        source.add(txn(1))  # no trace context
        source.add(b"\xc1 not msgpack", headers=[("traceparent", TRACEPARENT)])
        worker = Worker(settings(), Runner({"transaction": Scorer()}, CPU), source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: len(sink.sent) == 3, "three outcomes")
        stop.set()
        await task
        results = {r.value: dict(r.headers) for r in sink.on(RESULTS)}
        traced, untraced = (h for _, h in sorted(results.items(), key=lambda kv: "traceparent" not in kv[1]))
        context = parse(list(traced.items()))
        assert context is not None and context.trace_id == TRACE and context.parent_id != PARENT
        assert traced["tracestate"] == b"vendor=1" and traced["content-type"] == b"application/msgpack"
        assert "traceparent" not in untraced
        [dead] = _headers_of(sink.on(DLQ))
        dead_context = parse(list(dead.items()))
        assert dead_context is not None and dead_context.trace_id == TRACE
        assert dead[DLQ_REASON] == b"malformed_msgpack"

    run(scenario)


def test_with_opentelemetry_each_record_is_a_span_under_its_input_s_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # the worker's OtelTracer() asks the API for its tracer: hand it this provider's
    from opentelemetry import trace

    monkeypatch.setattr(trace, "get_tracer", lambda *args, **kwargs: provider.get_tracer("test"))

    async def scenario() -> None:
        source, sink = MemorySource(), MemorySink()
        source.add(txn(0), headers=[("traceparent", TRACEPARENT)])
        source.add(txn(1))  # no context: the root of a new trace
        worker = Worker(settings(tracing="otel"), Runner({"transaction": Scorer()}, CPU), source, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: len(sink.on(RESULTS)) == 2, "two results")
        stop.set()
        await task
        spans = exporter.get_finished_spans()
        assert len(spans) == 2
        child = next(s for s in spans if s.parent is not None)
        root = next(s for s in spans if s.parent is None)
        assert f"{child.context.trace_id:032x}" == TRACE and f"{child.parent.span_id:016x}" == PARENT
        assert f"{root.context.trace_id:032x}" != TRACE
        assert child.attributes["streaminfer.outcome"] == "ok" and child.attributes["streaminfer.model"] == "scorer"
        assert child.attributes["messaging.destination.name"] == "in" and child.end_time >= child.start_time
        # each result's traceparent names its span as the parent
        parents = {parse(list(dict(r.headers).items())).parent_id for r in sink.on(RESULTS)}  # type: ignore[union-attr]
        assert parents == {f"{s.context.span_id:016x}" for s in spans}

    run(scenario)


def test_otel_without_a_configured_provider_still_propagates() -> None:
    tracer = OtelTracer()  # the API's default: no-op spans, invalid contexts
    headers = dict(tracer.outcome_headers([("traceparent", TRACEPARENT)], start_ms=1, end_ms=2, attributes={}))
    context = parse(list(headers.items()))
    assert context is not None and context.trace_id == TRACE and context.parent_id != PARENT


def test_only_a_record_with_a_traceparent_header_is_looked_at_for_a_trace() -> None:
    valid = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    assert not carries_trace([])
    assert not carries_trace([("content-type", b"application/msgpack"), ("tracestate", b"x=1")])
    assert carries_trace([("content-type", b"application/msgpack"), ("TraceParent", valid)])
    assert carries_trace([("traceparent", b"garbage")])  # asked, then parse says it is no trace
    # the outcome of a record with only a content type carries no trace headers, one with a trace does
    tracer = HeaderTracer(random.Random(1))
    assert tracer.outcome_headers([("content-type", b"application/msgpack")]) == ()
    assert [name for name, _ in tracer.outcome_headers([("traceparent", valid)])] == ["traceparent"]
