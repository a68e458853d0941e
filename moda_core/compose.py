"""Composition: class masks → a physically smaller network, and the analytic weight overlap between
class modules (docs/design.md, Composition and its exactness contract; Weight overlap), from the
composition rules of the model's block types.

``layer_plan(model)`` walks a zoo model in forward order and gives, for every block, its rule
(``moda_core.rules.rule_for``) and what feeds it (``Feed``: a point name, or whole units such as the
image input, repeated over spatial positions after a flatten). ``check_masks``, ``compose_module``
(which slices weights) and ``overlap_counts`` (which counts shared weights from masks alone) only
loop over that plan and ask each block's rule; the coupling rules themselves live with the blocks
(``models/blocks.py``) and in ``moda_core.rules``:

- a layer keeps the output units of its own point and the input units of the point feeding it;
- a residual block's second conv and its projection shortcut share the mask of the ReLU after the
  add; an identity shortcut adds only the channels kept on both sides;
- a depthwise conv's channel reads only its own input channel, which is zero when the feeding point
  dropped it (``ChannelGather`` supplies those zeros);
- the logits layer keeps the logits of the target classes, in sorted order.

Any other model (a model of the user's own, tapped: ``moda_core.tapped``) is composed on its traced graph
(``moda_core.graph_compose``): the same functions dispatch there, the composed module is an fx
``GraphModule`` with ``classes``, ``input_shape`` and ``kept_whole`` (what it could not slice, and why), and
the overlap is counted on the graph. A model fx cannot trace cannot be composed; the error says why.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from moda_core.activations import modular_points
from moda_core.data import check_classes
from moda_core.errors import ModaError
from moda_core.graph_compose import compose_graph, graph_overlap_counts
from moda_core.hooks import eval_mode, hooks
from moda_core.models.base import ZooNet
from moda_core.rules import BlockRule, Feed, parameter_count, rule_for
from moda_core.tapped import taps_of

__all__ = ["ComposedModule", "Feed", "Step", "check_masks", "compose_module", "composition_blocker", "layer_plan",
           "overlap_counts", "parameter_count", "point_units", "union_units"]


@dataclass(frozen=True)
class Step:
    name: str
    module: nn.Module
    feed: Feed
    rule: BlockRule

    def point_names(self) -> dict[str, str]:
        """Relative point name → full point name."""
        return {p: f"{self.name}.{p}" for p in self.rule.points(self.module)}


def layer_plan(model: ZooNet) -> list[Step]:
    """Blocks of ``model`` in forward order, each with its rule and the ``Feed`` it reads."""
    if not isinstance(model, ZooNet):
        raise ModaError(f"composition needs a zoo model (ZooNet), got {type(model).__name__}")
    blocks: list[tuple[str, nn.Module, BlockRule]] = []

    def visit(module: nn.Module, name: str) -> None:
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)
            return
        rule = rule_for(module)
        if rule is None:
            raise ModaError(f"cannot compose layer {name!r} of type {type(module).__name__}: no composition rule "
                            "is registered for it (moda_core.rules.register_rule)")
        blocks.append((name, module, rule))

    visit(model, "")
    shapes = _block_shapes(model, [(name, module) for name, module, _ in blocks])
    steps: list[Step] = []
    feed = Feed(None, model.input_shape[0])
    for name, module, rule in blocks:
        steps.append(Step(name, module, feed, rule))
        feed = rule.feed_after(module, name, feed, *shapes[name])
    heads = [s for s in steps if s.rule.is_head]
    if len(heads) != 1 or steps[-1] is not heads[0]:
        raise ModaError("composition needs exactly one bare nn.Linear, the logits layer, at the end of the model")
    return steps


# model → (its blocks, their parameter shapes, input shape, dtype) and the blocks' shapes: a layer plan is walked
# on every composition, overlap count and module size, and the forward pass that finds the shapes is most of its cost
_SHAPES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]]" = weakref.WeakKeyDictionary()


def _block_shapes(model: ZooNet, blocks: list[tuple[str, nn.Module]]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per-sample (input shape, output shape) of every block, from one tiny forward pass (remembered for the
    model while its blocks, their parameters' shapes, its input shape and dtype stay the same)."""
    param = next(model.parameters())
    identity = (tuple((name, module, tuple(tuple(p.shape) for p in module.parameters())) for name, module in blocks),
                tuple(model.input_shape), param.dtype)  # modules compare by identity
    known = _SHAPES.get(model)
    if known is not None and known[0] == identity:
        return dict(known[1])
    shapes = _measure_shapes(model, blocks)
    _SHAPES[model] = (identity, dict(shapes))
    return shapes


def _measure_shapes(model: ZooNet, blocks: list[tuple[str, nn.Module]]) -> dict[str, tuple[tuple[int, ...], ...]]:
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def hook_for(name: str):
        def record(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
        return record

    param = next(model.parameters())
    with hooks(forward=[(module, hook_for(name)) for name, module in blocks]), eval_mode(model), torch.no_grad():
        model(torch.zeros(1, *model.input_shape, dtype=param.dtype, device=param.device))
    return shapes


def point_units(model: nn.Module) -> dict[str, int]:
    """Number of units of every modular point (forward order): a zoo model's from its blocks' rules, a tapped
    model's from its taps, any other model's from one forward pass."""
    if isinstance(model, ZooNet):
        return _plan_units(layer_plan(model))
    taps = taps_of(model)
    if taps:
        return {name: tap.units for name, tap in taps.items()}
    from moda_core.activations import run_with_cache

    param = next(model.parameters())
    with eval_mode(model), torch.no_grad():
        _, cache = run_with_cache(model, torch.zeros(1, *model.input_shape, dtype=param.dtype, device=param.device))
    return {name: activation.shape[1] for name, activation in cache.items()}


def composition_blocker(model: nn.Module) -> str | None:
    """Why ``model`` cannot be composed (None when it can): a model fx cannot trace has no graph to slice."""
    if isinstance(model, ZooNet) or taps_of(model):
        return None
    from moda_core.graph import TraceError, trace

    try:
        with eval_mode(model):
            trace(model, _points(model), _example(model))
    except TraceError as error:
        return str(error)
    return None


def _example(model: nn.Module) -> torch.Tensor:
    param = next(model.parameters())
    return torch.zeros(2, *model.input_shape, dtype=param.dtype, device=param.device)


def _points(model: nn.Module) -> list[str]:
    return str(getattr(model, "arch", {}).get("points", "relu")).split(",")


def _plan_units(plan) -> dict[str, int]:
    return {full: step.rule.points(step.module)[point] for step in plan for point, full in step.point_names().items()}


# ----------------------------------------------------------------------------------------------
# masks

def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> int:
    """Masks must cover exactly the model's points with shape (num_classes, units); returns num_classes."""
    if isinstance(model, ZooNet):
        return _checked_plan(model, masks)[0]
    _check_points(model, masks)
    num_classes = model.arch["num_classes"]
    for point, units in point_units(model).items():
        if tuple(masks[point].shape) != (num_classes, units):
            raise ModaError(f"mask for point {point!r} has shape {tuple(masks[point].shape)}, expected "
                            f"({num_classes}, {units}) for this model: masks from another model?")
    return num_classes


def _check_points(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    points = modular_points(model)
    if set(masks) != set(points):
        missing, extra = sorted(set(points) - set(masks)), sorted(set(masks) - set(points))
        raise ModaError(f"masks do not belong to this model: missing points {missing[:4]}, "
                        f"unknown points {extra[:4]}")


def _checked_plan(model: ZooNet, masks: Mapping[str, torch.Tensor]):
    """``check_masks``, also returning the model's layer plan it traced (composition and overlap walk it)."""
    _check_points(model, masks)
    num_classes = model.arch["num_classes"]
    plan = layer_plan(model)
    for point, units in _plan_units(plan).items():
        if tuple(masks[point].shape) != (num_classes, units):
            raise ModaError(f"mask for point {point!r} has shape {tuple(masks[point].shape)}, expected "
                            f"({num_classes}, {units}) for this model: masks from another model?")
    return num_classes, plan


def union_units(masks: Mapping[str, torch.Tensor], classes: list[int]) -> dict[str, torch.Tensor]:
    """Sorted unit indices kept at each point by the union of ``classes``' modules."""
    return {p: torch.nonzero(m[classes].any(0)).flatten() for p, m in masks.items()}


# ----------------------------------------------------------------------------------------------
# composition

class ComposedModule(nn.Sequential):
    """A composed sub-task network: its logits are ``classes`` (original indices) in sorted order."""

    def __init__(self, children: "OrderedDict[str, nn.Module]", classes: list[int],
                 input_shape: tuple[int, int, int]) -> None:
        super().__init__(children)
        self.classes = list(classes)
        self.input_shape = tuple(input_shape)


def compose_module(model: nn.Module, masks: Mapping[str, torch.Tensor], classes: Iterable[int]) -> nn.Module:
    """Build the smaller network that keeps the union of ``classes``' modules (eval mode, no training): a
    ``ComposedModule`` for a zoo model, an fx ``GraphModule`` for any other (``kept_whole`` lists what the graph
    composer kept whole, and why)."""
    if not isinstance(model, ZooNet):
        num_classes = check_masks(model, masks)
        classes = check_classes(list(classes), num_classes, "composition")
        composition = compose_graph(model, masks, classes, _example(model), _points(model))
        module = composition.module
        module.classes, module.input_shape = composition.classes, tuple(model.input_shape)
        module.kept_whole = composition.report
        return module
    num_classes, plan = _checked_plan(model, masks)
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
    for step in plan:
        local = {point: kept[full] for point, full in step.point_names().items()}
        built[step.name] = step.rule.compose(step.module, feed_index(step.feed), local, classes)
    children = OrderedDict((name, _rebuild(child, name, built)) for name, child in model.named_children())
    return ComposedModule(children, classes, model.input_shape).eval()


def _rebuild(module: nn.Module, name: str, built: dict[str, nn.Module]) -> nn.Module:
    if isinstance(module, nn.Sequential):
        return nn.Sequential(OrderedDict((child_name, _rebuild(child, f"{name}.{child_name}", built))
                                         for child_name, child in module.named_children()))
    return built[name]


# ----------------------------------------------------------------------------------------------
# analytic overlap

def overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   by_layer: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Class×class counts of full-model parameters that both single-class modules keep (float64).

    The diagonal is each single-class module's own parameter count. From masks alone: for a layer
    with input mask P and output mask M, ``(P Pᵀ) ⊙ (M Mᵀ) · kernel_area + (M Mᵀ) · per-unit params``.
    With ``by_layer`` returns ``{block name: matrix}`` instead of the sum (any other model than a zoo one:
    ``{owner module: matrix}``, counted on its graph by ``graph_overlap_counts``).
    """
    if not isinstance(model, ZooNet):
        check_masks(model, masks)
        with eval_mode(model):
            return graph_overlap_counts(model, masks, _example(model), _points(model), by_layer=by_layer)
    num_classes, plan = _checked_plan(model, masks)
    float_masks = {p: m.double() for p, m in masks.items()}
    point_grams = {p: m @ m.T for p, m in float_masks.items()}  # class×class units both keep, per point

    def gram(feed: Feed) -> torch.Tensor:
        if feed.point is None:
            return torch.full((num_classes, num_classes), float(feed.units), dtype=torch.float64)
        return point_grams[feed.point] * feed.repeat

    layers: dict[str, torch.Tensor] = {}
    for step in plan:
        grams = {point: point_grams[full] for point, full in step.point_names().items()}
        shared = step.rule.shared_params(step.module, gram(step.feed), grams)
        if shared is not None:
            layers[step.name] = shared
    if by_layer:
        return layers
    return sum(layers.values())
