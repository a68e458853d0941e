"""MobileNet v1 (Howard et al. 2017), CIFAR-style: 3×3 stem at stride 1, then depthwise-separable
blocks (depthwise 3×3 ConvUnit ``dw`` + pointwise 1×1 ConvUnit ``pw``), global pooling and the logits."""
from collections import OrderedDict

from torch import nn

from moda_core.models.base import ZooNet, scaled
from moda_core.models.blocks import ConvUnit

STEM = 32
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]  # (out channels, stride)


def mobilenet(in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    channels = scaled(STEM, width)
    blocks = []
    for out, stride in BLOCKS:
        out = scaled(out, width)
        blocks.append(nn.Sequential(OrderedDict(
            dw=ConvUnit(channels, channels, 3, stride, groups=channels),
            pw=ConvUnit(channels, out, 1, padding=0))))
        channels = out
    return ZooNet(OrderedDict(
        stem=ConvUnit(in_channels, scaled(STEM, width)),
        blocks=nn.Sequential(*blocks),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(channels, num_classes),
    ))
