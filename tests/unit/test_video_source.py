from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from producers.video_source import iter_video_frames, target_size
from schemas import Frame, FrameEncoding, decode_input, encode
from schemas.images import decode_pixels


def fixed_clock() -> int:
    return 1_700_000_000_000


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> None:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, size)
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc}"
    try:
        for i in range(frames):
            writer.write(np.full((size[1], size[0], 3), i * 20 % 256, dtype=np.uint8))
    finally:
        writer.release()


@pytest.mark.parametrize("encoding", list(FrameEncoding))
def test_synthetic_frames_survive_the_wire_codec_and_decode_to_their_declared_shape(
    encoding: FrameEncoding,
) -> None:
    frames = list(
        iter_video_frames(
            "synthetic", stream_id="cam-1", count=3, encoding=encoding, clock_ms=fixed_clock
        )
    )

    assert [f.seq for f in frames] == [0, 1, 2]
    for frame in frames:
        assert decode_input(encode(frame)) == frame
        pixels = decode_pixels(frame)
        assert isinstance(pixels, np.ndarray)
        assert pixels.shape == (frame.height, frame.width, 3) == (240, 320, 3)
        assert (frame.stream_id, frame.captured_at_ms, frame.encoding) == (
            "cam-1", fixed_clock(), encoding
        )


def test_consecutive_synthetic_frames_differ() -> None:
    frames = list(
        iter_video_frames("synthetic", stream_id="s", count=5, encoding=FrameEncoding.RAW)
    )
    for a, b in itertools.pairwise(frames):
        assert a.data != b.data


def test_synthetic_source_is_deterministic_apart_from_the_clock() -> None:
    def run() -> list[Frame]:
        return list(iter_video_frames("synthetic", stream_id="s", count=3, clock_ms=fixed_clock))

    assert run() == run()


def test_synthetic_source_is_endless_without_a_count() -> None:
    frames = iter_video_frames("synthetic", stream_id="s", encoding=FrameEncoding.RAW)
    assert [f.seq for f in itertools.islice(frames, 50)] == list(range(50))


def test_giving_only_a_width_keeps_the_aspect_ratio_of_the_synthetic_pattern() -> None:
    (frame,) = iter_video_frames("synthetic", stream_id="s", count=1, width=160)
    assert (frame.width, frame.height) == (160, 120)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (None, None, (640, 480)),
        (320, None, (320, 240)),
        (None, 120, (160, 120)),
        (10, 20, (10, 20)),
    ],
)
def test_target_size_keeps_aspect_when_one_side_is_given(
    width: int | None, height: int | None, expected: tuple[int, int]
) -> None:
    assert target_size(640, 480, width, height) == expected


@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_a_video_file_is_read_to_its_end_with_seq_from_zero(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_video(path, frames=7)

    frames = list(iter_video_frames(str(path), stream_id="file", encoding=FrameEncoding.PNG))

    assert [f.seq for f in frames] == list(range(7))
    assert {(f.width, f.height, f.channels) for f in frames} == {(64, 48, 3)}
    assert all(decode_input(encode(f)) == f for f in frames)


def test_count_stops_a_video_file_early_and_resize_applies(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, frames=7)

    frames = list(iter_video_frames(str(path), stream_id="file", count=3, height=24))

    assert len(frames) == 3
    assert {(f.width, f.height) for f in frames} == {(32, 24)}
    pixels = decode_pixels(frames[0])
    assert isinstance(pixels, np.ndarray) and pixels.shape == (24, 32, 3)


def test_a_missing_file_fails_at_the_call_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        iter_video_frames(str(missing), stream_id="s")


def test_a_file_opencv_cannot_read_fails_naming_the_path(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"junk\.avi"):
        list(iter_video_frames(str(junk), stream_id="s"))


@pytest.mark.parametrize(("kwargs"), [{"count": -1}, {"width": 0}, {"height": -5}])
def test_nonsense_sizes_and_counts_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        iter_video_frames("synthetic", stream_id="s", **kwargs)  # type: ignore[arg-type]
