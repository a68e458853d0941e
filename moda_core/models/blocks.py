"""Building blocks shared by the model zoo.

Every ReLU is its own module instance, so each modular activation point has a stable module-path
name (e.g. ``features.3.relu``). Composition (``moda_core.compose``) knows how to slice each block
type here; a model built only from these blocks, pools, ``nn.Flatten``, ``nn.Identity`` and a final
``nn.Linear`` inside ``nn.Sequential`` containers can be composed.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvUnit(nn.Module):
    """Conv → BatchNorm → ReLU. With ``groups == channels`` the conv is depthwise.

    ``gate`` (None unless a baseline such as MwT sets one) maps the unit's input to a per-sample,
    per-channel factor that multiplies the normalised output before the ReLU.
    """

    GATES = ("gate",)  # optional submodules, None unless set (never class attributes: they would shadow them)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1) -> None:
        super().__init__()
        self.gate: nn.Module | None = None
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(gated(self.bn(self.conv(x)), self.gate, x))


def gated(y: torch.Tensor, gate: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``y`` times ``gate(x)`` (B×C, broadcast over space); ``y`` itself when there is no gate."""
    if gate is None:
        return y
    return y * gate(x).view(y.shape[0], y.shape[1], *([1] * (y.dim() - 2)))


class PlainConvUnit(nn.Module):
    """Conv (with bias) → ReLU, no normalisation: the LeNet-5 style (optional ``gate`` as ConvUnit)."""

    GATES = ("gate",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.gate: nn.Module | None = None
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(gated(self.conv(x), self.gate, x))


class LinearUnit(nn.Module):
    """Hidden fully-connected layer: Linear → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.linear(x))


class BasicBlock(nn.Module):
    """ResNet basic block. Points: ``relu1`` (inside) and ``relu2`` (after the residual add).

    Optional gates (see ConvUnit) act on the block input: ``gate1`` before ``relu1``, ``gate2`` on the
    sum before ``relu2``.
    """

    GATES = ("gate1", "gate2")

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.gate1: nn.Module | None = None
        self.gate2: nn.Module | None = None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(gated(self.bn1(self.conv1(x)), self.gate1, x))))
        return self.relu2(gated(out + self.shortcut(x), self.gate2, x))


class ChannelGather(nn.Module):
    """Places the kept input channels at their positions in a wider, zero-filled output.

    Used by composed networks where a layer needs input channels that the previous point dropped
    (a depthwise conv's own channel, an identity shortcut's channel): in the masked full model those
    inputs are zero, so zeros are exactly right.
    """

    def __init__(self, source: torch.Tensor, target: torch.Tensor, out_channels: int) -> None:
        super().__init__()
        self.register_buffer("source", source.long().clone())
        self.register_buffer("target", target.long().clone())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        shape[1] = self.out_channels
        return x.new_zeros(shape).index_copy(1, self.target, x.index_select(1, self.source))

    def extra_repr(self) -> str:
        return f"{len(self.source)} -> {self.out_channels} channels"


class GatheredConvUnit(ConvUnit):
    """A composed depthwise ``ConvUnit`` whose input first passes through a ``ChannelGather``."""

    def __init__(self, gather: ChannelGather, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        nn.Module.__init__(self)
        self.gate = None
        self.gather = gather
        self.conv = conv
        self.bn = bn
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(gated(self.bn(self.conv(self.gather(x))), self.gate, x))
