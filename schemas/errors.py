"""Typed reasons a message becomes a dead letter. The code is the header value users filter on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    EMPTY = "empty_payload"
    TOO_LARGE = "payload_too_large"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    NOT_MSGPACK = "malformed_msgpack"
    NOT_JSON = "malformed_json"
    INVALID_SCHEMA = "invalid_schema"
    FRAME_TOO_LARGE = "frame_too_large"
    FRAME_SIZE_MISMATCH = "frame_size_mismatch"
    BAD_IMAGE = "undecodable_image"
    NO_MODEL_FOR_KIND = "no_model_for_kind"
    PREPROCESS_FAILED = "preprocess_failed"
    MODEL_FAILED = "model_failed"
    MODEL_OUTPUT_MISMATCH = "model_output_mismatch"
    MODEL_OUT_OF_MEMORY = "model_out_of_memory"
    INVALID_OUTPUT = "invalid_output"
    RESULT_ENCODING_FAILED = "result_encoding_failed"
    RESULT_REJECTED = "result_rejected"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A value, not an exception: decoding returns it and the worker routes it to dead letters."""

    reason: Reason
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
