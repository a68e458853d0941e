"""Building blocks shared by the model zoo, each with its composition rule.

Every ReLU is its own module instance, so each modular activation point has a stable module-path
name (e.g. ``features.3.relu``). Next to each block, a ``BlockRule`` (``moda_core.rules``) says which
points it has, how a smaller copy of it is sliced and how its weights count towards module overlap;
composition, mask checks and overlap use only those rules. A model built from these blocks, pools,
``nn.Flatten``, ``nn.Identity`` and a final ``nn.Linear`` inside ``nn.Sequential`` containers can be
composed; a new block type needs one ``@register_rule``.

Each block computes its pre-activation in ``pre_activation`` (``BasicBlock``: ``inner`` and ``outer``)
so that a training method can subclass a block and change only that step (MwT's gates do).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from moda_core.errors import ModaError
from moda_core.rules import (
    BlockRule,
    bn_state,
    conv_shared,
    conv_state,
    linear_state,
    materialise,
    prefixed,
    register_rule,
)


class ConvUnit(nn.Module):
    """Conv → BatchNorm → ReLU. With ``groups == channels`` the conv is depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2 if isinstance(kernel_size, int) else tuple(k // 2 for k in kernel_size)
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
                 padding: int = 0) -> None:
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


def channel_gather(inp: torch.Tensor, out: torch.Tensor) -> ChannelGather | None:
    """Map channels ``inp`` onto positions of ``out`` (zeros elsewhere); None when they are the same."""
    if torch.equal(inp, out):
        return None
    common = inp[torch.isin(inp, out)]
    return ChannelGather(torch.searchsorted(inp, common), torch.searchsorted(out, common), len(out)).to(inp.device)


class GatheredConvUnit(ConvUnit):
    """A composed depthwise ``ConvUnit`` whose input first passes through a ``ChannelGather``."""

    def __init__(self, gather: ChannelGather, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 padding: int | None = None) -> None:
        channels = gather.out_channels
        super().__init__(channels, channels, kernel_size, stride, padding, groups=channels)
        self.gather = gather

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.gather(x)))


# ----------------------------------------------------------------------------------------------
# composition rules

class SingleConvRule(BlockRule):
    """What the one-conv blocks share: one point, ``relu``, with one unit per output channel."""

    def points(self, block: nn.Module) -> dict[str, int]:
        return {"relu": block.conv.out_channels}


class ConvUnitRule(SingleConvRule):
    """Keeps the output channels of its ``relu`` and the input channels of its feed; a depthwise conv's
    channel reads only its own input channel (zero when the feed dropped it: ``GatheredConvUnit``).

    Subclasses (a training method's variants) set ``unit_class`` / ``gathered_class`` and return their
    extra parts from ``extra_parts``."""

    unit_class: type = ConvUnit
    gathered_class: type = GatheredConvUnit

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        out, conv = kept["relu"], block.conv
        extras = self.extra_parts(block, inp, kept)
        state = self.with_extras({**prefixed("conv", conv_state(conv, out, None if conv.groups > 1 else inp)),
                                  **prefixed("bn", bn_state(block.bn, out))}, extras)
        args = (conv.kernel_size, conv.stride, conv.padding)
        if conv.groups == 1:
            return materialise(lambda: self.unit_class(len(inp), len(out), *args, **extras), state)
        if not conv.groups == conv.in_channels == conv.out_channels:
            raise ModaError(f"cannot compose a grouped conv (groups={conv.groups}): only groups=1 and depthwise "
                            "are supported")
        gather = channel_gather(inp, out)
        if gather is None:
            return materialise(lambda: self.unit_class(len(out), len(out), *args, groups=len(out), **extras), state)
        state.update(prefixed("gather", gather.state_dict()))
        return materialise(lambda: self.gathered_class(gather, *args, **extras), state)

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return conv_shared(block.conv, feed_gram, grams["relu"], 2)  # + batch-norm weight and bias


class PlainConvUnitRule(SingleConvRule):
    """A conv without batch norm (LeNet-5): output channels of its ``relu``, input channels of its feed."""

    unit_class: type = PlainConvUnit

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        out, conv = kept["relu"], block.conv
        extras = self.extra_parts(block, inp, kept)
        state = self.with_extras(prefixed("conv", conv_state(conv, out, inp)), extras)
        return materialise(lambda: self.unit_class(len(inp), len(out), conv.kernel_size, conv.padding, **extras),
                           state)

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return conv_shared(block.conv, feed_gram, grams["relu"], 0)


class BasicBlockRule(BlockRule):
    """``conv1`` keeps ``relu1``'s channels; ``conv2`` and a projection shortcut share the mask of ``relu2``
    (after the add); an identity shortcut adds only the channels kept on both sides."""

    block_class: type = BasicBlock

    def points(self, block: nn.Module) -> dict[str, int]:
        return {"relu1": block.bn1.num_features, "relu2": block.bn2.num_features}

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        mid, out = kept["relu1"], kept["relu2"]
        state = {**prefixed("conv1", conv_state(block.conv1, mid, inp)), **prefixed("bn1", bn_state(block.bn1, mid)),
                 **prefixed("conv2", conv_state(block.conv2, out, mid)), **prefixed("bn2", bn_state(block.bn2, out))}
        extras = self.extra_parts(block, inp, kept)
        self.with_extras(state, extras)
        stride = block.conv1.stride
        if isinstance(block.shortcut, nn.Identity):
            shortcut = channel_gather(inp, out) or nn.Identity()
            state.update(prefixed("shortcut", shortcut.state_dict()))
        else:
            conv, bn = block.shortcut[0], block.shortcut[1]
            shortcut = None
            state.update({**prefixed("shortcut.0", conv_state(conv, out, inp)),
                          **prefixed("shortcut.1", bn_state(bn, out))})

        def build() -> nn.Module:
            projection = downsample(len(inp), len(out), block.shortcut[0].stride) if shortcut is None else shortcut
            return self.block_class(len(inp), len(out), stride, mid_channels=len(mid), shortcut=projection, **extras)

        return materialise(build, state)

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        mid, out = grams["relu1"], grams["relu2"]
        total = conv_shared(block.conv1, feed_gram, mid, 2) + conv_shared(block.conv2, mid, out, 2)
        if not isinstance(block.shortcut, nn.Identity):
            total = total + conv_shared(block.shortcut[0], feed_gram, out, 2)
        return total


class LinearUnitRule(BlockRule):
    def points(self, block: nn.Module) -> dict[str, int]:
        return {"relu": block.linear.out_features}

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        out, linear = kept["relu"], block.linear
        return materialise(lambda: LinearUnit(len(inp), len(out)), prefixed("linear", linear_state(linear, out, inp)))

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        out = grams["relu"]
        return feed_gram * out + out * (block.linear.bias is not None)


register_rule(ConvUnit)(ConvUnitRule)
register_rule(PlainConvUnit)(PlainConvUnitRule)
register_rule(BasicBlock)(BasicBlockRule)
register_rule(LinearUnit)(LinearUnitRule)
