from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from schemas import (
    JSON,
    MSGPACK,
    DeadLetter,
    DecodeError,
    Frame,
    FrameEncoding,
    InputRef,
    Limits,
    Reason,
    Result,
    Timings,
    Transaction,
    content_type_headers,
    dead_letter_from_record,
    dead_letter_headers,
    decode_input,
    decode_result,
    encode,
)
from schemas.codec import packb, result_msgpack
from schemas.images import decode_pixels, encode_image, encoded_dimensions


def make_image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def make_frame(encoding: FrameEncoding = FrameEncoding.JPEG, h: int = 48, w: int = 64) -> Frame:
    return Frame(
        stream_id="cam-1", seq=3, captured_at_ms=1_700_000_000_000, encoding=encoding,
        width=w, height=h, data=encode_image(make_image(h, w), encoding),
    )


def make_tx() -> Transaction:
    return Transaction(
        id="t-1", account_id="acct-1", timestamp_ms=1_700_000_000_000, amount=12.5, currency="EUR",
        merchant_id="m-9", merchant_category="grocery", country="DE", channel="online",
        features=[0.5, -1.0],
    )


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
@pytest.mark.parametrize("event", [make_tx(), make_frame(FrameEncoding.JPEG),
                                   make_frame(FrameEncoding.PNG), make_frame(FrameEncoding.RAW)])
def test_inputs_round_trip_in_both_wire_formats(event: Frame | Transaction, content_type: str) -> None:
    decoded = decode_input(encode(event, content_type), content_type_headers(content_type))
    assert decoded == event


def test_json_without_content_type_header_is_read_as_msgpack_and_rejected() -> None:
    raw = encode(make_tx(), JSON)
    err = decode_input(raw, None)
    assert isinstance(err, DecodeError) and err.reason is Reason.NOT_MSGPACK


def test_result_round_trips() -> None:
    result = Result(
        key="acct-1", kind="transaction", input=InputRef(topic="t", partition=1, offset=9),
        event_id="t-1", model_name="m", model_version="1", outputs={"score": 0.25},
        timings=Timings(event_ms=1, received_ms=2, batch_closed_ms=3, inference_start_ms=4,
                        inference_end_ms=5, produced_ms=6),
        batch_size=8, worker_id="w",
    )
    for ct in (MSGPACK, JSON):
        assert decode_result(encode(result, ct), content_type_headers(ct)) == result


@pytest.mark.parametrize("key, kind, outputs, status", [
    ("acct-1", "transaction", {"score": 0.25, "label": "ok"}, "ok"),
    (None, "frame", {"labels": [{"label": "tabby", "score": 0.5}], "top": [1, 2.5, None]}, "ok"),
    ("cam", "frame", {"age_ms": 1200, "max_frame_age_ms": 1000}, "skipped_stale"),
    ("acct-2", "transaction", {"score": np.float64(0.25)}, "ok"),  # msgspec refuses it: msgpack-python writes it
])
def test_the_hot_path_result_bytes_are_the_schema_s_bytes(
    key: str | None, kind: str, outputs: dict[str, object], status: str
) -> None:
    """``result_msgpack`` (no pydantic object) writes what ``encode(Result(...))`` writes."""
    fields = dict(key=key, kind=kind, event_id="e-1", model_name="m", model_version="1", outputs=outputs,
                  batch_size=8, worker_id="w", status=status)
    result = Result(**fields, input=InputRef(topic="t", partition=1, offset=2**40),  # type: ignore[arg-type]
                    timings=Timings(event_ms=1, received_ms=2, batch_closed_ms=3, inference_start_ms=4,
                                    inference_end_ms=5, produced_ms=6))
    fast = result_msgpack(**fields, topic="t", partition=1, offset=2**40, timings=(1, 2, 3, 4, 5, 6))  # type: ignore[arg-type]
    assert fast == encode(result)
    assert decode_result(fast) == result


class _Count(int):
    pass


@pytest.mark.parametrize("value", [
    {"score": 0.25, "label": "ok", "n": -3, "big": 2**64 - 1, "small": -2**63, "flag": True, "none": None},
    {"labels": [{"label": "x" * 40, "score": 1e-300}], "pair": (1, 2.5), "blob": b"\x00\x01", 7: "int key"},
    {"text": "y" * 70_000, "nested": [[[[]]]], "inf": float("inf")},
    {"numpy": np.float64(0.5), "count": _Count(3)},  # msgspec refuses them: msgpack-python writes them
])
def test_packb_writes_what_msgpack_python_writes(value: dict[object, object]) -> None:
    assert packb(value) == msgpack.packb(value, use_bin_type=True)


def test_packb_also_writes_a_set_which_msgpack_python_refuses() -> None:
    assert packb({"ids": {3}}) == msgpack.packb({"ids": [3]}, use_bin_type=True)


@pytest.mark.parametrize("value", [{"score": 2**64}, {"score": -2**63 - 1}, {"f": lambda: 0}, {"n": np.int64(9)}])
def test_packb_refuses_what_msgpack_cannot_hold(value: dict[str, object]) -> None:
    with pytest.raises((OverflowError, TypeError)):
        packb(value)


def test_dead_letter_survives_its_header_encoding() -> None:
    dl = DeadLetter(original=b"\x00junk", reason=Reason.NOT_MSGPACK, message="bad",
                    input=InputRef(topic="in", partition=2, offset=41), key=b"k", worker_id="w1")
    assert dead_letter_from_record(dl.original, dl.key, dead_letter_headers(dl)) == dl


DEFAULT_LIMITS = Limits()


def _reason(value: bytes | None, headers=None, limits: Limits = DEFAULT_LIMITS) -> Reason:  # type: ignore[no-untyped-def]
    result = decode_input(value, headers, limits)
    assert isinstance(result, DecodeError), f"expected a rejection, got {result!r}"
    assert result.message
    return result.reason


def test_empty_payload_is_rejected() -> None:
    assert _reason(b"") is Reason.EMPTY
    assert _reason(None) is Reason.EMPTY


def test_oversized_payload_is_rejected_before_parsing() -> None:
    assert _reason(b"\x00" * 101, limits=Limits(max_payload_bytes=100)) is Reason.TOO_LARGE


def test_unknown_content_type_is_rejected() -> None:
    assert _reason(b"x", [("content-type", b"text/csv")]) is Reason.UNSUPPORTED_CONTENT_TYPE


def test_random_bytes_are_malformed_msgpack() -> None:
    assert _reason(b"\xc1\xc1\xc1") is Reason.NOT_MSGPACK


def test_truncated_msgpack_is_malformed() -> None:
    assert _reason(encode(make_tx())[:-3]) is Reason.NOT_MSGPACK


def test_broken_json_is_malformed_json() -> None:
    assert _reason(b'{"kind": "transaction", ', content_type_headers(JSON)) is Reason.NOT_JSON


def test_msgpack_that_is_not_a_map_is_a_schema_error() -> None:
    assert _reason(msgpack.packb([1, 2, 3])) is Reason.INVALID_SCHEMA


def test_json_with_missing_fields_names_them() -> None:
    raw = json.dumps({"kind": "transaction", "id": "t"}).encode()
    err = decode_input(raw, content_type_headers(JSON))
    assert isinstance(err, DecodeError) and err.reason is Reason.INVALID_SCHEMA
    assert "account_id" in err.message and "amount" in err.message


def test_unknown_kind_and_extra_fields_are_schema_errors() -> None:
    assert _reason(msgpack.packb({"kind": "audio"})) is Reason.INVALID_SCHEMA
    tx = make_tx().model_dump() | {"surprise": 1}
    assert _reason(msgpack.packb(tx)) is Reason.INVALID_SCHEMA


def test_non_finite_amount_is_a_schema_error() -> None:
    tx = make_tx().model_dump() | {"amount": float("nan")}
    assert _reason(msgpack.packb(tx)) is Reason.INVALID_SCHEMA


def test_declared_frame_dimensions_over_the_limit_are_rejected_before_decoding() -> None:
    frame = make_frame()
    limits = Limits(max_frame_elements=frame.width * frame.height * 3 - 1)
    assert _reason(encode(frame), limits=limits) is Reason.FRAME_TOO_LARGE


def test_jpeg_header_that_disagrees_with_declared_size_is_rejected() -> None:
    small = make_frame(h=48, w=64)
    lying = small.model_copy(update={"width": 8, "height": 6})
    assert _reason(encode(lying)) is Reason.FRAME_SIZE_MISMATCH


def test_raw_frame_with_wrong_byte_count_is_rejected() -> None:
    raw = make_frame(FrameEncoding.RAW)
    assert _reason(encode(raw.model_copy(update={"data": raw.data[:-1]}))) is Reason.FRAME_SIZE_MISMATCH


def test_bytes_that_are_not_a_jpeg_are_an_undecodable_image() -> None:
    frame = make_frame().model_copy(update={"data": b"definitely not a jpeg"})
    assert _reason(encode(frame)) is Reason.BAD_IMAGE


def test_corrupt_jpeg_body_passes_the_header_check_but_fails_pixel_decoding() -> None:
    frame = make_frame()
    corrupt = frame.model_copy(update={"data": frame.data[:200]})  # header intact, scan cut short
    decoded = decode_input(encode(corrupt))
    if isinstance(decoded, DecodeError):
        assert decoded.reason is Reason.BAD_IMAGE
    else:
        err = decode_pixels(decoded)
        assert isinstance(err, DecodeError) and err.reason is Reason.BAD_IMAGE


def test_image_headers_give_dimensions_without_decoding() -> None:
    assert encoded_dimensions(make_frame(FrameEncoding.JPEG, 30, 40).data, FrameEncoding.JPEG) == (40, 30)
    assert encoded_dimensions(make_frame(FrameEncoding.PNG, 30, 40).data, FrameEncoding.PNG) == (40, 30)
    assert encoded_dimensions(b"\x89PNG", FrameEncoding.PNG) is None


def test_decoded_pixels_have_the_declared_shape() -> None:
    pixels = decode_pixels(make_frame(FrameEncoding.PNG, 30, 40))
    assert isinstance(pixels, np.ndarray) and pixels.shape == (30, 40, 3)
