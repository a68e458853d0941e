"""Op rules for the ops that keep a tensor's shape (``moda_core.oprules``): norms and softmax (kept whole, their
units stay on their axis), elementwise ops of one tensor (activations, dropout, casts), activation points, and
``+ - * /`` of tensors that broadcast."""
from __future__ import annotations

from typing import Any

import torch
from torch import fx

from moda_core.oprules.base import WHOLE, Carry, Op, OpRule, describe, first


class Norm(OpRule):
    """An op that mixes the units (layer norm, softmax): kept whole, its units stay on their axis."""

    carries_axis = True

    def __init__(self, reason: str) -> None:
        self.name, self.reason = "norm", reason


class PerUnit(Carry):
    """An elementwise op of one tensor (an activation, dropout, a cast) that keeps its shape; whether zero stays
    zero is asked of the op itself, with its arguments (``maps_zero_to_zero``: Hardtanh(0.1, 4) does not)."""

    name = "per-unit"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held = c.op(first(node))
        if first(node) is None or len(node.all_input_nodes) > 1 or c.shape(node) != c.shape(first(node)):
            return WHOLE.classify(node, c)
        return Op(self, holds_all=True) if held.axis is None else \
            Op(self, held.axis, held.size, data=c.maps_zero_to_zero(node))

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return super().support(node, op, a) if op.data else a.full(op.size)


class Point(PerUnit):
    """An activation point: its units outside the point's mask are zeroed. With a declared axis its input does not
    carry, the input is read whole and the point's units picked after the op."""

    name = "point"

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return super().support(node, op, a) & a.mask(node) if self.aligned(node, op, a) else a.mask(node).clone()

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        a.need(first(node), mine & a.mask(node) if self.aligned(node, op, a) and mine is not None else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        if self.aligned(node, op, r):
            return super().rewrite(node, op, r)
        new = r.copy(node, {first(node): r.adapt(first(node), None)})
        return r.adapt_new(new, None, r.kept(node), op.size, op.axis)

    @staticmethod
    def aligned(node: fx.Node, op: Op, c: Any) -> bool:
        held = c.op(first(node))
        return (held.axis, held.size) == (op.axis, op.size)


class Binary(OpRule):
    """``+ - * /`` of tensors (and numbers) that broadcast: the units lie on one axis of the output; a sum's
    support is its operands' union, a product's their intersection, a quotient's its numerator's."""

    name = "binary"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def classify(self, node: fx.Node, c: Any) -> Op:
        shape = c.shape(node)
        axes = {(c.op(s).axis + len(shape) - len(c.shape(s)), c.op(s).size) for s in node.all_input_nodes
                if c.op(s).axis is not None and c.shape(s)[c.op(s).axis] > 1}
        if len(axes) != 1:  # no operand with units, or a stream plus a branch whose features lie elsewhere
            return Op(self, holds_all=True)
        axis, size = axes.pop()
        if shape[axis] != size:
            return Op(self, whole=f"{describe(node)} broadcasts the units", holds_all=True)
        numbers = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, (int, float))]
        return Op(self, axis, size, data=numbers)

    @staticmethod
    def aligned(node: fx.Node, source: fx.Node, op: Op, c: Any) -> int | None:
        """The dim of ``source`` that lines up with the output's units (None: it broadcasts there)."""
        if op.axis is None:  # no units: nothing to line up with
            return None
        shape = c.shape(source)
        dim = op.axis - (len(c.shape(node)) - len(shape))
        return dim if dim >= 0 and shape[dim] == op.size else None

    def tracked(self, node: fx.Node, source: fx.Node, op: Op, c: Any) -> bool:
        """Whether ``source`` lines up with the output's units on its own unit axis and holds only some of them."""
        held = c.op(source)
        return held.axis is not None and self.aligned(node, source, op, c) == held.axis and not held.holds_all

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        parts = {s: a.support_of(s) if self.tracked(node, s, op, a) else a.full(op.size) for s in node.all_input_nodes}
        if self.kind == "add":
            return a.full(op.size) if any(op.data) else torch.stack(list(parts.values())).any(0)
        if self.kind == "mul":
            return torch.stack(list(parts.values())).all(0)
        return parts[node.args[0]].clone() if isinstance(node.args[0], fx.Node) else a.full(op.size)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        for source in node.all_input_nodes:
            a.need(source, mine if self.tracked(node, source, op, a) else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        dims = {s: self.aligned(node, s, op, r) for s in node.all_input_nodes}
        return r.copy(node, {s: r.adapt(s, None if d is None else r.kept(node), d) for s, d in dims.items()})


PER_UNIT, POINT = PerUnit(), Point()
