"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling; 28×28 inputs get padding 2 so that both
28×28 and 32×32 inputs reach the 16×5×5 feature map of the original."""
from collections import OrderedDict

from torch import nn

from moda_core.models.base import ZooNet, scaled
from moda_core.models.blocks import LinearUnit, PlainConvUnit


def lenet5(in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    c1, c2, f1, f2 = (scaled(n, width) for n in (6, 16, 120, 84))
    padding = 2 if image_size <= 28 else 0
    side = ((image_size + 2 * padding - 4) // 2 - 4) // 2
    return ZooNet(OrderedDict(
        features=nn.Sequential(
            PlainConvUnit(in_channels, c1, 5, padding=padding), nn.MaxPool2d(2),
            PlainConvUnit(c1, c2, 5), nn.MaxPool2d(2)),
        flatten=nn.Flatten(),
        classifier=nn.Sequential(LinearUnit(c2 * side * side, f1), LinearUnit(f1, f2), nn.Linear(f2, num_classes)),
    ))
