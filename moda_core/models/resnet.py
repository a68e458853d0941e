"""ResNet-18 (He et al. 2016), CIFAR-style: 3×3 stem, no stem pooling, four stages of basic blocks."""
from collections import OrderedDict

from torch import nn

from moda_core.models.base import ZooNet, scaled
from moda_core.models.blocks import BasicBlock, ConvUnit

STAGES = {"resnet18": [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]}  # (channels, blocks, stride)


def resnet(variant: str, in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    channels = scaled(64, width)
    parts: OrderedDict[str, nn.Module] = OrderedDict(stem=ConvUnit(in_channels, channels))
    for number, (stage_channels, blocks, stride) in enumerate(STAGES[variant], start=1):
        out = scaled(stage_channels, width)
        stage = []
        for index in range(blocks):
            stage.append(BasicBlock(channels, out, stride if index == 0 else 1))
            channels = out
        parts[f"layer{number}"] = nn.Sequential(*stage)
    parts["pool"] = nn.AdaptiveAvgPool2d(1)
    parts["flatten"] = nn.Flatten()
    parts["fc"] = nn.Linear(channels, num_classes)
    return ZooNet(parts)


def resnet18(in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    return resnet("resnet18", in_channels, image_size, num_classes, width)
