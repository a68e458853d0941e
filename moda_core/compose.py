"""Composition: class masks → a physically smaller network (DESIGN.md §1.4), and the analytic weight
overlap between class modules (§1.5), from one description of how zoo layers are coupled.

``layer_plan(model)`` walks a zoo model in forward order and says, for every block, which activation
point feeds it (``Feed``: a point name, or the image input, repeated over spatial positions after a
flatten). Both ``compose_module`` (which slices weights) and ``overlap_matrix`` (which counts shared
weights from masks alone) read that plan, so the coupling rules live here once:

- a layer keeps the output units of its own point and the input units of the point feeding it;
- a residual block's second conv and its downsample shortcut share the mask of the ReLU after the
  add; an identity shortcut adds only the channels kept on both sides;
- a depthwise conv's channel reads only its own input channel, which is zero when the feeding point
  dropped it (``ChannelGather`` supplies those zeros);
- the logits layer keeps the logits of the target classes, in sorted order.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import skip_init

from moda_core.activations import modular_points
from moda_core.data import check_classes
from moda_core.errors import ModaError
from moda_core.models.base import ZooNet
from moda_core.models.blocks import BasicBlock, ChannelGather, ConvUnit, GatheredConvUnit, LinearUnit, PlainConvUnit

PASS_THROUGH = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class Feed:
    """What feeds a layer: the units of ``point`` (None: the model input), each repeated ``repeat``
    times consecutively (a conv→FC flatten spreads every channel over its spatial positions)."""

    point: str | None
    units: int
    repeat: int = 1


@dataclass(frozen=True)
class Step:
    name: str
    module: nn.Module
    feed: Feed


def layer_plan(model: ZooNet) -> list[Step]:
    """Leaf blocks of ``model`` in forward order, each with the ``Feed`` it reads."""
    if not isinstance(model, ZooNet):
        raise ModaError(f"composition needs a zoo model (ZooNet), got {type(model).__name__}")
    shapes = _flatten_input_shapes(model)
    steps: list[Step] = []
    feed = Feed(None, model.input_shape[0])

    def visit(module: nn.Module, name: str) -> None:
        nonlocal feed
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)
            return
        steps.append(Step(name, module, feed))
        if isinstance(module, (ConvUnit, PlainConvUnit, LinearUnit)):
            feed = Feed(f"{name}.relu", _out_units(module))
        elif isinstance(module, BasicBlock):
            feed = Feed(f"{name}.relu2", module.bn2.num_features)
        elif isinstance(module, nn.Flatten):
            channels, *spatial = shapes[name]
            feed = Feed(feed.point, feed.units * _prod(spatial), feed.repeat * _prod(spatial))
        elif isinstance(module, nn.Linear):
            feed = Feed("logits", module.out_features)
        elif not isinstance(module, PASS_THROUGH):
            raise ModaError(f"cannot compose layer {name!r} of type {type(module).__name__}")

    visit(model, "")
    heads = [s for s in steps if isinstance(s.module, nn.Linear)]
    if len(heads) != 1 or steps[-1] is not heads[0]:
        raise ModaError("composition needs exactly one bare nn.Linear, the logits layer, at the end of the model")
    return steps


def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _out_units(module: nn.Module) -> int:
    return module.linear.out_features if isinstance(module, LinearUnit) else module.conv.out_channels


def _flatten_input_shapes(model: ZooNet) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every nn.Flatten, from one tiny forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape[1:])))
               for n, m in model.named_modules() if isinstance(m, nn.Flatten)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(1, *model.input_shape, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


# ----------------------------------------------------------------------------------------------
# masks

def check_masks(model: ZooNet, masks: Mapping[str, torch.Tensor]) -> int:
    """Masks must cover exactly the model's points with shape (num_classes, units); returns num_classes."""
    points = modular_points(model)
    if set(masks) != set(points):
        missing, extra = sorted(set(points) - set(masks)), sorted(set(masks) - set(points))
        raise ModaError(f"masks do not belong to this model: missing points {missing[:4]}, "
                        f"unknown points {extra[:4]}")
    num_classes = model.arch["num_classes"]
    for step in layer_plan(model):
        for point, units in _produced_points(step):
            if tuple(masks[point].shape) != (num_classes, units):
                raise ModaError(f"mask for point {point!r} has shape {tuple(masks[point].shape)}, expected "
                                f"({num_classes}, {units}) for this model: masks from another model?")
    return num_classes


def _produced_points(step: Step) -> list[tuple[str, int]]:
    module = step.module
    if isinstance(module, (ConvUnit, PlainConvUnit, LinearUnit)):
        return [(f"{step.name}.relu", _out_units(module))]
    if isinstance(module, BasicBlock):
        return [(f"{step.name}.relu1", module.bn1.num_features), (f"{step.name}.relu2", module.bn2.num_features)]
    return []


def union_units(masks: Mapping[str, torch.Tensor], classes: list[int]) -> dict[str, torch.Tensor]:
    """Sorted unit indices kept at each point by the union of ``classes``' modules."""
    return {p: torch.nonzero(m[classes].any(0)).flatten() for p, m in masks.items()}


# ----------------------------------------------------------------------------------------------
# composition

class ComposedModule(nn.Sequential):
    """A composed sub-task network: its logits are ``classes`` (original indices) in sorted order."""

    classes: list[int]
    input_shape: tuple[int, int, int]


def compose_module(model: ZooNet, masks: Mapping[str, torch.Tensor], classes: Iterable[int]) -> ComposedModule:
    """Build the smaller network that keeps the union of ``classes``' modules (eval mode, no training)."""
    num_classes = check_masks(model, masks)
    classes = check_classes(list(classes), num_classes, "composition")
    kept = union_units(masks, classes)
    empty = [p for p, units in kept.items() if len(units) == 0]
    if empty:
        raise ModaError(f"the modules of classes {classes} keep no unit at point(s) {empty[:3]}; every class "
                        "needs at least one unit per point (decomposition's floor guarantees this)")
    device = next(model.parameters()).device

    def feed_index(feed: Feed) -> torch.Tensor:
        base = torch.arange(feed.units // feed.repeat) if feed.point is None else kept[feed.point]
        base = base.to(device)
        if feed.repeat == 1:
            return base
        return (base[:, None] * feed.repeat + torch.arange(feed.repeat, device=device)).flatten()

    built: dict[str, nn.Module] = {}
    for step in layer_plan(model):
        built[step.name] = _compose_step(step, feed_index(step.feed), kept, classes, device)
    composed = _rebuild(model, "", built)
    composed.__class__ = ComposedModule
    composed.classes = classes
    composed.input_shape = model.input_shape
    return composed.eval()


def _rebuild(module: nn.Module, name: str, built: dict[str, nn.Module]) -> nn.Module:
    if isinstance(module, nn.Sequential):
        children = OrderedDict((child_name, _rebuild(child, f"{name}.{child_name}" if name else child_name, built))
                               for child_name, child in module.named_children())
        return nn.Sequential(children)
    return built[name]


def _slice_conv(conv: nn.Conv2d, out: torch.Tensor, inp: torch.Tensor | None) -> nn.Conv2d:
    """A copy of ``conv`` keeping output channels ``out`` and input channels ``inp`` (None: depthwise)."""
    weight = conv.weight.detach()[out]
    if inp is not None:
        weight = weight[:, inp]
    groups = 1 if inp is not None else len(out)
    new = skip_init(nn.Conv2d, weight.shape[1] * groups, len(out), conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                    device=weight.device)
    new.weight = nn.Parameter(weight.clone())
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach()[out].clone())
    return new


def _slice_bn(bn: nn.BatchNorm2d, out: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(out), eps=bn.eps, momentum=bn.momentum).to(bn.weight.device)
    new.weight = nn.Parameter(bn.weight.detach()[out].clone())
    new.bias = nn.Parameter(bn.bias.detach()[out].clone())
    new.running_mean.copy_(bn.running_mean[out])
    new.running_var.copy_(bn.running_var[out])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _slice_linear(linear: nn.Linear, out: torch.Tensor, inp: torch.Tensor) -> nn.Linear:
    new = skip_init(nn.Linear, len(inp), len(out), bias=linear.bias is not None, device=linear.weight.device)
    new.weight = nn.Parameter(linear.weight.detach()[out][:, inp].clone())
    if linear.bias is not None:
        new.bias = nn.Parameter(linear.bias.detach()[out].clone())
    return new


def _gather(inp: torch.Tensor, out: torch.Tensor) -> ChannelGather | None:
    """Map channels ``inp`` onto positions of ``out`` (zeros elsewhere); None when they are the same."""
    if torch.equal(inp, out):
        return None
    common = inp[torch.isin(inp, out)]
    return ChannelGather(torch.searchsorted(inp, common), torch.searchsorted(out, common), len(out)).to(inp.device)


def _shell(cls: type[nn.Module]) -> nn.Module:
    """An instance of a block class with no submodules yet (its __init__ would allocate full layers)."""
    instance = cls.__new__(cls)
    nn.Module.__init__(instance)
    for gate in getattr(cls, "GATES", ()):
        setattr(instance, gate, None)
    return instance


def _compose_step(step: Step, inp: torch.Tensor, kept: dict[str, torch.Tensor], classes: list[int],
                  device: torch.device) -> nn.Module:
    module, name = step.module, step.name
    if isinstance(module, ConvUnit):
        out = kept[f"{name}.relu"]
        conv = module.conv
        if conv.groups == 1:
            unit = _shell(ConvUnit)
            unit.conv, unit.bn, unit.relu = _slice_conv(conv, out, inp), _slice_bn(module.bn, out), nn.ReLU()
        elif conv.groups == conv.in_channels == conv.out_channels:
            gather = _gather(inp, out)
            if gather is None:
                unit = _shell(ConvUnit)
                unit.conv, unit.bn, unit.relu = _slice_conv(conv, out, None), _slice_bn(module.bn, out), nn.ReLU()
            else:
                unit = GatheredConvUnit(gather, _slice_conv(conv, out, None), _slice_bn(module.bn, out))
        else:
            raise ModaError(f"cannot compose grouped conv {name!r}: only groups=1 and depthwise are supported")
        if module.gate is not None:
            unit.gate = module.gate.sliced(inp, out)
        return unit
    if isinstance(module, PlainConvUnit):
        out = kept[f"{name}.relu"]
        unit = _shell(PlainConvUnit)
        unit.conv, unit.relu = _slice_conv(module.conv, out, inp), nn.ReLU()
        if module.gate is not None:
            unit.gate = module.gate.sliced(inp, out)
        return unit
    if isinstance(module, LinearUnit):
        unit = _shell(LinearUnit)
        unit.linear, unit.relu = _slice_linear(module.linear, kept[f"{name}.relu"], inp), nn.ReLU()
        return unit
    if isinstance(module, BasicBlock):
        mid, out = kept[f"{name}.relu1"], kept[f"{name}.relu2"]
        block = _shell(BasicBlock)
        block.conv1, block.bn1, block.relu1 = _slice_conv(module.conv1, mid, inp), _slice_bn(module.bn1, mid), nn.ReLU()
        block.conv2, block.bn2 = _slice_conv(module.conv2, out, mid), _slice_bn(module.bn2, out)
        if isinstance(module.shortcut, nn.Identity):
            block.shortcut = _gather(inp, out) or nn.Identity()
        else:
            conv, bn = module.shortcut[0], module.shortcut[1]
            block.shortcut = nn.Sequential(_slice_conv(conv, out, inp), _slice_bn(bn, out))
        block.relu2 = nn.ReLU()
        if module.gate1 is not None:
            block.gate1 = module.gate1.sliced(inp, mid)
        if module.gate2 is not None:
            block.gate2 = module.gate2.sliced(inp, out)
        return block
    if isinstance(module, nn.Linear):
        return _slice_linear(module, torch.tensor(classes, device=device), inp)
    return copy.deepcopy(module)


# ----------------------------------------------------------------------------------------------
# analytic overlap

def overlap_counts(model: ZooNet, masks: Mapping[str, torch.Tensor],
                   by_layer: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Class×class counts of full-model parameters that both single-class modules keep (float64).

    The diagonal is each single-class module's own parameter count. From masks alone: for a layer
    with input mask P and output mask M, ``(P Pᵀ) ⊙ (M Mᵀ) · kernel_area + (M Mᵀ) · per-unit params``.
    With ``by_layer`` returns ``{block name: matrix}`` instead of the sum.
    """
    num_classes = check_masks(model, masks)
    float_masks = {p: m.double() for p, m in masks.items()}
    eye = torch.eye(num_classes, dtype=torch.float64)

    def gram(feed: Feed) -> torch.Tensor:
        if feed.point is None:
            return torch.full((num_classes, num_classes), float(feed.units), dtype=torch.float64)
        m = float_masks[feed.point]
        return (m @ m.T) * feed.repeat

    def same(point: str) -> torch.Tensor:
        m = float_masks[point]
        return m @ m.T

    def conv_terms(conv: nn.Conv2d, feed_gram: torch.Tensor, out_gram: torch.Tensor, per_unit: int) -> torch.Tensor:
        area = conv.kernel_size[0] * conv.kernel_size[1]
        per_unit += 0 if conv.bias is None else 1
        if conv.groups == 1:
            return feed_gram * out_gram * area + out_gram * per_unit
        return out_gram * (area + per_unit)  # depthwise: one input channel per output channel

    def gate_terms(gate: nn.Module | None, feed_gram: torch.Tensor, out_gram: torch.Tensor) -> torch.Tensor | float:
        # a gate (e.g. the MwT baseline's mask generator) counts its own shared parameters
        return 0.0 if gate is None else gate.shared_parameters(feed_gram, out_gram)

    layers: dict[str, torch.Tensor] = {}
    for step in layer_plan(model):
        module, name = step.module, step.name
        if isinstance(module, (ConvUnit, PlainConvUnit)):
            inp, out = gram(step.feed), same(f"{name}.relu")
            per_unit = 2 if isinstance(module, ConvUnit) else 0  # batch-norm weight and bias
            layers[name] = conv_terms(module.conv, inp, out, per_unit) + gate_terms(module.gate, inp, out)
        elif isinstance(module, LinearUnit):
            out = same(f"{name}.relu")
            layers[name] = gram(step.feed) * out + out * (module.linear.bias is not None)
        elif isinstance(module, BasicBlock):
            inp, mid, out = gram(step.feed), same(f"{name}.relu1"), same(f"{name}.relu2")
            total = conv_terms(module.conv1, inp, mid, 2) + conv_terms(module.conv2, mid, out, 2)
            if not isinstance(module.shortcut, nn.Identity):
                total = total + conv_terms(module.shortcut[0], inp, out, 2)
            layers[name] = total + gate_terms(module.gate1, inp, mid) + gate_terms(module.gate2, inp, out)
        elif isinstance(module, nn.Linear):
            layers[name] = gram(step.feed) * eye + eye * (module.bias is not None)
    if by_layer:
        return layers
    return sum(layers.values())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
