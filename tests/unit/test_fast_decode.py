"""The msgspec fast path reads inputs exactly as the pydantic schema does: the same inputs
accepted with the same values, the same rejected with the same reason and message."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from producers.transaction_source import iter_synthetic_transactions
from schemas.codec import Limits, decode_input, decode_inputs, encode
from schemas.errors import DecodeError, Reason
from schemas.fast_decode import read_msgpack
from schemas.images import encode_image
from schemas.models import INT64_MAX, Frame, FrameEncoding, Transaction

_MSGPACK = [("content-type", b"application/msgpack")]


def _text() -> st.SearchStrategy[Any]:
    lengths = st.sampled_from([0, 1, 2, 3, 4, 64, 65, 128, 129, 256, 257])
    return st.one_of(
        lengths.map(lambda n: "a" * n),
        lengths.map(lambda n: "é" * n),  # characters, not bytes, are counted
        st.text(max_size=5),
    )


def _ints() -> st.SearchStrategy[Any]:
    return st.sampled_from([-1, 0, 1, 7, 640, INT64_MAX, INT64_MAX + 1, -(2**63)])


def _floats() -> st.SearchStrategy[Any]:
    return st.sampled_from([0.0, -0.0, 1.5, -1.5, 71.07, 1e308, math.inf, -math.inf, math.nan])


def _anything() -> st.SearchStrategy[Any]:
    """Values of the wrong type for most fields, and some pydantic converts in lax mode."""
    return st.one_of(
        st.none(), st.booleans(), _ints(), _floats(), _text(), st.binary(max_size=4),
        st.sampled_from(["12", "1.5", "nan", "jpeg", "online", "frame", "transaction"]),
        st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    )


_TEXT_OK = {"id": st.text(min_size=1, max_size=128), "account_id": st.sampled_from(["a", "é" * 128]),
            "currency": st.sampled_from(["EUR", "ÉÜR"]), "merchant_id": st.sampled_from(["", "m" * 128]),
            "merchant_category": st.sampled_from(["", "c" * 64]), "country": st.sampled_from(["", "G", "GB"])}
_TRANSACTION = {
    **_TEXT_OK,
    "timestamp_ms": st.sampled_from([0, 1, INT64_MAX]),
    "amount": st.one_of(st.sampled_from([0, 3, 0.0, -0.0, 1e308]), st.floats(0, 1e6)),
    "channel": st.sampled_from(["card_present", "online", "atm", "transfer", ""]),
    "features": st.one_of(st.none(), st.lists(st.one_of(st.floats(-1e9, 1e9), st.integers(-5, 5)), max_size=256)),
}
_FRAME = {
    "stream_id": st.sampled_from(["s", "é" * 256]), "seq": st.sampled_from([0, INT64_MAX]),
    "captured_at_ms": st.sampled_from([0, 1_800_000_000_000]),
    "encoding": st.just("raw"), "channels": st.sampled_from([1, 3]),
    # width x height x channels must match the raw bytes: drawn together below
    "width": st.just(1), "height": st.just(1), "data": st.just(b""),
}
_EDGES = {  # values of the wrong type or out of range, and ones pydantic converts in lax mode
    "text": _text(), "int": _ints(), "float": _floats(), "any": _anything(),
    "not finite": st.sampled_from([math.inf, math.nan, [1.0, math.inf], [math.nan]]),
}


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed event, then none, one or two of its fields broken, dropped or added."""
    kind = draw(st.sampled_from(["transaction", "frame"]))
    fields = _FRAME if kind == "frame" else _TRANSACTION
    event: dict[str, Any] = {"kind": kind, **{name: draw(strategy) for name, strategy in fields.items()}}
    if kind == "frame":
        event["width"], event["height"] = draw(st.sampled_from([(1, 1), (2, 3), (640, 480)]))
        event["data"] = b"\x07" * (event["width"] * event["height"] * event["channels"])
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        action = draw(st.sampled_from(["break", "break", "break", "drop", "extra"]))
        name = draw(st.sampled_from(["kind", *fields]))
        if action == "drop":
            event.pop(name, None)
        elif action == "extra":
            event["extra"] = draw(_anything())
        else:
            event[name] = draw(st.one_of(*_EDGES.values()))
    return event


_ACCEPTED: Counter[str] = Counter()


def _same_reading(value: bytes) -> None:
    slow = decode_input(value, _MSGPACK, fast=False)
    _same(decode_input(value, _MSGPACK, fast=True), slow)
    # the worker's loop over a poll's records reads them as one at a time does, headers or none
    [in_loop, bare] = decode_inputs([_Record(value, _MSGPACK), _Record(value, ())])
    _same(in_loop, slow)
    _same(bare, slow)
    _ACCEPTED[type(slow).__name__] += not isinstance(slow, DecodeError)


@dataclass
class _Record:
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _same(fast: Frame | Transaction | DecodeError, slow: Frame | Transaction | DecodeError) -> None:
    if isinstance(slow, DecodeError):
        assert isinstance(fast, DecodeError), f"fast path accepted what the schema rejects: {slow}"
        assert (fast.reason, fast.message) == (slow.reason, slow.message)
        return
    assert not isinstance(fast, DecodeError), fast
    assert type(fast) is type(slow)
    assert fast == slow
    assert encode(fast) == encode(slow)
    assert {k: type(v) for k, v in fast.__dict__.items()} == {k: type(v) for k, v in slow.__dict__.items()}
    assert list(fast.__dict__) == list(slow.__dict__)  # the schema's order: a dump reads the same
    assert (fast.key, fast.event_time_ms) == (slow.key, slow.event_time_ms)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_event(), st.booleans())
def test_fast_and_schema_readers_agree_on_generated_inputs(event: dict[str, Any], bin_type: bool) -> None:
    # use_bin_type=False writes bytes as msgpack str: a reader must not mistake one for the other
    try:
        value = msgpack.packb(event, use_bin_type=bin_type)
    except (ValueError, OverflowError):  # an int msgpack cannot hold
        return
    _same_reading(value)


def test_the_generated_inputs_include_accepted_ones_of_each_kind() -> None:
    # the property again, counted: the comparison was not only of rejections
    _ACCEPTED.clear()
    test_fast_and_schema_readers_agree_on_generated_inputs()
    assert _ACCEPTED["Frame"] >= 5 and _ACCEPTED["Transaction"] >= 5, _ACCEPTED


def test_well_formed_inputs_take_the_fast_path() -> None:
    image = encode_image(np.zeros((48, 64, 3), np.uint8), FrameEncoding.JPEG)
    frame = Frame(stream_id="cam-1", seq=3, captured_at_ms=5, encoding=FrameEncoding.JPEG,
                  width=64, height=48, data=image)
    events: list[Frame | Transaction] = [*iter_synthetic_transactions(50), frame,
                                         Transaction(id="t", account_id="a", timestamp_ms=1, amount=2.5,
                                                     currency="EUR", features=[0.5, -1.0])]
    for event in events:
        value = encode(event)
        read = read_msgpack(value)
        assert read is not None, event  # msgspec took it, pydantic never saw it
        assert read == event and encode(read) == value
        _same_reading(value)


def test_models_read_fast_share_nothing_a_copy_can_change() -> None:
    # the fast path gives every model of a class one set of fields set: a copy with an
    # update must not change what another model says was set
    first, second = (read_msgpack(encode(event)) for event in iter_synthetic_transactions(2))
    assert isinstance(first, Transaction) and isinstance(second, Transaction)
    with pytest.raises(ValidationError):
        first.amount = 1.0  # type: ignore[misc]  # frozen: pydantic never adds to the set
    changed = first.model_copy(update={"amount": 1.0})
    assert changed.amount == 1.0 and first.amount != 1.0
    assert second.model_fields_set == set(Transaction.model_fields)
    assert first.model_dump(exclude_unset=True) == first.model_dump()


def test_inputs_the_schema_converts_are_left_to_the_schema() -> None:
    # pydantic's lax mode takes a numeric string for an int; msgspec (strict) does not, so
    # such an input is read by pydantic, and read the same as before the fast path
    event = {"kind": "frame", "stream_id": "s", "seq": "12", "captured_at_ms": 1, "encoding": "raw",
             "width": 1, "height": 1, "channels": 1, "data": b"\x00"}
    value = msgpack.packb(event, use_bin_type=True)
    assert read_msgpack(value) is None
    read = decode_input(value, _MSGPACK)
    assert isinstance(read, Frame) and read.seq == 12


def test_non_finite_floats_are_rejected_on_either_path() -> None:
    for amount, features in ((math.inf, None), (math.nan, None), (1.0, [0.0, math.nan])):
        value = msgpack.packb({"kind": "transaction", "id": "t", "account_id": "a", "timestamp_ms": 1,
                               "amount": amount, "currency": "EUR", "features": features})
        assert read_msgpack(value) is None
        assert isinstance(decode_input(value, _MSGPACK), DecodeError)


def test_a_poll_of_mixed_records_reads_as_each_record_alone() -> None:
    # decode_inputs reads the usual record (a msgpack transaction, a content type at most)
    # in its loop: every other record, whatever its headers, must read as decode_input reads it
    transaction = encode(next(iter(iter_synthetic_transactions(1))))
    image = encode_image(np.zeros((8, 8, 3), np.uint8), FrameEncoding.JPEG)
    frame = encode(Frame(stream_id="cam", seq=1, captured_at_ms=5, encoding=FrameEncoding.JPEG, width=8, height=8,
                         data=image))
    as_json = encode(next(iter(iter_synthetic_transactions(1))), "application/json")
    non_finite = msgpack.packb({"kind": "transaction", "id": "t", "account_id": "a", "timestamp_ms": 1,
                                "amount": math.nan, "currency": "EUR"})
    traced = (("content-type", b"application/msgpack"), ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"))
    records = [
        _Record(transaction, ()), _Record(transaction, _MSGPACK), _Record(transaction, traced),
        _Record(transaction, (("Content-Type", b"application/x-msgpack; charset=binary"),)),
        _Record(transaction, (("content-type", b"application/json"),)),
        _Record(transaction, (("content-type", b"text/plain"),)),
        _Record(as_json, (("content-type", b"application/json"),)), _Record(frame, _MSGPACK), _Record(frame, ()),
        _Record(non_finite, ()), _Record(b"", ()), _Record(None, ()), _Record(b"\xc1", ()),
        _Record(transaction + b"\x00", ()), _Record(b"x" * (len(frame) + 1), ()),
    ]
    limits = Limits(max_payload_bytes=len(frame))  # the last record is over it, no other is
    alone = [decode_input(r.value, r.headers, limits, fast=False) for r in records]
    read = decode_inputs(records, limits)
    assert len(read) == len(records)
    for got, expected in zip(read, alone, strict=True):
        _same(got, expected)
    kinds = [type(e).__name__ if not isinstance(e, DecodeError) else e.reason for e in read]
    assert kinds[:5] == ["Transaction"] * 4 + [Reason.NOT_JSON], kinds
    assert kinds[5] == Reason.UNSUPPORTED_CONTENT_TYPE and kinds[6:9] == ["Transaction", "Frame", "Frame"], kinds
    assert all(isinstance(e, DecodeError) for e in read[9:]), kinds
