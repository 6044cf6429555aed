"""Image header parsing and pixel decoding for frames. Pure functions, no I/O."""

from __future__ import annotations

import struct

import numpy as np

from schemas.errors import DecodeError, Reason
from schemas.models import Frame, FrameEncoding

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the dimensions (baseline, progressive, lossless, ...)
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def encoded_dimensions(data: bytes, encoding: FrameEncoding) -> tuple[int, int] | None:
    """(width, height) read from the JPEG/PNG header without decoding pixels."""
    if encoding is FrameEncoding.PNG:
        if len(data) < 24 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if encoding is FrameEncoding.JPEG:
        return _jpeg_dimensions(data)
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any SOF
            return None
        i += 2 + length
    return None


def decode_pixels(frame: Frame) -> np.ndarray | DecodeError:
    """HxWxC uint8 BGR (or HxWx1 grey). Assumes ``check_frame`` already passed."""
    if frame.encoding is FrameEncoding.RAW:
        return np.frombuffer(frame.data, dtype=np.uint8).reshape(
            frame.height, frame.width, frame.channels
        )
    import cv2  # here: the codec and the CLI start without OpenCV (about 0.1 s)

    flag = cv2.IMREAD_COLOR if frame.channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(frame.data, dtype=np.uint8), flag)
    if image is None:
        return DecodeError(Reason.BAD_IMAGE, f"OpenCV could not decode the {frame.encoding} data")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[:2] != (frame.height, frame.width):
        return DecodeError(
            Reason.FRAME_SIZE_MISMATCH,
            f"decoded {image.shape[1]}x{image.shape[0]}, declared {frame.width}x{frame.height}",
        )
    return image


def encode_image(image: np.ndarray, encoding: FrameEncoding, quality: int = 90) -> bytes:
    if encoding is FrameEncoding.RAW:
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    import cv2

    ext, params = (
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
        if encoding is FrameEncoding.JPEG
        else (".png", [])
    )
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {encoding}")
    return buf.tobytes()
