"""The hot path of input decoding: msgspec structs that mirror the pydantic wire models.

The pydantic models in ``schemas.models`` stay the documented schema and the judge of
every input. msgspec here is only a strict, faster first reader: it takes an input when it
is exactly well formed (the right types, no conversions, every constraint of the schema),
and the model is then built without validating it a second time. Anything msgspec does not
take (a type pydantic converts in lax mode, a broken or hostile input) goes to pydantic,
which accepts it or says why not, so errors read the same as before.

msgspec must therefore never accept what pydantic rejects, nor read a value differently:
``tests/unit/test_fast_decode.py`` holds the two readers together on generated inputs.
"""

from __future__ import annotations

from math import isfinite
from typing import Annotated, Any, Literal

import msgspec

from schemas.models import INT64_MAX, Frame, FrameEncoding, Transaction

_Meta = msgspec.Meta
_Int64 = Annotated[int, _Meta(ge=0, le=INT64_MAX)]


def _text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[str, _Meta(min_length=min_length, max_length=max_length)]


# ``kind`` is a field of its own, first as in the schema (not a tag): ``asdict`` is then the
# model's ``__dict__`` as it is, in the schema's order, and no second dict is built to add it
class _TransactionWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    kind: Literal["transaction"]
    id: _text(128, 1)  # type: ignore[valid-type]
    account_id: _text(128, 1)  # type: ignore[valid-type]
    timestamp_ms: _Int64
    amount: Annotated[float, _Meta(ge=0)]
    currency: _text(3, 3)  # type: ignore[valid-type]
    merchant_id: _text(128) = ""  # type: ignore[valid-type]
    merchant_category: _text(64) = ""  # type: ignore[valid-type]
    country: _text(2) = ""  # type: ignore[valid-type]
    channel: Literal["card_present", "online", "atm", "transfer", ""] = ""
    features: Annotated[list[float], _Meta(max_length=256)] | None = None


# kw_only: a field without a default may follow one with (channels); the order stays the schema's
class _FrameWire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    kind: Literal["frame"]
    stream_id: _text(256, 1)  # type: ignore[valid-type]
    seq: _Int64
    captured_at_ms: _Int64
    encoding: FrameEncoding
    width: Annotated[int, _Meta(gt=0)]
    height: Annotated[int, _Meta(gt=0)]
    channels: Literal[1, 3] = 3
    data: bytes


# one decoder a kind, transactions first: the many small inputs are read in one try, and a
# frame's first key (``kind``) already fails the transaction reader
_DECODERS = (msgspec.msgpack.Decoder(_TransactionWire).decode, msgspec.msgpack.Decoder(_FrameWire).decode)
_REFUSED = (msgspec.ValidationError, msgspec.DecodeError)


def read_msgpack(value: bytes) -> Frame | Transaction | None:
    """The input as its pydantic model when msgspec takes it as exactly well formed; None
    when pydantic must judge it."""
    if (transaction := read_transaction(value)) is not None:
        return transaction
    try:
        frame: _FrameWire = _DECODERS[1](value)
    except _REFUSED:
        return None
    return _trusted(Frame, _asdict(frame))


def read_transaction(value: bytes) -> Transaction | None:
    """``read_msgpack`` for a transaction, the model built here (None: anything else). The
    worker asks this of every record first (``schemas.codec.decode_inputs``): each call on
    the way costs about as much as building the model."""
    try:
        wire: _TransactionWire = _DECODERS[0](value)
    except _REFUSED:
        return None
    # msgspec has no allow_inf_nan: a non-finite float is pydantic's to refuse
    if not isfinite(wire.amount) or (wire.features is not None and not all(map(isfinite, wire.features))):
        return None
    model = _new(Transaction)  # ``_trusted``, inline
    _set(model, "__dict__", _asdict(wire))
    _set(model, "__pydantic_fields_set__", _TRANSACTION_SET)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


_asdict = msgspec.structs.asdict
_new = object.__new__
_set = object.__setattr__
# every field is set (msgspec filled in the defaults), so one set serves every model of a
# class: the models are frozen, so pydantic never adds to it (``model_copy`` copies it
# first), and building a set of eleven names per input took longer than msgspec's decode
_ALL_SET = {cls: set(cls.model_fields) for cls in (Frame, Transaction)}
_TRANSACTION_SET = _ALL_SET[Transaction]


def _trusted(cls: type[Frame] | type[Transaction], values: dict[str, Any]) -> Any:
    """``cls`` holding the values msgspec validated, without pydantic validating them again
    (pydantic's own ``model_construct`` costs more than the whole msgspec decode)."""
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", _ALL_SET[cls])
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
