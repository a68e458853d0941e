"""Multi-layer perceptron on flattened images."""
from collections import OrderedDict

from torch import nn

from moda_core.models.base import ZooNet, scaled
from moda_core.models.blocks import LinearUnit

HIDDEN = (256, 256)


def mlp(in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    sizes = [in_channels * image_size * image_size] + [scaled(h, width) for h in HIDDEN]
    hidden = [LinearUnit(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return ZooNet(OrderedDict(
        flatten=nn.Flatten(),
        classifier=nn.Sequential(*hidden, nn.Linear(sizes[-1], num_classes)),
    ))
