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


class _TransactionWire(msgspec.Struct, tag_field="kind", tag="transaction", forbid_unknown_fields=True):
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


# kw_only: the fields keep the schema's order (a model's dump follows the order it holds them in)
class _FrameWire(msgspec.Struct, tag_field="kind", tag="frame", forbid_unknown_fields=True, kw_only=True):
    stream_id: _text(256, 1)  # type: ignore[valid-type]
    seq: _Int64
    captured_at_ms: _Int64
    encoding: FrameEncoding
    width: Annotated[int, _Meta(gt=0)]
    height: Annotated[int, _Meta(gt=0)]
    channels: Literal[1, 3] = 3
    data: bytes


_DECODER = msgspec.msgpack.Decoder(_TransactionWire | _FrameWire)
def read_msgpack(value: bytes) -> Frame | Transaction | None:
    """The input as its pydantic model when msgspec takes it as exactly well formed; None
    when pydantic must judge it."""
    try:
        wire = _DECODER.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if isinstance(wire, _TransactionWire):
        # msgspec has no allow_inf_nan: a non-finite float is pydantic's to refuse
        if not isfinite(wire.amount) or (wire.features is not None and not all(map(isfinite, wire.features))):
            return None
        return _trusted(Transaction, {"kind": "transaction", **_asdict(wire)})
    return _trusted(Frame, {"kind": "frame", **_asdict(wire)})


_asdict = msgspec.structs.asdict
_new = object.__new__
_set = object.__setattr__


def _trusted(cls: type[Frame] | type[Transaction], values: dict[str, Any]) -> Any:
    """``cls`` holding the values msgspec validated, without pydantic validating them again
    (pydantic's own ``model_construct`` costs more than the whole msgspec decode)."""
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
