"""The model zoo: one file per family, variants as data, looked up by name in ``MODELS``.

Every zoo model is a ``ZooNet`` (an ``nn.Sequential`` of blocks from ``blocks.py``) that knows the
arguments it was built with (``.arch``), so a run's config can rebuild it exactly. A model of your own is
named by its builder's import path instead (``package.module:function``, ``moda_core.models.user``);
``build_model`` and ``build_from_arch`` take either.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from moda_core.errors import ModaError
from moda_core.models.base import ZooNet
from moda_core.models.lenet import lenet5
from moda_core.models.mlp import mlp
from moda_core.models.mobilenet import mobilenet
from moda_core.models.resnet import resnet18
from moda_core.models.user import build_user_model, check_import_path
from moda_core.models.vgg import vgg11, vgg13, vgg16
from moda_core.models.vit import vit

MODELS: dict[str, Callable[..., ZooNet]] = {
    "mlp": mlp, "lenet5": lenet5, "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16,
    "resnet18": resnet18, "mobilenet": mobilenet, "vit": vit,
}


def build_model(name: str, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                width: float = 1.0, points: str = "relu", threshold: float = 0.0, check: bool = True) -> nn.Module:
    """Build model ``name`` for ``in_channels``×``image_size``² inputs and ``num_classes`` logits: a zoo model
    (``width`` scales it), or a builder's import path ``package.module:function`` (``points``, ``threshold``
    and ``check``: ``moda_core.models.user.build_user_model``)."""
    if ":" in name:
        if width != 1.0:
            raise ModaError(f"width multiplier {width} applies to zoo models only; model {name} is built by its "
                            "own function")
        return build_user_model(check_import_path(name), in_channels, image_size, num_classes, points, threshold,
                                check=check)
    if points != "relu":
        raise ModaError(f"zoo model {name!r} has ReLU points only, got points={points!r}")
    if name not in MODELS:
        raise ModaError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}, or an import path "
                        "package.module:function of your own builder")
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


def build_from_arch(arch: Mapping[str, Any], check: bool = True) -> nn.Module:
    """The model a run's ``arch`` record describes (its config.json, already checked)."""
    return build_model(arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"],
                       arch.get("width", 1.0), arch.get("points", "relu"), arch.get("threshold", 0.0), check=check)


__all__ = ["MODELS", "ZooNet", "build_from_arch", "build_model"]
