"""Op rules for the layers with weights (``moda_core.oprules``): convolutions, linear layers and batch norm; each
rule's ``rewrite`` builds the smaller layer a composed module calls and its ``uses`` says which rows and columns of
each parameter that layer keeps."""
from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from moda_core.oprules.base import Carry, Op, OpRule, first, pick


class Conv(OpRule):
    """``nn.Conv1d/2d/3d``: its output channels (dim 1) are its units. A dense conv reads every input channel (only
    those its input holds), a depthwise conv's channel only its own; other grouped convs are kept whole."""

    name = "conv"

    def classify(self, node: fx.Node, c: Any) -> Op:
        module, units = c.module(node), c.shape(node)[1]
        if module.groups == 1:
            return Op(self, 1, units, data="dense")
        if module.groups == module.in_channels == module.out_channels and c.op(first(node)).axis in (1, None):
            return Op(self, 1, units, data="depthwise")
        return Op(self, 1, units, whole=f"grouped convolution (groups={module.groups})", holds_all=True)

    def reads(self, node: fx.Node, op: Op, c: Any) -> bool:
        """Whether the copy keeps only the input units its input holds (its weight's columns)."""
        held = c.op(first(node))
        return op.data == "dense" and held.axis == 1 and not held.holds_all

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        held = a.op(first(node))
        if op.data == "dense" or a.module(node).bias is not None or held.axis != 1 or held.holds_all:
            return a.full(op.size)
        return a.support_of(first(node)).clone()

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        a.need(first(node), mine if op.data == "depthwise" else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        outputs, inputs = r.sliced(node)
        module = r.module(node)
        weight = pick(module.weight, outputs, inputs)
        sliced = r.sliced_module(module, {"weight": weight, "bias": pick(module.bias, outputs)},
                                 **self.sizes(weight, op))
        return r.call_sliced(node, sliced, r.adapt(first(node), outputs if op.data == "depthwise" else inputs))

    @staticmethod
    def sizes(weight: torch.Tensor, op: Op) -> dict[str, int]:
        """The sliced layer's size attributes, read from its sliced weight."""
        depthwise = op.data == "depthwise"
        return {"out_channels": len(weight), "in_channels": weight.shape[1] * (len(weight) if depthwise else 1),
                "groups": len(weight) if depthwise else 1}

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        return {"weight": (rows, cols), "bias": (rows, None)}


class Linear(Conv):
    """``nn.Linear``: its outputs (the last dim) are its units; it reads every input feature (only those its input
    holds, when its features are the input's units)."""

    name = "linear"

    def classify(self, node: fx.Node, c: Any) -> Op:
        return Op(self, len(c.shape(node)) - 1, c.shape(node)[-1], data="dense")

    def reads(self, node: fx.Node, op: Op, c: Any) -> bool:
        held = c.op(first(node))
        return held.axis == len(c.shape(first(node))) - 1 and not held.holds_all

    support = OpRule.support  # a linear layer's output is non-zero anywhere

    @staticmethod
    def sizes(weight: torch.Tensor, op: Op) -> dict[str, int]:
        return {"out_features": weight.shape[0], "in_features": weight.shape[1]}


class BatchNorm(Carry):
    """``nn.BatchNorm1d/2d/3d`` in eval mode: a per-channel affine map of dim 1 (its shift makes zeros non-zero);
    over a tensor whose units are elsewhere it is kept whole."""

    name = "batch norm"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held = c.op(first(node))
        if held.axis not in (1, None):
            return Op(self, held.axis, held.size, whole="batch norm over a dim that is not the units", holds_all=True)
        return Op(self, 1, held.size) if held.axis == 1 else Op(self, holds_all=True)

    support = OpRule.support  # its shift makes a zero unit non-zero

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        outputs, _ = r.sliced(node)
        module = r.module(node)
        state = {key: pick(value, outputs if value is not None and value.dim() else None)
                 for key, value in [*module._parameters.items(), *module._buffers.items()]}
        sliced = r.sliced_module(module, state, num_features=op.size if outputs is None else len(outputs))
        return r.call_sliced(node, sliced, r.adapt(first(node), outputs))

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        return {name: (rows, None) for name, _ in module.named_parameters(recurse=False)}
