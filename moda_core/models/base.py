"""``ZooNet``: the common container of zoo models."""
from __future__ import annotations

from torch import nn


class ZooNet(nn.Sequential):
    """An ``nn.Sequential`` of named blocks that ends in the logits layer."""

    arch: dict

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.arch["in_channels"], self.arch["image_size"], self.arch["image_size"])


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier, never below one."""
    return max(1, int(round(channels * width)))
