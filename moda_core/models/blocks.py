"""Building blocks shared by the model zoo.

Every ReLU is its own module instance, so each modular activation point has a stable module-path name (e.g.
``features.3.relu``). Composition, mask checks and overlap read the blocks through the model's graph
(``moda_core.graph``), like any other model: no block needs a rule of its own.

Each block computes its pre-activation in ``pre_activation`` (``BasicBlock``: ``inner`` and ``outer``) so that a
training method can subclass a block and change only that step (MwT's gates do).
"""
from __future__ import annotations

import torch
from torch import nn


class ConvUnit(nn.Module):
    """Conv → BatchNorm → ReLU. With ``groups == channels`` the conv is depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2 if isinstance(kernel_size, int) else (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pre_activation(x))


class PlainConvUnit(nn.Module):
    """Conv (with bias) → ReLU, no normalisation: the LeNet-5 style."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.relu = nn.ReLU()

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pre_activation(x))


class LinearUnit(nn.Module):
    """Hidden fully-connected layer: Linear → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.linear(x))


def downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A residual block's projection shortcut: 1×1 conv → BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet basic block. Points: ``relu1`` (inside) and ``relu2`` (after the residual add).

    ``mid_channels`` (default ``out_channels``) is the width of ``relu1``; ``shortcut`` (default: a
    projection when the shape changes, else the identity) may be given, as composed blocks do.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mid_channels: int | None = None,
                 shortcut: nn.Module | None = None) -> None:
        super().__init__()
        mid_channels = out_channels if mid_channels is None else mid_channels
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if shortcut is None:
            shortcut = (downsample(in_channels, out_channels, stride) if stride != 1 or in_channels != out_channels
                        else nn.Identity())
        self.shortcut = shortcut
        self.relu2 = nn.ReLU()

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of ``relu1``."""
        return self.bn1(self.conv1(x))

    def outer(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Pre-activation of ``relu2``: the second conv plus the shortcut."""
        return self.bn2(self.conv2(hidden)) + self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.outer(x, self.relu1(self.inner(x))))
