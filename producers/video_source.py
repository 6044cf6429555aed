"""Frames from a video file, a camera, or a synthetic moving pattern."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from schemas.images import encode_image
from schemas.models import Frame, FrameEncoding


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def synthetic_image(seq: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A gradient background with a bright disc that moves with ``seq`` (BGR uint8)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (x + seq * 3) % 256
    image[..., 1] = y
    image[..., 2] = (x[::-1] + y) / 2
    cx = int((seq * 7) % width)
    cy = int(height / 2 + height / 3 * np.sin(seq / 10))
    cv2.circle(image, (cx, cy), max(4, min(width, height) // 8), (255, 255, 255), -1)
    return image


def _open_capture(source: str) -> cv2.VideoCapture:
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise ValueError(f"camera {source} could not be opened")
        return cap
    if not Path(source).exists():
        raise FileNotFoundError(f"video file {source} does not exist")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"OpenCV could not open video {source}")
    return cap


def _target_size(w: int, h: int, width: int | None, height: int | None) -> tuple[int, int]:
    if width and height:
        return width, height
    if width:
        return width, max(1, round(h * width / w))
    if height:
        return max(1, round(w * height / h)), height
    return w, h


def _images(source: str, width: int | None, height: int | None) -> Iterator[np.ndarray]:
    if source == "synthetic":
        seq = 0
        while True:
            yield synthetic_image(seq, width or 320, height or 240)
            seq += 1
    cap = _open_capture(source)
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            size = _target_size(image.shape[1], image.shape[0], width, height)
            if size != (image.shape[1], image.shape[0]):
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            yield image
    finally:
        cap.release()


def iter_video_frames(
    source: str,
    *,
    stream_id: str,
    count: int | None = None,
    encoding: FrameEncoding = FrameEncoding.JPEG,
    width: int | None = None,
    height: int | None = None,
    clock_ms: Callable[[], int] = _wall_ms,
) -> Iterator[Frame]:
    """``source``: a file path, a camera index (digits), or ``synthetic``."""
    for seq, image in enumerate(_images(source, width, height)):
        if count is not None and seq >= count:
            return
        yield Frame(
            stream_id=stream_id,
            seq=seq,
            captured_at_ms=clock_ms(),
            encoding=encoding,
            width=image.shape[1],
            height=image.shape[0],
            channels=3,
            data=encode_image(image, encoding),
        )
