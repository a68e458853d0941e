"""Op rules: how units flow through each op of a network's graph (docs/design.md, The graph).

A tensor's *unit axis* holds its features: it starts at the layer that produces them (a convolution's output
channels, dim 1; a linear layer's outputs, the last dim) and moves with permutes, reshapes, slices and reductions;
norms and elementwise ops keep it. One ``OpRule`` per kind of op says, each in a short method, where its output's
units are (``classify`` → ``Op``), which can be non-zero in the masked full model (``support``, K mask rows at
once), which units of its inputs it needs (``demand``), how its composed copy reads only what its inputs hold
(``rewrite``) and, for a layer with weights, which rows and columns of each parameter a copy keeps (``uses``).
An op no rule knows is kept whole: exact, only not smaller, and reported with the reason. ``register_op`` adds a
rule for module classes, functions or method names; a module class outside torch that gets a rule is one op of the
graph (tracing does not enter it: MwT's gate, docs/extending.md's example).
"""
from __future__ import annotations

import builtins
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        for source in node.all_input_nodes:
            a.need(source, None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {source: r.adapt(source, None) for source in node.all_input_nodes})

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        """Parameter name → (rows, columns) a composed copy keeps (None: all of that dim)."""
        return {}


class Norm(OpRule):
    """An op that mixes the units (layer norm, softmax): kept whole, its units stay on their axis."""

    carries_axis = True

    def __init__(self, reason: str) -> None:
        self.name, self.reason = "norm", reason


class Untracked(OpRule):
    """A node with no units: the model's input, a parameter read directly, sizes and shapes, the output."""

    def __init__(self, name: str) -> None:
        self.name = name

    def classify(self, node: fx.Node, c: Any) -> Op:
        return Op(self, holds_all=True)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        if self.name == "output":
            a.need(node.args[0], a.logits_demand(node.args[0]))

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        if self.name == "output":
            return r.graph.output(r.adapt(node.args[0], torch.tensor(r.classes)))
        if self.name == "attr":
            return r.get_attr(node)
        source = first(node)
        held = r.op(source) if source is not None else None
        asks_shape = describe(node) == "size" or (node.target is builtins.getattr and node.args[1:] == ("shape",))
        if self.name == "meta" and asks_shape and held.axis is not None and r.kept(source) is not None:
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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        a.need(first(node), mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {first(node): r.adapt(first(node), r.kept(node))})


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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        a.need(first(node), mine & a.mask(node) if self.aligned(node, op, a) else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        if self.aligned(node, op, r):
            return super().rewrite(node, op, r)
        new = r.copy(node, {first(node): r.adapt(first(node), None)})
        return r.adapt_new(new, None, r.kept(node), op.size, op.axis)

    @staticmethod
    def aligned(node: fx.Node, op: Op, c: Any) -> bool:
        held = c.op(first(node))
        return (held.axis, held.size) == (op.axis, op.size)


class Pool(Carry):
    """Pooling over the positions of a tensor whose units are on dim 1."""

    name = "pool"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held = c.op(first(node))
        if held.axis != 1 or getattr(c.module(node), "return_indices", False) or argument(node, 6, "return_indices"):
            return Op(self, holds_all=True) if held.axis is None else WHOLE.classify(node, c)
        return Op(self, 1, held.size)


class Reduce(Carry):
    """``mean``/``sum``/``amax``/``amin`` over dims other than the units."""

    name = "reduce"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held, rank = c.op(first(node)), len(c.shape(first(node)))
        dims, keep = argument(node, 1, "dim"), argument(node, 2, "keepdim", False)
        if held.axis is None or not isinstance(dims, (int, tuple, list)):
            return Op(self, holds_all=True) if held.axis is None else WHOLE.classify(node, c)
        dims = {d % rank for d in ((dims,) if isinstance(dims, int) else dims)}
        if held.axis in dims:
            return Op(self, whole=f"{describe(node)} over the units", holds_all=True)
        return Op(self, held.axis if keep else held.axis - sum(d < held.axis for d in dims), held.size)


class Permute(Carry):
    """``transpose``, ``permute``, ``movedim``: the unit axis moves with its dim."""

    name = "permute"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held, rank = c.op(first(node)), len(c.shape(first(node)))
        order, name = list(range(rank)), describe(node)
        if name in ("transpose", "swapaxes", "swapdims"):
            a, b = argument(node, 1, "dim0") % rank, argument(node, 2, "dim1") % rank
            order[a], order[b] = b, a
        elif name == "permute":
            dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
            order = [d % rank for d in dims or node.kwargs["dims"]]
        else:  # movedim of one dim
            source, destination = argument(node, 1, "source") % rank, argument(node, 2, "destination") % rank
            order.remove(source)
            order.insert(destination, source)
        return Op(self, holds_all=True) if held.axis is None else Op(self, order.index(held.axis), held.size)


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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        for source in node.all_input_nodes:
            a.need(source, mine if self.tracked(node, source, op, a) else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        dims = {s: self.aligned(node, s, op, r) for s in node.all_input_nodes}
        return r.copy(node, {s: r.adapt(s, None if d is None else r.kept(node), d) for s, d in dims.items()})


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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        a.need(first(node), mine if op.data == "depthwise" else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        outputs, inputs = r.sliced(node)
        depthwise, module = op.data == "depthwise", r.module(node)
        weight = pick(module.weight, outputs, inputs)
        attributes = {"out_channels": len(weight), "in_channels": weight.shape[1] * (len(weight) if depthwise else 1),
                      "groups": len(weight) if depthwise else 1}
        sliced = r.sliced_module(module, {"weight": weight, "bias": pick(module.bias, outputs)}, **attributes)
        return r.call_sliced(node, sliced, r.adapt(first(node), outputs if depthwise else inputs))

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

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return a.full(op.size)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        outputs, inputs = r.sliced(node)
        module = r.module(node)
        weight = pick(module.weight, outputs, inputs)
        sliced = r.sliced_module(module, {"weight": weight, "bias": pick(module.bias, outputs)},
                                 out_features=weight.shape[0], in_features=weight.shape[1])
        return r.call_sliced(node, sliced, r.adapt(first(node), inputs))


class BatchNorm(Carry):
    """``nn.BatchNorm1d/2d/3d`` in eval mode: a per-channel affine map of dim 1 (its shift makes zeros non-zero);
    over a tensor whose units are elsewhere it is kept whole."""

    name = "batch norm"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held = c.op(first(node))
        if held.axis not in (1, None):
            return Op(self, held.axis, held.size, whole="batch norm over a dim that is not the units", holds_all=True)
        return Op(self, 1, held.size) if held.axis == 1 else Op(self, holds_all=True)

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return a.full(op.size)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        outputs, _ = r.sliced(node)
        module = r.module(node)
        state = {key: pick(value, outputs if value is not None and value.dim() else None)
                 for key, value in [*module._parameters.items(), *module._buffers.items()]}
        sliced = r.sliced_module(module, state, num_features=op.size if outputs is None else len(outputs))
        return r.call_sliced(node, sliced, r.adapt(first(node), outputs))

    def uses(self, module: nn.Module, rows: Any, cols: Any) -> dict[str, tuple[Any, Any]]:
        return {name: (rows, None) for name, _ in module.named_parameters(recurse=False)}


def regroup(x: torch.Tensor, groups: tuple) -> torch.Tensor:
    """``x`` reshaped group by group: (input dims, output sizes with at most one None, which takes what those input
    dims hold). It follows the tensor's own sizes, so a composed tensor with fewer units, and any batch size,
    reshapes as the full one did."""
    shape: list[Any] = []
    for dims, sizes in groups:
        total, known = math.prod(x.shape[d] for d in dims), math.prod(s for s in sizes if s is not None)
        shape += [total // known if s is None else s for s in sizes]
    return x.reshape(shape)


fx.wrap("regroup")


def dim_groups(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Runs of consecutive dims of shapes ``a`` and ``b`` whose sizes multiply to the same number, in order (a dim of
    size 1 forms a run of its own where it can); None when the shapes do not line up."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and a[i] == 1 and (j >= len(b) or b[j] != 1):
            groups, i = groups + [([i], [])], i + 1
        elif j < len(b) and b[j] == 1 and (i >= len(a) or a[i] != 1):
            groups, j = groups + [([], [j])], j + 1
        elif i >= len(a) or j >= len(b):
            return None
        else:
            ga, gb, pa, pb, i, j = [i], [j], a[i], b[j], i + 1, j + 1
            while pa != pb:
                if pa < pb and i < len(a):
                    ga, pa, i = ga + [i], pa * a[i], i + 1
                elif pb < pa and j < len(b):
                    gb, pb, j = gb + [j], pb * b[j], j + 1
                else:
                    return None
            groups.append((ga, gb))
    return groups


class Reshape(OpRule):
    """``view``, ``reshape``, ``flatten``, ``squeeze``, ``unsqueeze``, ``unflatten``: the unit axis follows its dim;
    merged with others (a conv map flattened for a linear layer) each unit becomes ``inner`` consecutive features,
    the pattern repeated ``outer`` times. A reshape that splits the units (heads, a channel shuffle) is kept whole."""

    name = "reshape"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held, before, after = c.op(first(node)), c.shape(first(node)), c.shape(node)
        groups = dim_groups(before, after)
        if groups is None:
            return WHOLE.classify(node, c)
        spec = tuple((tuple(ga), tuple(None if d == next((e for e in gb if after[e] != 1), None) else after[d]
                                       for d in gb)) for ga, gb in groups)
        if held.axis is None:
            return Op(self, holds_all=True)
        ga, gb = next(g for g in groups if held.axis in g[0])
        wide = [d for d in gb if after[d] != 1]
        if len(wide) != 1:
            return Op(self, whole="reshape that splits the units (attention heads, a channel shuffle)", holds_all=True)
        outer = math.prod(before[d] for d in ga if d < held.axis)
        inner = math.prod(before[d] for d in ga if d > held.axis)
        return Op(self, wide[0], after[wide[0]], data=(spec, outer, inner))

    @staticmethod
    def unit_of(op: Op, units: int) -> torch.Tensor:
        """The input unit behind each output feature."""
        return (torch.arange(op.size) // op.data[2]) % units

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        source = a.support_of(first(node))
        return source[:, self.unit_of(op, source.shape[1])]

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        units = a.op(first(node)).size
        a.need(first(node), scatter_any(mine, self.unit_of(op, units), units))

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        source, kept, (spec, outer, inner) = first(node), r.kept(node), op.data
        units = r.op(source).size
        wanted = None if kept is None else torch.unique(self.unit_of(op, units)[kept])
        new = r.graph.call_function(regroup, (r.adapt(source, wanted), spec))
        if kept is None or outer * inner == 1:
            return new
        per_unit = (wanted[:, None] * inner + torch.arange(inner)).flatten()
        produced = (torch.arange(outer)[:, None] * (units * inner) + per_unit[None]).flatten()
        return r.adapt_new(new, produced, kept, op.size, op.axis)


def index_entries(index: Any, rank: int) -> list[tuple[Any, int | None]] | None:
    """A tensor index of ints, slices, None and ``...`` as (entry, input dim or None for a new dim), every input dim
    covered; None for any other index."""
    entries = list(index) if isinstance(index, tuple) else [index]
    plain = lambda v: v is None or isinstance(v, int)  # noqa: E731
    if not all(e is None or e is Ellipsis or isinstance(e, int) or isinstance(e, slice) and plain(e.start)
               and plain(e.stop) and plain(e.step) for e in entries):
        return None
    used = sum(e is not None and e is not Ellipsis for e in entries)
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries[at:at + 1] = [slice(None)] * (rank - used)
    entries += [slice(None)] * (rank - sum(e is not None for e in entries))
    dims = [sum(e is not None for e in entries[:k]) for k in range(len(entries))]
    return [(entry, None if entry is None else dim) for entry, dim in zip(entries, dims, strict=True)]


class Getitem(OpRule):
    """``x[...]`` and ``narrow``: a slice of the unit axis keeps those units, other entries move the axis; an item
    of a ``chunk``/``split`` is a ``Piece``."""

    name = "select"

    def classify(self, node: fx.Node, c: Any) -> Op:
        source = first(node)
        if isinstance(c.op(source).rule, Split):
            return SPLIT.piece(node, c)
        held, before = c.op(source), c.shape(source)
        if not isinstance(before, tuple):  # an item of a module's tuple output (attention's, say)
            return Op(self, holds_all=True)
        entries = self.entries(node, before)
        if entries is None:
            return WHOLE.classify(node, c)
        if held.axis is None:
            return Op(self, holds_all=True)
        entry = next(e for e, d in entries if d == held.axis)
        if isinstance(entry, int):
            return Op(self, whole="indexing one unit", holds_all=True)
        axis = sum(not isinstance(e, int) for e, d in entries[:[d for _, d in entries].index(held.axis)])
        picked = torch.arange(held.size)[entry]
        return Op(self, axis, len(picked), data=(entries, picked))

    @staticmethod
    def entries(node: fx.Node, shape: tuple) -> list | None:
        if describe(node) != "narrow":
            return index_entries(node.args[1], len(shape))
        dim, start, length = argument(node, 1, "dim"), argument(node, 2, "start"), argument(node, 3, "length")
        if not all(isinstance(v, int) for v in (dim, start, length)):
            return None
        index = [slice(None)] * len(shape)
        index[dim % len(shape)] = slice(start % shape[dim % len(shape)], start % shape[dim % len(shape)] + length)
        return index_entries(tuple(index), len(shape))

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        return a.support_of(first(node))[:, op.data[1]]

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        a.need(first(node), scatter_any(mine, op.data[1], a.op(first(node)).size))

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        (entries, picked), source, kept = op.data, first(node), r.kept(node)
        axis = r.op(source).axis
        held = r.adapt(source, picked if kept is None else picked[kept], axis)
        index = tuple(slice(None) if dim == axis else entry for entry, dim in entries)
        return r.graph.call_function(operator.getitem, (held, index))


class Split(OpRule):
    """``chunk``/``split``: a tuple of pieces (``Piece``). Pieces of the unit axis are picked from the input
    directly; pieces along another dim carry the units."""

    name = "split"

    def classify(self, node: fx.Node, c: Any) -> Op:
        held, shape = c.op(first(node)), c.shape(first(node))
        if held.axis is None:
            return Op(self, holds_all=True)
        dim = argument(node, 2, "dim", 0) % len(shape)
        sizes = [s[dim] for s in c.shape(node)]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        return Op(self, held.axis, held.size, data=(dim, [range(s, s + n) for s, n in zip(starts, sizes, strict=True)]))

    def piece(self, node: fx.Node, c: Any) -> Op:
        split = c.op(first(node))
        if split.data is None:
            return Op(GETITEM, holds_all=True)
        dim, ranges = split.data
        picked = torch.tensor(ranges[node.args[1]]) if dim == split.axis else None
        return Op(PIECE, split.axis, split.size if picked is None else len(picked), data=picked)

    support = Carry.support

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        a.need(first(node), mine if op.data[0] != op.axis else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {first(node): r.adapt(first(node), r.kept(node) if op.data[0] != op.axis else None)})


class Piece(OpRule):
    """``pieces[i]`` of a ``Split``."""

    name = "piece"

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        whole = a.support_of(first(node))
        return whole[:, op.data] if op.data is not None else whole.clone()

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        units = a.op(first(node)).size
        a.need(first(node), scatter_any(mine, op.data, units) if op.data is not None else mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        split, kept = first(node), r.kept(node)
        if op.data is not None:  # a piece of the units: picked from the split's input
            return r.adapt(first(split), op.data if kept is None else op.data[kept], op.axis)
        return r.adapt_new(r.copy(node, {}), r.kept(split), kept, op.size, op.axis)


class Cat(OpRule):
    """``torch.cat``: along the unit axis the units follow each other; along another dim every input carries the
    same units. An input without units of its own (a class token) is read whole."""

    name = "cat"

    def classify(self, node: fx.Node, c: Any) -> Op:
        tensors, shape = node.args[0], c.shape(node)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
            return WHOLE.classify(node, c)
        axes = {c.op(t).axis for t in tensors} - {None}
        if len(axes) != 1:
            return Op(self, holds_all=True) if not axes else \
                Op(self, whole="concatenation of tensors whose units lie on different axes", holds_all=True)
        axis = axes.pop()
        along = argument(node, 1, "dim", 0) % len(shape) == axis
        return Op(self, axis, shape[axis], data=(along, [c.shape(t)[axis] for t in tensors]))

    @staticmethod
    def parts(node: fx.Node, op: Op) -> list[tuple[fx.Node, slice, int]]:
        along, widths = op.data
        starts = [sum(widths[:k]) if along else 0 for k in range(len(widths))]
        return [(t, slice(s, s + w), w) for t, s, w in zip(node.args[0], starts, widths, strict=True)]

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        parts = [a.support_of(t) if a.op(t).axis is not None else a.full(w) for t, _, w in self.parts(node, op)]
        return torch.cat(parts, 1) if op.data[0] else torch.stack(parts).any(0)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor) -> None:
        for t, part, _ in self.parts(node, op):
            a.need(t, mine[:, part] if op.data[0] else mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        kept, replace = r.kept(node), {}
        for t, part, _ in self.parts(node, op):
            wanted = kept if not op.data[0] or kept is None else \
                kept[(kept >= part.start) & (kept < part.stop)] - part.start
            replace[t] = r.adapt(t, wanted, op.axis)
        return r.copy(node, replace)


# ----------------------------------------------------------------------------------------------
# the registry

MODULE_RULES: dict[type, OpRule] = {}
FUNCTION_RULES: dict[Callable, OpRule] = {}
METHOD_RULES: dict[str, OpRule] = {}
NAMED_RULES: dict[str, OpRule] = {}  # functions of optional packages, as "module.function" (nothing imported)


def register_op(rule: OpRule, *targets: type | Callable | str) -> OpRule:
    """Use ``rule`` for these module classes (and subclasses), functions, method names and functions named
    ``"package.module.function"``. A module class outside torch becomes one op of the graph."""
    for target in targets:
        if isinstance(target, str):
            (NAMED_RULES if "." in target else METHOD_RULES)[target] = rule
        elif isinstance(target, type) and issubclass(target, nn.Module):
            MODULE_RULES[target] = rule
        else:
            FUNCTION_RULES[target] = rule
    return rule


def rule_for(node: fx.Node, module: nn.Module | None = None) -> OpRule:
    """The rule of one node (``module``: what a ``call_module`` node calls)."""
    if node.op in ("placeholder", "get_attr", "output"):
        return {"placeholder": INPUT, "get_attr": ATTR, "output": OUTPUT}[node.op]
    if node.op == "call_module":
        return next((MODULE_RULES[cls] for cls in type(module).__mro__ if cls in MODULE_RULES), WHOLE)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target, WHOLE)
    try:
        found = FUNCTION_RULES.get(node.target)
    except TypeError:  # an unhashable target
        return WHOLE
    return found or NAMED_RULES.get(f"{getattr(node.target, '__module__', '')}.{describe(node)}", WHOLE)


def acting(op: Op) -> OpRule:
    """The rule that walks and rewrites a node: its own, or, for an op kept whole or a tensor without known units,
    the whole-op rule (it reads its inputs whole and is copied as it is)."""
    return op.rule if op.axis is not None and not op.whole or isinstance(op.rule, Untracked) else WHOLE


def leaf_modules() -> list[type]:
    """Module classes outside torch with a rule of their own: tracing keeps each of them one op."""
    return [cls for cls in MODULE_RULES if not cls.__module__.startswith("torch.")]


WHOLE, INPUT, ATTR, OUTPUT, META = OpRule(), Untracked("input"), Untracked("attr"), Untracked("output"), \
    Untracked("meta")
PER_UNIT, POINT, GETITEM, SPLIT, PIECE = PerUnit(), Point(), Getitem(), Split(), Piece()
register_op(PER_UNIT, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
            nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Tanhshrink,
            nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.LogSigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
            nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
            F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
            F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.softplus, F.softsign,
            F.tanhshrink, F.hardshrink, F.softshrink, F.threshold, F.logsigmoid, F.dropout, F.dropout1d, F.dropout2d,
            F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, torch.clamp, torch.clip, torch.clamp_min,
            torch.clamp_max, torch.abs, torch.neg, operator.neg, torch.exp, torch.square, torch.sqrt,
            "relu", "sigmoid", "tanh", "clamp", "clip", "clamp_min", "clamp_max", "abs", "neg", "exp", "square",
            "sqrt", "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type",
            "torchvision.ops.stochastic_depth.stochastic_depth")
register_op(Binary("add"), operator.add, operator.sub, torch.add, torch.sub, "add", "sub")
register_op(Binary("mul"), operator.mul, torch.mul, "mul")
register_op(Binary("div"), operator.truediv, torch.div, torch.true_divide, "div", "true_divide")
register_op(Conv(), nn.Conv1d, nn.Conv2d, nn.Conv3d)
register_op(Linear(), nn.Linear)
register_op(BatchNorm(), nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
register_op(Norm("layer norm normalises over the units"), nn.LayerNorm, F.layer_norm,
            *([nn.RMSNorm, F.rms_norm] if hasattr(nn, "RMSNorm") else []))
register_op(Norm("group norm normalises over groups of units"), nn.GroupNorm, F.group_norm)
register_op(Norm("instance norm"), nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)
register_op(Norm("softmax over the units"), nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax,
            "softmax", "log_softmax")
register_op(Norm("normalisation over the units"), F.normalize)
register_op(Pool(), nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
            F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
            F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
register_op(Reduce(), torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin")
register_op(Permute(), torch.transpose, torch.permute, torch.movedim, torch.swapaxes, "transpose", "permute",
            "movedim", "swapaxes", "swapdims")
register_op(Reshape(), nn.Flatten, nn.Unflatten, torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze,
            torch.unflatten, "view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten")
register_op(GETITEM, operator.getitem, torch.narrow, "narrow")
register_op(SPLIT, torch.chunk, torch.split, "chunk", "split")
register_op(Cat(), torch.cat, torch.concat, torch.concatenate)
register_op(META, builtins.getattr, "size", "dim", "numel")

__all__ = ["Op", "OpRule", "acting", "first", "leaf_modules", "register_op", "rule_for"]
