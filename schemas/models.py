"""Wire models: what producers publish, what workers emit.

Inputs carry a ``kind`` discriminator so one topic may hold frames and
transactions side by side; a worker routes each item to the model for its kind.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Kafka timestamps and offsets are signed 64-bit: larger integers cannot travel in a result
INT64_MAX = 2**63 - 1


class FrameEncoding(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    RAW = "raw"  # uint8, row-major height x width x channels (BGR for 3 channels)


class _Wire(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )


class Frame(_Wire):
    kind: Literal["frame"] = "frame"
    stream_id: str = Field(min_length=1, max_length=256)
    seq: int = Field(ge=0, le=INT64_MAX)
    captured_at_ms: int = Field(ge=0, le=INT64_MAX, description="capture time, Unix epoch milliseconds")
    encoding: FrameEncoding
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    channels: Literal[1, 3] = 3
    data: bytes

    @property
    def key(self) -> str:
        return self.stream_id

    @property
    def event_time_ms(self) -> int:
        return self.captured_at_ms


class Transaction(_Wire):
    kind: Literal["transaction"] = "transaction"
    id: str = Field(min_length=1, max_length=128)
    account_id: str = Field(min_length=1, max_length=128)
    timestamp_ms: int = Field(ge=0, le=INT64_MAX, description="event time, Unix epoch milliseconds")
    amount: float = Field(ge=0, allow_inf_nan=False)
    currency: str = Field(min_length=3, max_length=3)
    merchant_id: str = Field(default="", max_length=128)
    merchant_category: str = Field(default="", max_length=64)
    country: str = Field(default="", max_length=2)
    channel: Literal["card_present", "online", "atm", "transfer", ""] = ""
    features: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, max_length=256
    )

    @property
    def key(self) -> str:
        return self.account_id

    @property
    def event_time_ms(self) -> int:
        return self.timestamp_ms


InputEvent = Annotated[Frame | Transaction, Field(discriminator="kind")]
InputKind = Literal["frame", "transaction"]


def wall_ms() -> int:
    """Now as Unix epoch milliseconds: the clock of every ``Timings`` field and event time."""
    return time.time_ns() // 1_000_000


class Timings(_Wire):
    """Where the time went, per item. Wall-clock epoch ms so they compare across hosts."""

    event_ms: int
    received_ms: int
    batch_closed_ms: int
    inference_start_ms: int
    inference_end_ms: int
    produced_ms: int


class InputRef(_Wire):
    topic: str
    partition: int
    offset: int


class Result(_Wire):
    key: str | None
    kind: InputKind
    input: InputRef
    event_id: str  # transaction id, or "<stream_id>/<seq>" for frames
    model_name: str
    model_version: str
    outputs: dict[str, Any]
    timings: Timings
    batch_size: int
    worker_id: str
    # "skipped_stale": a frame older than the worker's max_frame_age_ms when its batch reached
    # the model; not classified, and ``outputs`` says how old it was
    status: Literal["ok", "skipped_stale"] = "ok"


class DeadLetter(_Wire):
    """A message the worker could not turn into a result. Published with the original bytes.

    An original larger than the worker's payload limit travels truncated to that limit:
    ``truncated`` is set and ``original_size``/``original_sha256`` describe the whole of it.
    """

    original: bytes
    reason: str
    message: str
    input: InputRef
    key: bytes | None = None
    worker_id: str = ""
    original_size: int | None = None
    original_sha256: str | None = None
    truncated: bool = False
