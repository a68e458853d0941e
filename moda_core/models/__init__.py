"""The model zoo: one file per family, variants as data, looked up by name in ``MODELS``.

Every zoo model is a ``ZooNet`` (an ``nn.Sequential`` of blocks from ``blocks.py``) that knows the
arguments it was built with (``.arch``), so a run's config can rebuild it exactly.
"""
from __future__ import annotations

from typing import Callable

from moda_core.errors import ModaError
from moda_core.models.base import ZooNet
from moda_core.models.lenet import lenet5
from moda_core.models.mlp import mlp
from moda_core.models.mobilenet import mobilenet
from moda_core.models.resnet import resnet18
from moda_core.models.vgg import vgg11, vgg13, vgg16
from moda_core.models.vit import vit

MODELS: dict[str, Callable[..., ZooNet]] = {
    "mlp": mlp, "lenet5": lenet5, "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16,
    "resnet18": resnet18, "mobilenet": mobilenet, "vit": vit,
}


def build_model(name: str, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                width: float = 1.0) -> ZooNet:
    """Build zoo model ``name`` for ``in_channels``×``image_size``² inputs and ``num_classes`` logits."""
    if name not in MODELS:
        raise ModaError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    if num_classes < 1:
        raise ModaError(f"a model needs at least one class, got num_classes={num_classes}")
    if not 0 < width <= 8:
        raise ModaError(f"width multiplier must be in (0, 8], got {width}")
    if image_size < 8:
        raise ModaError(f"image size must be at least 8 pixels, got {image_size}")
    model = MODELS[name](in_channels=in_channels, image_size=image_size, num_classes=num_classes, width=width)
    model.arch = {"name": name, "in_channels": in_channels, "image_size": image_size,
                  "num_classes": num_classes, "width": width}
    return model


__all__ = ["MODELS", "ZooNet", "build_model"]
