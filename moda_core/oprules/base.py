"""What an op rule is (``moda_core.oprules``): ``Op`` (one node as the graph reads it), the ``OpRule`` interface
with its default, an op kept whole (``WHOLE``), the nodes without units (``Untracked``: the input, parameters read
directly, sizes and shapes, the output), ``Carry`` (an op whose output units are its input's, the base of most
rules) and the small helpers every rule reads a node with."""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import fx, nn


@dataclass(frozen=True)
class Op:
    """One node as the graph reads it: its rule, its output's unit axis and units (None, 0: none known), why it is
    kept whole ("" when it is not), whether its composed tensor holds every unit, and data of the rule's own."""

    rule: OpRule
    axis: int | None = None
    size: int = 0
    whole: str = ""
    holds_all: bool = False
    data: Any = None


def describe(node: fx.Node, module: nn.Module | None = None) -> str:
    """An op in words: its module class, function or method name."""
    target = type(module).__name__ if module is not None else node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def target_name(node: fx.Node) -> str:
    """The module path (``call_module``), attribute path (``get_attr``) or method name (``call_method``) ``node``
    targets: a string for these ops, which torch's stubs type together with ``call_function``'s callables."""
    return cast(str, node.target)


def first(node: fx.Node) -> fx.Node | None:
    return node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None


def argument(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Positional argument ``index`` (the tensor itself is 0) or keyword ``name`` of a call."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def scatter_any(rows: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """K×size bool: column u is true where any column of ``rows`` that ``index`` maps to u is."""
    return torch.zeros(rows.shape[0], size).index_add_(1, index, rows.float()) > 0


def pick(tensor: torch.Tensor | None, rows: torch.Tensor | None, cols: torch.Tensor | None = None) -> Any:
    """A copy of ``tensor``'s rows and columns (None: all), detached (``index_select``: several times faster here
    than indexing with tensors)."""
    if tensor is None:
        return None
    tensor = tensor.detach()
    picked = tensor if rows is None else tensor.index_select(0, rows)
    picked = picked if cols is None else picked.index_select(1, cols)
    return tensor.clone() if picked is tensor else picked


class OpRule:
    """An op kept whole: its output holds every unit (along its first input's axis when ``carries_axis``), and it
    needs every unit of its inputs."""

    name, reason, carries_axis = "whole", "", False

    def classify(self, node: fx.Node, c: Any) -> Op:
        held, shape = c.op(first(node)), c.shape(node)
        axis = held.axis if self.carries_axis and shape == c.shape(first(node)) else None
        return Op(self, axis, shape[axis] if axis is not None else 0,
                  whole=self.reason or f"{describe(node, c.module(node))} is not a per-unit op", holds_all=True)

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return a.full(op.size)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        for source in node.all_input_nodes:
            a.need(source, None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {source: r.adapt(source, None) for source in node.all_input_nodes})

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        """Parameter name → (rows, columns) a composed copy keeps (None: all of that dim)."""
        return {}


class Untracked(OpRule):
    """A node with no units: the model's input, a parameter read directly, sizes and shapes, the output."""

    def __init__(self, name: str) -> None:
        self.name = name

    def classify(self, node: fx.Node, c: Any) -> Op:
        return Op(self, holds_all=True)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        if self.name == "output":
            a.need(node.args[0], a.logits_demand(node.args[0]))

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        if self.name == "output":
            return r.graph.output(r.adapt(node.args[0], torch.tensor(r.classes)))
        if self.name == "attr":
            return r.get_attr(node)
        source = first(node)
        asks_shape = describe(node) == "size" or (node.target is builtins.getattr and node.args[1:] == ("shape",))
        held = r.op(source) if source is not None and self.name == "meta" and asks_shape else None
        if source is not None and held is not None and held.axis is not None and r.kept(source) is not None:
            dim = argument(node, 1, "dim") if describe(node) == "size" else None  # the size the full tensor had
            return r.graph.call_function(full_size, (r.env[source.name], held.axis, held.size, dim))
        return r.copy(node, {})


def full_size(x: torch.Tensor, axis: int, units: int, dim: int | None = None) -> Any:
    """The full model's size of ``x``, which holds some of its ``units`` along ``axis``: all of it, or ``dim``."""
    shape = list(x.shape)
    shape[axis] = units
    return torch.Size(shape) if dim is None else shape[dim]


fx.wrap("full_size")


class Carry(OpRule):
    """An op whose output units are its input's, each computed from its own input unit; zero stays zero."""

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return a.support_of(first(node)).clone()

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        a.need(first(node), mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {first(node): r.adapt(first(node), r.kept(node))})


WHOLE, INPUT, ATTR, OUTPUT, META = OpRule(), Untracked("input"), Untracked("attr"), Untracked("output"), \
    Untracked("meta")
