"""Model interface, built-in models and the loader for user models."""

from pipeline.models.base import ItemRejected, Model, ModelError
from pipeline.models.efficientnet import EfficientNetLite0
from pipeline.models.frames import FrameCNN
from pipeline.models.loader import TorchScriptModel, load_model, load_state_dict, resolve_device
from pipeline.models.transactions import TransactionMLP

__all__ = [
    "EfficientNetLite0",
    "FrameCNN",
    "ItemRejected",
    "Model",
    "ModelError",
    "TorchScriptModel",
    "TransactionMLP",
    "load_model",
    "load_state_dict",
    "resolve_device",
]
