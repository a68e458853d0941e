"""MwT baseline — "Modularizing while Training" (Qi et al., ICSE 2024), written from its description.

After the batch norm of every conv layer except the first, a per-sample, per-channel mask in [0, 1)
multiplies the output. The mask comes from a small generator on the layer's input:
global average pool → Linear → ReLU → Linear → tanh → ReLU. Training adds, per gated layer and then
averaged over layers, ``α·(1 − mean cosine similarity of same-label masks) + β·(mean cosine
similarity of different-label masks)`` to cross-entropy (α = 0.5, β = 1.5). Decomposition is
kernel-level: a channel belongs to class c's module if its mask is > 0 for at least τ = 90% of
class-c training samples; fully-connected layers stay whole.

Here the gates live in MwT's own subclasses of our zoo blocks (``GatedConvUnit`` etc., built by
``to_mwt`` from a plain zoo model), so a channel's mask gates exactly one of our activation points,
and MwT modules come out in our mask format: composition, overlap and accuracy are measured with our
own code (the gated blocks register their composition rules below), and the numbers compare
directly with MODA's. Choices the description leaves open, made here: the generator's hidden width
is ``max(16, channels // 4)``; its last bias starts at 1 so that masks start open; in a residual
block the second gate acts on the sum after the shortcut add (the point our decomposition reads),
the downsample shortcut has no gate of its own; the first conv of a model (the stem) has none.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import ContextManager, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.compose import point_units
from moda_core.errors import ModaError
from moda_core.hooks import hooks
from moda_core.losses import modular_losses
from moda_core.methods.base import Indicators, Method, MethodSettings, StepLosses
from moda_core.models.base import ZooNet
from moda_core.models.blocks import (
    BasicBlock,
    BasicBlockRule,
    ChannelGather,
    ConvUnit,
    ConvUnitRule,
    GatheredConvUnit,
    PlainConvUnit,
    PlainConvUnitRule,
    downsample,
)
from moda_core.rules import materialise, prefixed, register_rule

ALPHA, BETA = 0.5, 1.5


class MaskGenerator(nn.Module):
    """Input feature map B×C_in×H×W → mask B×C_out in [0, 1)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(16, out_channels // 4)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_channels)
        nn.init.constant_(self.fc2.bias, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional ReLUs on purpose: an nn.ReLU here would count as a modular activation point
        pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x
        return F.relu(torch.tanh(self.fc2(F.relu(self.fc1(pooled)))))

    def sliced(self, inputs: torch.Tensor, outputs: torch.Tensor) -> "MaskGenerator":
        """The generator of a composed unit: kept input channels in, kept output channels out."""
        state = {"fc1.weight": self.fc1.weight[:, inputs], "fc1.bias": self.fc1.bias,
                 "fc2.weight": self.fc2.weight[outputs], "fc2.bias": self.fc2.bias[outputs]}
        return materialise(lambda: MaskGenerator(len(inputs), len(outputs), self.fc1.out_features), state)

    def shared_parameters(self, input_gram: torch.Tensor, output_gram: torch.Tensor) -> torch.Tensor:
        """Class×class count of this generator's parameters that two modules both keep, from the
        counts of shared kept input channels (``input_gram``) and output channels (``output_gram``):
        fc1 keeps the kept inputs' columns and every hidden unit, fc2 the kept outputs' rows."""
        hidden = self.fc1.out_features
        return input_gram * hidden + hidden + output_gram * (hidden + 1)


def gated(y: torch.Tensor, gate: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``y`` times ``gate(x)`` (B×C, broadcast over space)."""
    return y * gate(x).view(y.shape[0], y.shape[1], *([1] * (y.dim() - 2)))


# ----------------------------------------------------------------------------------------------
# gated blocks: the zoo blocks with a mask generator before each ReLU

class _OneGateBlock:
    """The one-conv gated blocks' point and forward: the normalised output times ``gate(input)``, then
    the ReLU. Their constructors take the generator (built by ``_gated_version`` or a composition rule)."""

    GATES = {"relu": "gate"}  # point → the generator that gates it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(gated(self.pre_activation(x), self.gate, x))


class GatedConvUnit(_OneGateBlock, ConvUnit):
    """``ConvUnit`` whose normalised output is multiplied by ``gate(input)`` before the ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, *, gate: MaskGenerator) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.gate = gate


class GatedGatheredConvUnit(_OneGateBlock, GatheredConvUnit):
    """A composed depthwise ``GatedConvUnit`` (its gate reads the ungathered input)."""

    def __init__(self, gather: ChannelGather, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 padding: int | None = None, *, gate: MaskGenerator) -> None:
        super().__init__(gather, kernel_size, stride, padding)
        self.gate = gate


class GatedPlainConvUnit(_OneGateBlock, PlainConvUnit):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], padding: int = 0, *,
                 gate: MaskGenerator) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding)
        self.gate = gate


class GatedBasicBlock(BasicBlock):
    """``BasicBlock`` with ``gate1`` before ``relu1`` and ``gate2`` on the sum before ``relu2``, both
    reading the block input."""

    GATES = {"relu1": "gate1", "relu2": "gate2"}

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mid_channels: int | None = None,
                 shortcut: nn.Module | None = None, *, gate1: MaskGenerator, gate2: MaskGenerator) -> None:
        super().__init__(in_channels, out_channels, stride, mid_channels, shortcut)
        self.gate1, self.gate2 = gate1, gate2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.relu1(gated(self.inner(x), self.gate1, x))
        return self.relu2(gated(self.outer(x, hidden), self.gate2, x))


GATED_BLOCKS = (GatedConvUnit, GatedGatheredConvUnit, GatedPlainConvUnit, GatedBasicBlock)


class _OneGate:
    """Mixin for the rules of one-conv blocks with one mask generator, ``gate``, on their ``relu``."""

    def extra_parts(self, block: nn.Module, inp: torch.Tensor,
                    kept: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
        return {"gate": block.gate.sliced(inp, kept["relu"])}

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return super().shared_params(block, feed_gram, grams) + block.gate.shared_parameters(feed_gram, grams["relu"])


@register_rule(GatedConvUnit, GatedGatheredConvUnit)
class GatedConvUnitRule(_OneGate, ConvUnitRule):
    unit_class = GatedConvUnit
    gathered_class = GatedGatheredConvUnit


@register_rule(GatedPlainConvUnit)
class GatedPlainConvUnitRule(_OneGate, PlainConvUnitRule):
    unit_class = GatedPlainConvUnit


@register_rule(GatedBasicBlock)
class GatedBasicBlockRule(BasicBlockRule):
    block_class = GatedBasicBlock

    def extra_parts(self, block: nn.Module, inp: torch.Tensor,
                    kept: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
        return {"gate1": block.gate1.sliced(inp, kept["relu1"]), "gate2": block.gate2.sliced(inp, kept["relu2"])}

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return (super().shared_params(block, feed_gram, grams)
                + block.gate1.shared_parameters(feed_gram, grams["relu1"])
                + block.gate2.shared_parameters(feed_gram, grams["relu2"]))


# ----------------------------------------------------------------------------------------------
# model preparation, masks, loss

def _gated_version(block: nn.Module) -> nn.Module:
    """The gated subclass of a zoo block, with the block's own weights and new mask generators."""
    state = dict(block.state_dict())
    if isinstance(block, ConvUnit):
        conv = block.conv
        gate = MaskGenerator(conv.in_channels, conv.out_channels)
        state.update(prefixed("gate", gate.state_dict()))
        return materialise(lambda: GatedConvUnit(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                                 conv.padding, conv.groups, gate=gate), state)
    if isinstance(block, PlainConvUnit):
        conv = block.conv
        gate = MaskGenerator(conv.in_channels, conv.out_channels)
        state.update(prefixed("gate", gate.state_dict()))
        return materialise(lambda: GatedPlainConvUnit(conv.in_channels, conv.out_channels, conv.kernel_size,
                                                      conv.padding, gate=gate), state)
    gate1 = MaskGenerator(block.conv1.in_channels, block.conv1.out_channels)
    gate2 = MaskGenerator(block.conv1.in_channels, block.conv2.out_channels)
    state.update({**prefixed("gate1", gate1.state_dict()), **prefixed("gate2", gate2.state_dict())})
    in_channels, mid, out, stride = (block.conv1.in_channels, block.conv1.out_channels, block.conv2.out_channels,
                                     block.conv1.stride[0])

    def build() -> GatedBasicBlock:
        shortcut = nn.Identity() if isinstance(block.shortcut, nn.Identity) else downsample(in_channels, out, stride)
        return GatedBasicBlock(in_channels, out, stride, mid, shortcut, gate1=gate1, gate2=gate2)

    return materialise(build, state)


def to_mwt(model: ZooNet) -> ZooNet:
    """Swap every conv block after the first for its gated subclass, in place; returns the model.

    Generators are created in forward order (the same random draws as gating blocks one by one)."""
    targets: list[tuple[str, nn.Module]] = []
    first = True
    for name, module in model.named_modules():  # forward order
        if type(module) in (ConvUnit, PlainConvUnit):
            if not first:
                targets.append((name, module))
            first = False
        elif type(module) is BasicBlock:
            targets.append((name, module))
            first = False
    if not targets:
        raise ModaError(f"model {model.arch.get('name')} has no conv layer after the first: MwT needs conv layers")
    for name, module in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _gated_version(module))
    return model


def gated_points(model: nn.Module) -> dict[str, nn.Module]:
    """Activation point name → the mask generator that gates it."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, GATED_BLOCKS):
            for point, gate in module.GATES.items():
                found[f"{name}.{point}"] = getattr(module, gate)
    return found


@contextmanager
def record_masks(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Collect every gate's mask of the latest forward pass, keyed by the point it gates."""
    masks: dict[str, torch.Tensor] = {}

    def hook_for(point: str):
        return lambda _module, _inputs, output: masks.__setitem__(point, output)

    with hooks(forward=[(gate, hook_for(point)) for point, gate in gated_points(model).items()]):
        yield masks


def mwt_loss(masks: list[torch.Tensor], labels: torch.Tensor, alpha: float = ALPHA,
             beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, affinity, dispersion)``: the same-label and different-label cosine terms of MODA's
    ``modular_losses`` applied to the masks (B×C each), weighted by α and β."""
    affinity, dispersion, _ = modular_losses(masks, labels)
    return alpha * affinity + beta * dispersion, affinity, dispersion


class MwT(Method):
    name = "mwt"
    label = "MwT"
    defaults = (ALPHA, BETA, 0.0)

    def validate(self, config: MethodSettings) -> None:
        if ":" in config.model:
            raise ModaError("MwT trains zoo models only (its gates are built into the zoo's blocks); train a model "
                            "of your own with --method moda or standard")
        if config.gamma:
            raise ModaError(f"MwT has no compactness term: gamma must be 0, got {config.gamma}")

    def prepare(self, model: nn.Module) -> nn.Module:
        return to_mwt(model)

    def logged_terms(self, config: MethodSettings) -> tuple[bool, bool, bool]:
        return (True, True, False)  # the mask terms fill the affinity and dispersion columns

    def losses(self, config: MethodSettings, model: nn.Module, network: nn.Module, x: torch.Tensor, y: torch.Tensor,
               autocast: ContextManager) -> StepLosses:
        zero = torch.zeros((), device=x.device)
        with record_masks(model) as masks, autocast:
            logits = network(x)
        ce = F.cross_entropy(logits.float(), y)
        mask_loss, affinity, dispersion = mwt_loss([m.float() for m in masks.values()], y, config.alpha, config.beta)
        return StepLosses(logits, ce, ce + mask_loss, affinity, dispersion, zero)

    @contextmanager
    def unit_indicators(self, model: nn.Module) -> Iterator[Indicators]:
        """A gated channel fires when its mask is > 0; ungated points (fully-connected layers, the stem)
        stay whole: every unit counts as firing."""
        units = point_units(model)
        with record_masks(model) as masks:
            def read() -> dict[str, torch.Tensor]:
                reference = next(iter(masks.values()))
                return {p: masks[p] > 0 if p in masks else
                        torch.ones(reference.shape[0], n, dtype=torch.bool, device=reference.device)
                        for p, n in units.items()}
            yield read
