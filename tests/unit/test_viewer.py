"""The viewer's state on a fake clock: a frame shown once its result arrives, with its
labels; rates and latency over the window; transaction scores newest first; the page's
HTTP answers."""

from __future__ import annotations

import json

import numpy as np

from pipeline.viewer import FRAMES_KEPT_BYTES, WINDOW_S, Viewer, ViewerState
from schemas.images import encode_image
from schemas.models import Frame, FrameEncoding, InputRef, Result, Timings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(seq: int, stream: str = "cam") -> Frame:
    image = encode_image(np.full((8, 8, 3), seq % 256, np.uint8), FrameEncoding.JPEG)
    return Frame(stream_id=stream, seq=seq, captured_at_ms=0, encoding=FrameEncoding.JPEG, width=8, height=8,
                 data=image)


def result(event_id: str, kind: str = "frame", latency_ms: int = 40, outputs: dict | None = None,  # type: ignore[type-arg]
           status: str = "ok", topic: str = "frames") -> Result:
    return Result(key="k", kind=kind, input=InputRef(topic=topic, partition=0, offset=0), event_id=event_id,  # type: ignore[arg-type]
                  model_name="m", model_version="1",
                  outputs=outputs if outputs is not None else {"labels": [{"label": "tabby", "prob": 0.8}]},
                  timings=Timings(event_ms=1000, received_ms=1001, batch_closed_ms=1002, inference_start_ms=1003,
                                  inference_end_ms=1004, produced_ms=1000 + latency_ms),
                  batch_size=1, worker_id="w", status=status)  # type: ignore[arg-type]


def test_a_frame_is_shown_with_its_labels_once_its_result_arrives() -> None:
    state = ViewerState(Clock())
    state.frame(frame(1))
    assert state.snapshot()["video"][0]["image"] is None and state.image("cam") is None
    state.result(result("cam/1"))
    [video] = state.snapshot()["video"]
    assert (video["stream"], video["seq"], video["labels"][0]["label"]) == ("cam", 1, "tabby")
    assert video["image"] == "/frame?stream=cam&seq=1"
    assert state.image("cam") == (frame(1).data, "image/jpeg")


def test_a_late_result_of_an_older_frame_does_not_replace_a_newer_one() -> None:
    state = ViewerState(Clock())
    for seq in (1, 2):
        state.frame(frame(seq))
    state.result(result("cam/2"))
    state.result(result("cam/1", outputs={"labels": [{"label": "older", "prob": 1.0}]}))
    assert state.snapshot()["video"][0]["seq"] == 2


def test_frames_waiting_for_results_are_bounded_by_their_bytes() -> None:
    size = len(frame(0).data)
    kept = 64
    state = ViewerState(Clock(), frames_kept_bytes=kept * size)
    for seq in range(kept + 10):
        state.frame(frame(seq))
    assert sum(len(data) for data, _ in state.videos["cam"].frames.values()) <= kept * size
    state.result(result("cam/0"))  # its frame was dropped: nothing to show yet
    assert state.image("cam") is None
    oldest = next(iter(state.videos["cam"].frames))
    assert oldest > 0
    state.result(result(f"cam/{oldest}"))  # the oldest frame kept
    assert state.snapshot()["video"][0]["seq"] == oldest
    state.result(result(f"cam/{kept + 9}"))
    assert state.snapshot()["video"][0]["seq"] == kept + 9
    assert state.videos["cam"].frame_bytes == sum(len(d) for d, _ in state.videos["cam"].frames.values())


def test_a_pipeline_minutes_behind_its_camera_still_shows_its_frames() -> None:
    """A 10 fps camera whose results come 3,000 frames (5 minutes) late, as when workers on a
    slow machine are still loading their models while it publishes: each result finds its
    frame (64 frames were kept before, 6.4 s of it)."""
    state = ViewerState(Clock())
    assert 3_000 * len(frame(0).data) < FRAMES_KEPT_BYTES
    for seq in range(3_000):
        state.frame(frame(seq))
    state.result(result("cam/0"))
    assert state.snapshot()["video"][0]["seq"] == 0 and state.image("cam") is not None


def test_rate_and_latency_cover_the_last_window() -> None:
    clock = Clock()
    state = ViewerState(clock)
    for i in range(20):
        clock.now += 0.5
        state.result(result(f"t{i}", kind="transaction", latency_ms=10 + i, outputs={"score": i / 20},
                            topic="txns"))
    [txns] = state.snapshot()["transactions"]
    assert txns["topic"] == "txns" and txns["per_s"] == 2.0
    assert (txns["p50_ms"], txns["p99_ms"]) == (20, 29)
    assert [r["id"] for r in txns["latest"][:2]] == ["t19", "t18"] and len(txns["latest"]) == 12
    clock.now += WINDOW_S + 1
    [txns] = state.snapshot()["transactions"]
    assert (txns["per_s"], txns["p50_ms"]) == (0.0, None)


def test_the_page_the_state_and_the_frame_over_http() -> None:
    viewer = Viewer({"bootstrap_servers": "unused:9092"}, "results", "frames")
    viewer.state.frame(frame(3))
    viewer.state.result(result("cam/3"))
    status, body, ctype = viewer._answer("/", "")
    assert status == "200 OK" and b"/api/state" in body and ctype.startswith("text/html")
    status, body, _ = viewer._answer("/api/state", "")
    assert json.loads(body)["video"][0]["labels"][0]["label"] == "tabby"
    assert viewer._answer("/frame", "stream=cam&seq=3")[1:] == (frame(3).data, "image/jpeg")
    assert viewer._answer("/frame", "stream=nope")[0].startswith("404")
    assert viewer._answer("/nope", "")[0].startswith("404")


def test_records_that_are_not_results_or_frames_are_skipped() -> None:
    viewer = Viewer({"bootstrap_servers": "unused:9092"}, "results", "frames")
    viewer._take("results", b"\xc1 junk", [])
    viewer._take("frames", b"\xc1 junk", [])
    viewer._take("frames", None, [])
    assert viewer.state.snapshot() == {"video": [], "transactions": []}
