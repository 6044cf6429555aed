"""msgpack (default) and JSON codec for the wire models.

``decode_input`` is total: it returns a ``Frame``/``Transaction`` or a ``DecodeError``
and never raises. Size limits are checked on the raw bytes and on the declared and
encoded image dimensions *before* any pixel buffer is allocated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import msgspec
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.errors import DecodeError, Reason
from schemas.fast_decode import read_msgpack, read_transaction
from schemas.images import encoded_dimensions
from schemas.models import DeadLetter, Frame, FrameEncoding, InputEvent, Result, Transaction

CONTENT_TYPE_HEADER = "content-type"
MSGPACK = "application/msgpack"
JSON = "application/json"
_MSGPACK_ALIASES = {MSGPACK, "application/x-msgpack", "application/vnd.msgpack"}

_INPUT = TypeAdapter(InputEvent)

Headers = Iterable[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 8 * 1024 * 1024
    # width * height * channels of one frame, i.e. the bytes of its decoded uint8 buffer
    max_frame_elements: int = 3840 * 2160 * 3


_MEDIA_TYPES: dict[bytes, str] = {}  # a content-type header's value -> its media type, as met
_MEDIA_TYPES_KEPT = 64


def content_type_of(headers: Headers | None) -> str:
    for name, value in headers or ():
        if name == CONTENT_TYPE_HEADER or name.lower() == CONTENT_TYPE_HEADER:  # the usual spelling first
            media_type = _MEDIA_TYPES.get(value)
            if media_type is None:  # asked of every record, and a topic's records mostly say the same
                media_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
                if len(_MEDIA_TYPES) >= _MEDIA_TYPES_KEPT:  # the values are the producers': keep a few
                    _MEDIA_TYPES.clear()
                _MEDIA_TYPES[value] = media_type
            return media_type
    return MSGPACK


def decode_input(
    value: bytes | None, headers: Headers | None = None, limits: Limits = Limits(), *, fast: bool = True
) -> Frame | Transaction | DecodeError:
    """``fast``: well-formed msgpack is read by msgspec (``schemas.fast_decode``) and only the
    rest by pydantic; False reads everything with pydantic (what the fast path is tested against)."""
    if not value:
        return DecodeError(Reason.EMPTY, "message value is empty")
    if len(value) > limits.max_payload_bytes:
        return DecodeError(
            Reason.TOO_LARGE,
            f"payload is {len(value)} bytes, limit is {limits.max_payload_bytes}",
        )
    content_type = content_type_of(headers)
    try:
        if content_type in _MSGPACK_ALIASES:
            if fast and (event := read_msgpack(value)) is not None:
                return check_frame(event, limits) if isinstance(event, Frame) else event
            try:
                obj = msgpack.unpackb(value, raw=False, strict_map_key=True)
            except Exception as exc:  # msgpack raises several unrelated types
                return DecodeError(Reason.NOT_MSGPACK, f"not valid msgpack ({type(exc).__name__}: {exc})")
            if not isinstance(obj, dict):
                return DecodeError(
                    Reason.INVALID_SCHEMA, f"expected a map, got {type(obj).__name__}"
                )
            event = _INPUT.validate_python(obj)
        elif content_type == JSON:
            event = _INPUT.validate_json(value)
        else:
            return DecodeError(
                Reason.UNSUPPORTED_CONTENT_TYPE,
                f"content-type {content_type!r}; use {MSGPACK} or {JSON}",
            )
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            return DecodeError(Reason.NOT_JSON, f"not valid JSON: {exc.errors()[0]['msg']}")
        return DecodeError(Reason.INVALID_SCHEMA, _summarise(exc))
    if isinstance(event, Frame):
        return check_frame(event, limits)
    return event


class Encoded(Protocol):
    """What ``decode_inputs`` reads of a record: its value and headers."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def decode_inputs(records: Sequence[Encoded], limits: Limits = Limits()) -> list[Frame | Transaction | DecodeError]:
    """``decode_input`` of each record's value and headers, in order, with one call a record
    for the many: a msgpack transaction under the limit whose only header, if any, is its
    content type (``read_transaction``). Every other record, or one that does not read as
    a well-formed transaction, goes through ``decode_input``."""
    max_bytes, media_types, aliases = limits.max_payload_bytes, _MEDIA_TYPES, _MSGPACK_ALIASES
    events: list[Frame | Transaction | DecodeError] = []
    append = events.append
    for record in records:
        value, headers = record.value, record.headers
        if value and len(value) <= max_bytes and (
            not headers or (len(headers) == 1 and headers[0][0] == CONTENT_TYPE_HEADER
                            and media_types.get(headers[0][1]) in aliases)
        ) and (event := read_transaction(value)) is not None:
            append(event)
        else:
            append(decode_input(value, headers, limits))
    return events


def check_frame(frame: Frame, limits: Limits) -> Frame | DecodeError:
    elements = frame.width * frame.height * frame.channels
    if elements > limits.max_frame_elements:
        return DecodeError(
            Reason.FRAME_TOO_LARGE,
            f"{frame.width}x{frame.height}x{frame.channels} = {elements} elements, "
            f"limit is {limits.max_frame_elements}",
        )
    if frame.encoding is FrameEncoding.RAW:
        if len(frame.data) != elements:
            return DecodeError(
                Reason.FRAME_SIZE_MISMATCH,
                f"raw frame has {len(frame.data)} bytes, declared {elements}",
            )
        return frame
    dims = encoded_dimensions(frame.data, frame.encoding)
    if dims is None:
        return DecodeError(Reason.BAD_IMAGE, f"data is not a readable {frame.encoding} header")
    width, height = dims
    if (width, height) != (frame.width, frame.height):
        return DecodeError(
            Reason.FRAME_SIZE_MISMATCH,
            f"{frame.encoding} is {width}x{height}, declared {frame.width}x{frame.height}",
        )
    return frame


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def encode(model: BaseModel, content_type: str = MSGPACK) -> bytes:
    if content_type == JSON:
        return model.model_dump_json().encode()
    return packb(model.model_dump(mode="python"))


_ENCODER = msgspec.msgpack.Encoder()


def packb(value: Any) -> bytes:
    """The msgpack bytes of ``value``, as ``msgpack.packb(value, use_bin_type=True)`` writes
    them, at a third of its cost (0.45 against 1.28 us for a result): msgspec writes them,
    and what it does not take (numpy scalars, subclasses of int) goes to msgpack-python,
    which takes it or raises as before. The one difference: msgspec also writes a set (as
    an array), which msgpack-python refuses."""
    try:
        return _ENCODER.encode(value)
    except TypeError:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


# The wire form of a ``Result`` in msgpack, for ``result_msgpack`` and ``Outcomes.results``:
# a struct is written as a map of its fields in order, the same bytes as the model's dump,
# at half the cost of building and writing the dicts (0.53 against 1.03 us a result).
# gc=False: made per result, never in a cycle.
class InputRefWire(msgspec.Struct, gc=False):
    topic: str
    partition: int
    offset: int


class TimingsWire(msgspec.Struct, gc=False):
    event_ms: int
    received_ms: int
    batch_closed_ms: int
    inference_start_ms: int
    inference_end_ms: int
    produced_ms: int


class ResultWire(msgspec.Struct, gc=False):
    key: str | None
    kind: str
    input: InputRefWire
    event_id: str
    model_name: str
    model_version: str
    outputs: dict[str, Any]
    timings: TimingsWire
    batch_size: int
    worker_id: str
    status: str


def result_msgpack(
    *,
    key: str | None,
    kind: str,
    topic: str,
    partition: int,
    offset: int,
    event_id: str,
    model_name: str,
    model_version: str,
    outputs: dict[str, Any],
    timings: tuple[int, int, int, int, int, int],
    batch_size: int,
    worker_id: str,
    status: str = "ok",
) -> bytes:
    """The msgpack bytes of a ``Result``, built without a pydantic object: the hot path of a
    worker answering small messages. The same bytes as ``encode(Result(...))`` (a test holds
    the two together); the fields are the worker's own values, so nothing is validated.
    What msgspec does not take in ``outputs`` (numpy scalars, subclasses of int) goes to
    msgpack-python, as in ``packb``."""
    try:
        return _ENCODER.encode(ResultWire(
            key, kind, InputRefWire(topic, partition, offset), event_id, model_name, model_version, outputs,
            TimingsWire(*timings), batch_size, worker_id, status,
        ))
    except TypeError:
        event_ms, received_ms, batch_closed_ms, inference_start_ms, inference_end_ms, produced_ms = timings
        return msgpack.packb({  # type: ignore[no-any-return]
            "key": key, "kind": kind, "input": {"topic": topic, "partition": partition, "offset": offset},
            "event_id": event_id, "model_name": model_name, "model_version": model_version, "outputs": outputs,
            "timings": {"event_ms": event_ms, "received_ms": received_ms, "batch_closed_ms": batch_closed_ms,
                        "inference_start_ms": inference_start_ms, "inference_end_ms": inference_end_ms,
                        "produced_ms": produced_ms},
            "batch_size": batch_size, "worker_id": worker_id, "status": status,
        }, use_bin_type=True)


def content_type_headers(content_type: str = MSGPACK) -> list[tuple[str, bytes]]:
    return [(CONTENT_TYPE_HEADER, content_type.encode())]


def decode_result(value: bytes, headers: Headers | None = None) -> Result:
    if content_type_of(headers) == JSON:
        return Result.model_validate_json(value)
    return Result.model_validate(msgpack.unpackb(value, raw=False))


def result_to_json(result: Result) -> str:
    return result.model_dump_json()


# Dead letters keep the original bytes as the record value so they can be replayed as-is;
# what went wrong travels in headers.
DLQ_REASON = "streaminfer-reason"
DLQ_MESSAGE = "streaminfer-error"
DLQ_TOPIC = "streaminfer-source-topic"
DLQ_PARTITION = "streaminfer-source-partition"
DLQ_OFFSET = "streaminfer-source-offset"
DLQ_WORKER = "streaminfer-worker-id"
DLQ_ORIGINAL_SIZE = "streaminfer-original-size"
DLQ_ORIGINAL_SHA256 = "streaminfer-original-sha256"
DLQ_TRUNCATED = "streaminfer-truncated"
_DLQ_MESSAGE_MAX_BYTES = 4096


def dead_letter_headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    headers = [
        (DLQ_REASON, dl.reason.encode()),
        (DLQ_MESSAGE, dl.message.encode("utf-8", "replace")[:_DLQ_MESSAGE_MAX_BYTES]),
        (DLQ_TOPIC, dl.input.topic.encode()),
        (DLQ_PARTITION, str(dl.input.partition).encode()),
        (DLQ_OFFSET, str(dl.input.offset).encode()),
        (DLQ_WORKER, dl.worker_id.encode()),
    ]
    if dl.original_size is not None:
        headers.append((DLQ_ORIGINAL_SIZE, str(dl.original_size).encode()))
    if dl.original_sha256 is not None:
        headers.append((DLQ_ORIGINAL_SHA256, dl.original_sha256.encode()))
    if dl.truncated:
        headers.append((DLQ_TRUNCATED, b"true"))
    return headers


def dead_letter_from_record(
    value: bytes | None, key: bytes | None, headers: Headers
) -> DeadLetter:
    h: dict[str, Any] = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    return DeadLetter(
        original=value or b"",
        reason=h.get(DLQ_REASON, ""),
        message=h.get(DLQ_MESSAGE, ""),
        input={
            "topic": h.get(DLQ_TOPIC, ""),
            "partition": int(h.get(DLQ_PARTITION, -1)),
            "offset": int(h.get(DLQ_OFFSET, -1)),
        },
        key=key,
        worker_id=h.get(DLQ_WORKER, ""),
        original_size=int(h[DLQ_ORIGINAL_SIZE]) if DLQ_ORIGINAL_SIZE in h else None,
        original_sha256=h.get(DLQ_ORIGINAL_SHA256),
        truncated=h.get(DLQ_TRUNCATED) == "true",
    )
