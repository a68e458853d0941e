"""Composition rules, one per block type, registered once (docs/design.md, Composition and its exactness
contract; Weight overlap).

A zoo model is ``nn.Sequential`` containers around *blocks* (leaf modules). For every block type a
``BlockRule`` says:

- ``points(block)``: the modular activation points the block produces (relative name → units), in
  forward order — what mask checks look for;
- ``feed_after(...)``: what feeds the next block (by default the block's last point, its *output point*);
- ``compose(block, inp, kept, classes)``: the block's smaller copy, keeping input units ``inp`` and, at
  each of its points, the units ``kept[relative point]``;
- ``shared_params(block, feed_gram, grams)``: the class×class count of the block's parameters that two
  single-class modules both keep, from the Gram matrices of the masks (weight overlap, analytic).

``compose.compose_module``, ``compose.check_masks`` and ``compose.overlap_counts`` loop over a model's
blocks and ask ``rule_for(block)``. A new block type is one ``@register_rule(BlockType)`` next to the
block's definition (see ``models/blocks.py``); lookup follows the class's MRO, so a subclass that
needs a different rule registers its own. This module also holds the generic rules for torch's own
layers that zoo models use between blocks (pools, flatten, the final logits ``nn.Linear``) and the
slicing helpers rules share. It imports no model code, so model modules can register their rules.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

import torch
from torch import nn

from moda_core.errors import ModaError


@dataclass(frozen=True)
class Feed:
    """What feeds a block: the units of ``point`` (None: every unit is kept, e.g. the model input or a
    residual stream kept whole), each repeated ``repeat`` times consecutively (a conv→FC flatten
    spreads every channel over its spatial positions)."""

    point: str | None
    units: int
    repeat: int = 1


class BlockRule:
    """How composition, mask checks and overlap treat one block type (override what differs)."""

    is_head = False  # the logits layer (exactly one, at the end of a model)

    def points(self, block: nn.Module) -> dict[str, int]:
        """Relative name → number of units of each modular point the block produces, in forward order."""
        return {}

    def output_point(self, block: nn.Module) -> str | None:
        """The point whose units feed the next block (default: the last one); None: no point of its own."""
        points = self.points(block)
        return list(points)[-1] if points else None

    def feed_after(self, block: nn.Module, name: str, feed: Feed, in_shape: tuple[int, ...],
                   out_shape: tuple[int, ...]) -> Feed:
        """What feeds the next block, from this block's ``feed`` and its per-sample input/output shapes."""
        point = self.output_point(block)
        if point is None:
            return feed
        return Feed(f"{name}.{point}", self.points(block)[point])

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        """The block's smaller copy: input units ``inp`` (sorted indices), ``kept[point]`` at its points."""
        raise NotImplementedError

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Class×class count (float64) of the block's parameters that two single-class modules both keep.

        ``feed_gram[i, j]``: input units both classes keep; ``grams[point][i, j]``: units both keep at each
        of the block's points (``M Mᵀ``). None: the block has no parameters to count."""
        raise NotImplementedError

    def extra_parts(self, block: nn.Module, inp: torch.Tensor,
                    kept: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
        """The hook through which a training method's variant of a block (e.g. MwT's gates) adds its sliced
        extra parts to the composed block: constructor keyword → module. None by default."""
        return {}

    @staticmethod
    def with_extras(state: dict, extras: Mapping[str, nn.Module]) -> dict:
        """``state`` (a composed block's state dict) with the extra parts' tensors under their keywords."""
        for key, part in extras.items():
            state.update(prefixed(key, part.state_dict()))
        return state


RULES: dict[type, BlockRule] = {}
R = TypeVar("R", bound=type)


def register_rule(*block_types: type) -> Callable[[R], R]:
    """Class decorator: register an instance of the decorated ``BlockRule`` subclass for ``block_types``."""
    def register(rule_class: R) -> R:
        rule = rule_class()
        for block_type in block_types:
            RULES[block_type] = rule
        return rule_class
    return register


def rule_for(block: nn.Module) -> BlockRule | None:
    """The rule registered for ``block``'s class or its nearest registered base class (None: none)."""
    for cls in type(block).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


# ----------------------------------------------------------------------------------------------
# helpers shared by rules

def materialise(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Call a block's real constructor without allocating or initialising weights (on the meta device),
    then give it ``state`` (its complete state dict: parameters and buffers) as its tensors."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    return module


def prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for key, value in state.items()}


def conv_state(conv: nn.Conv2d, out: torch.Tensor, inp: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Weights of ``conv`` keeping output channels ``out`` and input channels ``inp`` (None: depthwise)."""
    weight = conv.weight.detach()[out]
    if inp is not None:
        weight = weight[:, inp]
    state = {"weight": weight}
    if conv.bias is not None:
        state["bias"] = conv.bias.detach()[out]
    return state


def bn_state(bn: nn.BatchNorm2d, out: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"weight": bn.weight.detach()[out], "bias": bn.bias.detach()[out], "running_mean": bn.running_mean[out],
            "running_var": bn.running_var[out], "num_batches_tracked": bn.num_batches_tracked}


def linear_state(linear: nn.Linear, out: torch.Tensor, inp: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {"weight": linear.weight.detach()[out][:, inp]}
    if linear.bias is not None:
        state["bias"] = linear.bias.detach()[out]
    return state


def conv_shared(conv: nn.Conv2d, feed_gram: torch.Tensor, out_gram: torch.Tensor, per_unit: int) -> torch.Tensor:
    """Shared parameters of a conv (plus ``per_unit`` parameters per output channel, e.g. batch norm's 2)."""
    area = conv.kernel_size[0] * conv.kernel_size[1]
    per_unit += 0 if conv.bias is None else 1
    if conv.groups == 1:
        return feed_gram * out_gram * area + out_gram * per_unit
    return out_gram * (area + per_unit)  # depthwise: one input channel per output channel


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# torch's own layers between blocks

@register_rule(nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Dropout)
class PassThrough(BlockRule):
    """No parameters, units unchanged: copied as is."""

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        return copy.deepcopy(block)

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return None


@register_rule(nn.Flatten)
class FlattenRule(PassThrough):
    """C×H×W → C·H·W: every unit of the feed is repeated over the spatial positions."""

    def feed_after(self, block: nn.Module, name: str, feed: Feed, in_shape: tuple[int, ...],
                   out_shape: tuple[int, ...]) -> Feed:
        spatial = 1
        for size in in_shape[1:]:
            spatial *= size
        return Feed(feed.point, feed.units * spatial, feed.repeat * spatial)


class KeepWhole(BlockRule):
    """A block kept whole in every module (e.g. a transformer's embedding or final norm): copied as is,
    all its parameters shared by every pair of classes. Its input must be kept whole too, and what it
    feeds is kept whole (``Feed(None, units on dim 1 of its output)``). Register it for such types."""

    def feed_after(self, block: nn.Module, name: str, feed: Feed, in_shape: tuple[int, ...],
                   out_shape: tuple[int, ...]) -> Feed:
        if feed.point is not None:
            raise ModaError(f"block {name!r} ({type(block).__name__}) is kept whole, so its input must be too, "
                            f"but point {feed.point!r} feeds it")
        return Feed(None, out_shape[0] if out_shape else 1)

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        return copy.deepcopy(block)

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        count = parameter_count(block)
        return torch.full_like(feed_gram, float(count)) if count else None


@register_rule(nn.Linear)
class LogitsRule(BlockRule):
    """The final bare ``nn.Linear``: keeps the target classes' rows, in sorted order."""

    is_head = True

    def feed_after(self, block: nn.Module, name: str, feed: Feed, in_shape: tuple[int, ...],
                   out_shape: tuple[int, ...]) -> Feed:
        return Feed("logits", block.out_features)

    def compose(self, block: nn.Module, inp: torch.Tensor, kept: Mapping[str, torch.Tensor],
                classes: list[int]) -> nn.Module:
        out = torch.tensor(classes, device=block.weight.device)
        return materialise(lambda: nn.Linear(len(inp), len(out), bias=block.bias is not None),
                           linear_state(block, out, inp))

    def shared_params(self, block: nn.Module, feed_gram: torch.Tensor,
                      grams: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        eye = torch.eye(feed_gram.shape[0], dtype=feed_gram.dtype)
        return feed_gram * eye + eye * (block.bias is not None)

