"""Wire models and the msgpack/JSON codec."""

from schemas.codec import (
    JSON,
    MSGPACK,
    Limits,
    content_type_headers,
    dead_letter_from_record,
    dead_letter_headers,
    decode_input,
    decode_result,
    encode,
)
from schemas.errors import DecodeError, Reason
from schemas.models import (
    DeadLetter,
    Frame,
    FrameEncoding,
    InputKind,
    InputRef,
    Result,
    Timings,
    Transaction,
)

__all__ = [
    "JSON",
    "MSGPACK",
    "DeadLetter",
    "DecodeError",
    "Frame",
    "FrameEncoding",
    "InputKind",
    "InputRef",
    "Limits",
    "Reason",
    "Result",
    "Timings",
    "Transaction",
    "content_type_headers",
    "dead_letter_from_record",
    "dead_letter_headers",
    "decode_input",
    "decode_result",
    "encode",
]
