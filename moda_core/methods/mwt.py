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
own code, on the model's graph like any other model's, and the numbers compare directly with MODA's.
The mask generator is one op of that graph with an op rule of its own (``GateRule``): a composed gate
reads the kept input channels (fc1 columns) and gives the kept output channels (fc2 rows).
Choices the description leaves open, made here: the generator's hidden width
is ``max(16, channels // 4)``; its last bias starts at 1 so that masks start open; in a residual
block the second gate acts on the sum after the shortcut add (the point our decomposition reads),
the downsample shortcut has no gate of its own; the first conv of a model (the stem) has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from moda_core.activations import point_units, recorder
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.methods.base import Method, MethodSettings, Step, StepFunction, Weights, weight
from moda_core.model_attrs import arch_of
from moda_core.models.blocks import BasicBlock, ConvUnit, PlainConvUnit, downsample
from moda_core.oprules import Op, OpRule, first, register_op

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


def build_gate(in_channels: int, out_channels: int, hidden: int, state: dict[str, torch.Tensor]) -> MaskGenerator:
    """A generator of these sizes holding ``state`` (no weights allocated or initialised first)."""
    with torch.device("meta"):
        gate = MaskGenerator(in_channels, out_channels, hidden)
    gate.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    return gate


class GateRule(OpRule):
    """MwT's mask generator as one op of the graph: it reads each input channel's mean (its fc1 columns) and gives
    one gate per output channel (fc2 rows), B × C_out, whatever channels its input holds."""

    name = "gate"

    def classify(self, node: fx.Node, c: Any) -> Op:
        return Op(self, 1, c.shape(node)[1])

    def reads(self, node: fx.Node, op: Op, c: Any) -> bool:
        held = c.op(first(node))
        return held.axis == 1 and not held.holds_all

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        gate, source = r.module(node), first(node)
        outputs, inputs = r.sliced(node)
        held = r.kept(source) if self.reads(node, op, r) else None
        feed = r.adapt(source, inputs if held is not None and len(held) == 0 else held)
        fc1, fc2 = gate.fc1.weight, gate.fc2.weight
        state = {"fc1.weight": fc1 if inputs is None else fc1[:, inputs], "fc1.bias": gate.fc1.bias,
                 "fc2.weight": fc2 if outputs is None else fc2[outputs],
                 "fc2.bias": gate.fc2.bias if outputs is None else gate.fc2.bias[outputs]}
        sliced = build_gate(state["fc1.weight"].shape[1], state["fc2.weight"].shape[0], gate.fc1.out_features, state)
        return r.call_sliced(node, sliced.eval(), feed)

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        return {"fc1.weight": (None, cols), "fc1.bias": (None, None), "fc2.weight": (rows, None),
                "fc2.bias": (rows, None)}


register_op(GateRule(), MaskGenerator)


def gated(y: torch.Tensor, gate: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``y`` (B×C×H×W) times ``gate(x)`` (B×C, broadcast over positions)."""
    return y * gate(x)[:, :, None, None]


# ----------------------------------------------------------------------------------------------
# gated blocks: the zoo blocks with a mask generator before each ReLU

class _OneConvBlock(Protocol):
    """What ``_OneGateBlock`` reads of the block it is mixed into."""

    @property
    def relu(self) -> nn.Module: ...
    @property
    def gate(self) -> nn.Module: ...
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor: ...


class _OneGateBlock:
    """The one-conv gated blocks' point and forward: the normalised output times ``gate(input)``, then
    the ReLU. Their constructors take the generator (built by ``_gated_version`` or a composition rule)."""

    GATES = {"relu": "gate"}  # point → the generator that gates it

    def forward(self: _OneConvBlock, x: torch.Tensor) -> torch.Tensor:
        return self.relu(gated(self.pre_activation(x), self.gate, x))


class GatedConvUnit(_OneGateBlock, ConvUnit):
    """``ConvUnit`` whose normalised output is multiplied by ``gate(input)`` before the ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | None = None, groups: int = 1, *,
                 gate: MaskGenerator) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.gate = gate


class GatedPlainConvUnit(_OneGateBlock, PlainConvUnit):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 padding: int | tuple[int, int] = 0, *, gate: MaskGenerator) -> None:
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


GATED_BLOCKS = (GatedConvUnit, GatedPlainConvUnit, GatedBasicBlock)


# ----------------------------------------------------------------------------------------------
# model preparation, masks, loss

def _on_meta(build: Callable[[], nn.Module], state: dict[str, torch.Tensor]) -> nn.Module:
    """``build()`` without allocating or initialising weights, then holding ``state`` (its whole state dict)."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    return module


def _sizes(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A zoo conv's kernel size, stride and padding, pairs (torch types its attributes as tuples of any length and
    padding as possibly a string, which no zoo block uses)."""
    return cast("tuple[tuple[int, int], tuple[int, int], tuple[int, int]]", (conv.kernel_size, conv.stride,
                                                                               conv.padding))


def _gated_version(block: nn.Module) -> nn.Module:
    """The gated subclass of a zoo block, with the block's own weights and new mask generators."""
    state = dict(block.state_dict())

    def gate(name: str, in_channels: int, out_channels: int) -> MaskGenerator:
        made = MaskGenerator(in_channels, out_channels)
        state.update({f"{name}.{k}": v for k, v in made.state_dict().items()})
        return made

    if isinstance(block, (ConvUnit, PlainConvUnit)):
        conv = block.conv
        one = gate("gate", conv.in_channels, conv.out_channels)
        kernel, step, pad = _sizes(conv)
        if isinstance(block, ConvUnit):
            return _on_meta(lambda: GatedConvUnit(conv.in_channels, conv.out_channels, kernel, step, pad, conv.groups,
                                                  gate=one), state)
        return _on_meta(lambda: GatedPlainConvUnit(conv.in_channels, conv.out_channels, kernel, pad, gate=one), state)
    if not isinstance(block, BasicBlock):  # to_mwt gates these three blocks only
        raise ModaError(f"MwT has no gated version of {type(block).__name__}")
    in_channels, mid, out, stride = (block.conv1.in_channels, block.conv1.out_channels, block.conv2.out_channels,
                                     block.conv1.stride[0])
    gate1, gate2 = gate("gate1", in_channels, mid), gate("gate2", in_channels, out)

    def build() -> GatedBasicBlock:
        shortcut = nn.Identity() if isinstance(block.shortcut, nn.Identity) else downsample(in_channels, out, stride)
        return GatedBasicBlock(in_channels, out, stride, mid, shortcut, gate1=gate1, gate2=gate2)

    return _on_meta(build, state)


def to_mwt(model: nn.Module) -> nn.Module:
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
        raise ModaError(f"model {arch_of(model).get('name')} has no conv layer after the first: MwT needs conv layers")
    for name, module in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _gated_version(module))
    return model


def gated_points(model: nn.Module) -> dict[str, str]:
    """Activation point name → the module path of the mask generator that gates it."""
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, GATED_BLOCKS):
            for point, gate in module.GATES.items():
                found[f"{name}.{point}"] = f"{name}.{gate}"
    return found


def mwt_loss(masks: list[torch.Tensor], labels: torch.Tensor, alpha: float = ALPHA,
             beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, affinity, dispersion)``: the same-label and different-label cosine terms of MODA's
    ``modular_losses`` applied to the masks (B×C each), weighted by α and β."""
    affinity, dispersion, _ = modular_losses(masks, labels)
    return alpha * affinity + beta * dispersion, affinity, dispersion


@dataclass(frozen=True)
class MwTWeights(Weights):
    same_label: float = weight("alpha", "α, weight of same-label mask dissimilarity", ALPHA)
    different_label: float = weight("beta", "β, weight of different-label mask similarity", BETA)


class MwT(Method):
    name = "mwt"
    label = "MwT"
    Weights = MwTWeights

    def validate(self, config: MethodSettings) -> None:
        if ":" in config.model:
            raise ModaError("MwT trains zoo models only (its gates are built into the zoo's blocks); train a model "
                            "of your own with --method moda or standard")
        super().validate(config)

    def prepare(self, model: nn.Module) -> nn.Module:
        return to_mwt(model)

    def terms(self, config: MethodSettings) -> dict[str, bool]:
        # the mask terms, under the names of the MODA terms with the same formulas (on masks, not activations)
        return {"ce": True, "affinity": True, "dispersion": True}

    def network(self, model: nn.Module, config: MethodSettings) -> nn.Module:
        return recorder(model, training=True, extras=gated_points(model))

    def start(self, config: MethodSettings, model: nn.Module, network: nn.Module,
              autocast: ContextManager) -> StepFunction:
        w = cast(MwTWeights, self.weights(config))  # its Weights

        def step(x: torch.Tensor, y: torch.Tensor) -> Step:
            with autocast:
                logits, _, masks = network(x)
            ce = F.cross_entropy(logits.float(), y)
            mask_loss, affinity, dispersion = mwt_loss([m.float() for m in masks], y, w.same_label,
                                                       w.different_label)
            return Step(logits, ce + mask_loss, {"ce": ce, "affinity": affinity, "dispersion": dispersion})
        return step

    def firing(self, model: nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """A gated channel fires when its mask is > 0; ungated points (fully-connected layers, the stem) stay
        whole: every unit counts as firing."""
        gates = gated_points(model)
        record, units = recorder(model, extras=gates), point_units(model)

        def read(x: torch.Tensor) -> dict[str, torch.Tensor]:
            masks = dict(zip(gates, record(x)[2], strict=True))
            return {p: masks[p] > 0 if p in masks else torch.ones(x.shape[0], n, dtype=torch.bool, device=x.device)
                    for p, n in units.items()}
        return read
