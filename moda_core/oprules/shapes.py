"""Op rules for the ops that move, select or join a tensor's units (``moda_core.oprules``): pooling and reductions
over other dims, permutes, reshapes (a conv map flattened for a linear layer), slicing, ``chunk``/``split`` and
their pieces, and concatenation."""
from __future__ import annotations

import math
import operator
from typing import Any, Sequence, cast

import torch
from torch import fx

from moda_core.oprules.base import WHOLE, Carry, Op, OpRule, argument, describe, first, scatter_any


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
            dims: Any = (node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else
                         node.args[1:]) or node.kwargs["dims"]  # ints, as fx recorded them
            order = [d % rank for d in dims]
        else:  # movedim of one dim
            source, destination = argument(node, 1, "source") % rank, argument(node, 2, "destination") % rank
            order.remove(source)
            order.insert(destination, source)
        return Op(self, holds_all=True) if held.axis is None else Op(self, order.index(held.axis), held.size)


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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        units = a.op(first(node)).size
        a.need(first(node), None if mine is None else scatter_any(mine, self.unit_of(op, units), units))

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        source, kept, (spec, outer, inner) = first(node), r.kept(node), op.data
        units = r.op(source).size
        wanted = None if kept is None else torch.unique(self.unit_of(op, units)[kept])
        new = r.graph.call_function(regroup, (r.adapt(source, wanted), spec))
        if wanted is None or outer * inner == 1:
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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        a.need(first(node), None if mine is None else scatter_any(mine, op.data[1], a.op(first(node)).size))

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

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        a.need(first(node), mine if op.data[0] != op.axis else None)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        return r.copy(node, {first(node): r.adapt(first(node), r.kept(node) if op.data[0] != op.axis else None)})


class Piece(OpRule):
    """``pieces[i]`` of a ``Split``."""

    name = "piece"

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        whole = a.support_of(first(node))
        return whole[:, op.data] if op.data is not None else whole.clone()

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        units = a.op(first(node)).size
        a.need(first(node), scatter_any(mine, op.data, units) if op.data is not None and mine is not None else mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        split, kept = cast(fx.Node, first(node)), r.kept(node)  # a piece reads its split
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
        tensors = cast("Sequence[fx.Node]", node.args[0])  # as classify found them
        return [(t, slice(s, s + w), w) for t, s, w in zip(tensors, starts, widths, strict=True)]

    def support(self, node: fx.Node, op: Op, a: Any) -> torch.Tensor:
        parts = [a.support_of(t) if a.op(t).axis is not None else a.full(w) for t, _, w in self.parts(node, op)]
        return torch.cat(parts, 1) if op.data[0] else torch.stack(parts).any(0)

    def demand(self, node: fx.Node, op: Op, a: Any, mine: torch.Tensor | None) -> None:
        for t, part, _ in self.parts(node, op):
            a.need(t, mine[:, part] if op.data[0] and mine is not None else mine)

    def rewrite(self, node: fx.Node, op: Op, r: Any) -> fx.Node:
        kept, replace = r.kept(node), {}
        for t, part, _ in self.parts(node, op):
            wanted = kept if not op.data[0] or kept is None else \
                kept[(kept >= part.start) & (kept < part.stop)] - part.start
            replace[t] = r.adapt(t, wanted, op.axis)
        return r.copy(node, replace)


GETITEM, SPLIT, PIECE = Getitem(), Split(), Piece()
