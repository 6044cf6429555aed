"""Frames from a video file, a camera, or a synthetic moving pattern.

The synthetic source exists so demos and tests need no camera, no sample video and no
codec: it is numpy only and deterministic for a given ``seq``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import cv2
import numpy as np

from schemas.images import encode_image
from schemas.models import Frame, FrameEncoding, wall_ms

SYNTHETIC = "synthetic"
SYNTHETIC_SIZE = (320, 240)  # width, height

Images = Generator[np.ndarray, None, None]



def synthetic_image(seq: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A BGR gradient with a white disc that moves with ``seq``.

    Both the background and the disc shift every frame, so consecutive frames always
    differ and a model (or a person) can tell that frames arrive in order.
    """
    x = np.linspace(0.0, 255.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 255.0, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = ((x + seq * 3) % 256).astype(np.uint8)
    image[..., 1] = np.broadcast_to(y, (height, width)).astype(np.uint8)
    image[..., 2] = ((x[:, ::-1] + y) / 2).astype(np.uint8)
    radius = max(4, min(width, height) // 8)
    cx = (seq * 7) % width
    cy = int(height / 2 + height / 3 * np.sin(seq / 10))
    cols = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    image[(cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2] = 255
    return image


def target_size(w: int, h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """(width, height) to emit; with only one side given the other keeps the aspect ratio."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(h * width / w))
    if height:
        return max(1, round(w * height / h)), height
    return w, h


def _is_camera_index(source: str) -> bool:
    # isascii: str.isdigit() also accepts characters such as "²" that int() rejects
    return source.isascii() and source.isdigit()


def _open_capture(source: str) -> cv2.VideoCapture:
    """Opened here, not lazily, so a bad path fails before anything connects to Kafka."""
    if _is_camera_index(source):
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise ValueError(f"camera {source} could not be opened")
        return cap
    if "://" not in source and not Path(source).exists():
        raise FileNotFoundError(f"video file {source} does not exist")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"OpenCV could not open video {source}")
    return cap


def _synthetic_images(width: int | None, height: int | None) -> Images:
    size = target_size(*SYNTHETIC_SIZE, width, height)
    for seq in itertools.count():
        yield synthetic_image(seq, *size)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Frames always declare 3 channels; some backends hand back grey or BGRA."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _captured_images(cap: cv2.VideoCapture, width: int | None, height: int | None) -> Images:
    try:
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                return
            image = _as_bgr(image)
            size = target_size(image.shape[1], image.shape[0], width, height)
            if size != (image.shape[1], image.shape[0]):
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            yield image
    finally:
        cap.release()


def _frames(
    images: Images,
    stream_id: str,
    count: int | None,
    encoding: FrameEncoding,
    clock_ms: Callable[[], int],
) -> Iterator[Frame]:
    # islice stops before pulling (and decoding) one frame too many; the explicit close
    # releases the capture as soon as ``count`` is reached instead of at garbage collection.
    try:
        for seq, image in enumerate(itertools.islice(images, count)):
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
    finally:
        images.close()


def iter_video_frames(
    source: str,
    *,
    stream_id: str,
    count: int | None = None,
    encoding: FrameEncoding = FrameEncoding.JPEG,
    width: int | None = None,
    height: int | None = None,
    clock_ms: Callable[[], int] = wall_ms,
) -> Iterator[Frame]:
    """Frames from ``synthetic``, a camera index (digits) or a video file path.

    Arguments are checked and the source opened at the call, not on first iteration,
    so mistakes surface before a producer is started. Synthetic frames are endless
    unless ``count`` is given; files stop at their end.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    for name, side in (("width", width), ("height", height)):
        if side is not None and side <= 0:
            raise ValueError(f"{name} must be > 0, got {side}")
    if source == SYNTHETIC:
        images = _synthetic_images(width, height)
    else:
        images = _captured_images(_open_capture(source), width, height)
    return _frames(images, stream_id, count, encoding, clock_ms)
