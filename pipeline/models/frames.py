"""Frame preprocessing and the built-in frame classifier (a small CNN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.models.base import ItemRejected, TorchModule
from schemas.errors import DecodeError
from schemas.images import decode_pixels
from schemas.models import Frame, InputKind, Transaction

# ImageNet statistics, in RGB order and pixel units
_MEAN_PX = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
_STD_PX = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def frame_rgb(item: Frame | Transaction) -> np.ndarray:
    """Decoded pixels (JPEG/PNG via OpenCV) as HxWx3 RGB uint8; a bad image rejects the item."""
    if not isinstance(item, Frame):
        raise TypeError("frame model got a non-frame item")
    pixels = decode_pixels(item)
    if isinstance(pixels, DecodeError):
        raise ItemRejected(pixels.reason, pixels.message)
    if pixels.shape[2] == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Whole frame to size x size (no crop: objects at the edges of a camera view count)."""
    shrink = rgb.shape[0] >= size and rgb.shape[1] >= size
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_chw(rgb: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> torch.Tensor:
    """(rgb - mean) / std as a contiguous 3xHxW float32 tensor; mean/std in pixel units."""
    chw = ((rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))


def frame_to_tensor(item: Frame | Transaction, size: int) -> torch.Tensor:
    """Decode, resize to size x size, ImageNet-normalise: 3xHxW float32."""
    return to_chw(resize_square(frame_rgb(item), size), _MEAN_PX, _STD_PX)


def top_k(logits: torch.Tensor, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        {
            "labels": [
                {"label": labels[i] if i < len(labels) else f"class_{i}", "prob": float(p)}
                for p, i in zip(vals.tolist(), idx.tolist(), strict=True)
            ]
        }
        for vals, idx in zip(values, indices, strict=True)
    ]


class _TinyCNN(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 128))
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class FrameCNN(TorchModule):
    """A small CNN with fixed seeded weights: a reference network for plumbing and throughput.

    Its labels carry no meaning; plug in a trained model for real predictions.
    """

    kind: InputKind = "frame"
    name = "frame-cnn"
    # JPEG decoding and resizing (OpenCV, GIL released): the runner prepares batches ahead on its pool
    preprocess_in_pool = True
    output_fields: tuple[str, ...] = ("labels",)

    def __init__(self, input_size: int = 96, classes: int = 10, seed: int = 0, k: int = 3) -> None:
        torch.manual_seed(seed)
        self.module = _TinyCNN(classes).eval()
        self.version = f"seeded-{seed}"
        self.input_size = input_size
        self.labels = [f"class_{i}" for i in range(classes)]
        self.k = k

    def example_input(self) -> torch.Tensor:
        return torch.randn(1, 3, self.input_size, self.input_size, generator=torch.Generator().manual_seed(0))

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        return frame_to_tensor(item, self.input_size)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return top_k(output, self.labels, self.k)
