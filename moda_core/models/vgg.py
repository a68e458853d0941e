"""VGG with batch norm (Simonyan & Zisserman 2015), CIFAR-style: one hidden FC layer.

Max pools use ``ceil_mode`` so that 28×28 inputs (28→14→7→4→2→1) and 32×32 inputs both end at 1×1.
"""
from collections import OrderedDict
from functools import partial

from torch import nn

from moda_core.models.base import ZooNet, scaled
from moda_core.models.blocks import ConvUnit, LinearUnit

M = "M"  # max pool
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
}
HIDDEN = 512


def vgg(variant: str, in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for item in CONFIGS[variant]:
        if isinstance(item, str):  # M
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            side = -(-side // 2)
        else:
            layers.append(ConvUnit(channels, scaled(item, width)))
            channels = scaled(item, width)
    hidden = scaled(HIDDEN, width)
    return ZooNet(OrderedDict(
        features=nn.Sequential(*layers),
        flatten=nn.Flatten(),
        classifier=nn.Sequential(LinearUnit(channels * side * side, hidden), nn.Linear(hidden, num_classes)),
    ))


vgg11 = partial(vgg, "vgg11")
vgg13 = partial(vgg, "vgg13")
vgg16 = partial(vgg, "vgg16")
