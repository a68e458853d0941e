"""Composition of any traceable model, on its ``torch.fx`` graph.

Given the units each activation site keeps (the union of the target classes' masks), the composer walks the
traced graph twice, tracking for every tensor the units (channels of 4-D/2-D tensors, features of 3-D token
tensors) along one *unit axis*:

- forward, the *support*: the units that can be non-zero in the masked full model (a site keeps its mask's
  units; a conv/linear/batch-norm output is all of its units; pools, transposes and zero-preserving
  activations keep their input's; an add keeps the union, a product the intersection);
- backward, the *demand*: the units some consumer needs (a conv or linear needs all of its inputs; per-unit
  ops pass their demand through; the logits layer needs the target classes only).

Every tensor is then represented by the units in support ∩ demand. Convs (dense and depthwise), batch norms
and linears are sliced to those units; where a consumer needs a unit that its producer dropped (a residual
add of two differently masked branches, a ``torch.cat``), a zero-filling gather is inserted, exact because
such a unit is zero in the masked full model. Anything else (attention, layer norm over the units, reshapes,
grouped convs other than depthwise) is kept whole, which is exact, only not smaller, and is listed in the
report with the reason. The result is an fx ``GraphModule`` whose logits are the target classes' in sorted
order, equal to the masked full model's (``moda_core.graph.masked_graph``), and exportable with
``torch.export`` with a dynamic batch size. Eval mode only (batch norms use their running statistics).

``graph_overlap_counts`` counts, from the masks alone, the full-model parameters both of two single-class
modules keep: per parameter, the rows (output units) and columns (input units) its sliced copy keeps, or all
of it where it is kept whole; equal to composing each class and counting which parameters it holds.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from moda_core.errors import ModaError
from moda_core.graph import KINDS, Tap, Traced, site_kind, trace

_ZERO_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Dropout, nn.Identity, nn.Hardswish, nn.Tanh,
                            nn.Hardtanh, nn.LeakyReLU, nn.Mish)
_OTHER_UNARY_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_PRESERVING_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.dropout, F.hardswish, torch.tanh,
                              F.hardtanh, F.leaky_relu, F.mish, torch.relu_, F.relu_}
_OTHER_UNARY_FUNCTIONS = {torch.sigmoid, F.hardsigmoid}
_ZERO_PRESERVING_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone"}
_OTHER_UNARY_METHODS = {"sigmoid"}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, torch.div}
_BINARY_METHODS = {"add": _ADD, "sub": _ADD, "mul": _MUL, "div": _DIV}

_SLICED = ("conv", "depthwise", "linear", "bn")
_WHOLE = ("input", "attr", "unknown")


def zero_fill_gather(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` along ``axis`` gathered at ``index``, where index ``x.shape[axis]`` picks a zero."""
    if x.shape[axis]:
        pad = torch.zeros_like(x.narrow(axis, 0, 1))
    else:
        pad = torch.zeros_like(x.sum(axis, keepdim=True))
    return torch.cat([x, pad], axis).index_select(axis, index)


fx.wrap("zero_fill_gather")


@dataclass
class GraphComposition:
    """A composed model: the module, the target classes (its logits, in this order) and what was kept whole:
    ``report`` lists ``(node name, reason)`` for every op the composer did not slice through."""

    module: fx.GraphModule
    classes: list[int]
    report: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Op:
    kind: str
    axis: int | None = None  # unit axis of the node's output (None: not tracked)
    size: int = 0  # units along that axis
    reason: str = ""
    extra: Any = None


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _default_axis(shape: tuple[int, ...] | None) -> int | None:
    if shape is None:
        return None
    return {2: 1, 4: 1, 3: 2}.get(len(shape))


def _nodes(args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.map_arg(args, found.append)
    return found


class _Composer:
    def __init__(self, traced: Traced, masks: Mapping[str, torch.Tensor], classes: list[int]) -> None:
        self.traced, self.module, self.classes = traced, traced.module, classes
        self.site_masks = {traced.sites[name].node: mask.bool() for name, mask in masks.items()}
        self.ops: dict[fx.Node, _Op] = {}
        self.report: list[tuple[str, str]] = []

    # -- classification ------------------------------------------------------------------------------------
    def axis(self, node: Any) -> int | None:
        op = self.ops.get(node) if isinstance(node, fx.Node) else None
        return None if op is None else op.axis

    def classify(self, node: fx.Node) -> _Op:
        shape = _shape(node)
        default = _default_axis(shape)
        size = lambda axis: shape[axis] if shape is not None and axis is not None else 0  # noqa: E731
        if node.op == "placeholder":
            return _Op("input", default, size(default))
        if node.op == "get_attr":
            return _Op("attr", default, size(default))
        if node.op == "output":
            return _Op("output")
        inputs = [n for n in _nodes((node.args, node.kwargs)) if _shape(n) is not None]
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        in_axis, in_shape = self.axis(first), _shape(first)
        unknown = lambda reason: _Op("unknown", default, size(default), reason)  # noqa: E731
        if shape is None:
            if node.op == "call_method" and node.target == "size" and node.args[1:] == (0,):
                return _Op("size0")
            what = type(self.module.get_submodule(node.target)).__name__ if node.op == "call_module" \
                else _name(node.target)
            return unknown(f"{what}: its output is not a tensor") if inputs else _Op("other")
        per_unit = in_axis is not None and in_shape is not None and len(in_shape) == len(shape) and \
            in_shape[in_axis] == shape[in_axis]
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            if node.name in self.site_masks or site_kind(self.module, node, KINDS) or isinstance(module, Tap):
                return _Op("site" if node.name in self.site_masks else "unary0", in_axis, size(in_axis)) \
                    if per_unit else unknown("activation on an untracked tensor")
            if isinstance(module, nn.Conv2d):
                if in_axis != 1:
                    return unknown("convolution over a tensor whose units are not its channels")
                if module.groups == 1:
                    return _Op("conv", 1, size(1))
                if module.groups == module.in_channels == module.out_channels:
                    return _Op("depthwise", 1, size(1))
                return unknown("grouped convolution (only dense and depthwise are sliced)")
            if isinstance(module, nn.Linear):
                if in_shape is None or in_axis != len(in_shape) - 1:
                    return unknown("linear layer over a dim that is not the units")
                return _Op("linear", len(shape) - 1, size(len(shape) - 1))
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                return _Op("bn", 1, size(1)) if in_axis == 1 and per_unit else unknown("batch norm not over the units")
            if isinstance(module, _ZERO_PRESERVING_MODULES + _OTHER_UNARY_MODULES):
                kind = "unary0" if isinstance(module, _ZERO_PRESERVING_MODULES) else "unary"
                return _Op(kind, in_axis, size(in_axis)) if per_unit else unknown("activation on an untracked tensor")
            if isinstance(module, _POOL_MODULES):
                return _Op("pool", 1, size(1)) if in_axis == 1 and per_unit else unknown("pooling over the units")
            if isinstance(module, nn.Flatten):
                return self.flatten(node, shape, in_shape, in_axis, module.start_dim, module.end_dim)
            return unknown(f"{type(module).__name__} is not a per-unit op")
        if node.op == "call_method" and node.target in _BINARY_METHODS:
            return self.binary(node, shape, _BINARY_METHODS[node.target])
        target = node.target
        if node.op == "call_function" and (target in _ADD or target in _MUL or target in _DIV):
            return self.binary(node, shape, _ADD if target in _ADD else _MUL if target in _MUL else _DIV)
        zero_preserving = (node.op == "call_function" and target in _ZERO_PRESERVING_FUNCTIONS) or \
            (node.op == "call_method" and target in _ZERO_PRESERVING_METHODS)
        other_unary = (node.op == "call_function" and target in _OTHER_UNARY_FUNCTIONS) or \
            (node.op == "call_method" and target in _OTHER_UNARY_METHODS)
        if zero_preserving or other_unary:
            if not per_unit:
                return unknown("activation on an untracked tensor")
            kind = "site" if node.name in self.site_masks else "unary0" if zero_preserving else "unary"
            return _Op(kind, in_axis, size(in_axis))
        if node.op == "call_function" and target in _POOL_FUNCTIONS:
            return _Op("pool", 1, size(1)) if in_axis == 1 and per_unit else unknown("pooling over the units")
        if target in ("view", "reshape", torch.reshape) and len(shape) == 2 and in_shape is not None and \
                len(node.args) == 3 and node.args[2] == -1 and len(in_shape) > 2:
            return self.flatten(node, shape, in_shape, in_axis, 1, -1)  # x.view(x.size(0), -1)
        if target in (torch.flatten, "flatten"):
            args = list(node.args[1:]) + [node.kwargs.get("start_dim", 0), node.kwargs.get("end_dim", -1)][
                len(node.args) - 1:]
            return self.flatten(node, shape, in_shape, in_axis, *args[:2])
        if target in (torch.transpose, "transpose", "permute", torch.permute) and in_axis is not None:
            rank = len(in_shape)
            if target in (torch.transpose, "transpose"):
                a, b = (d % rank for d in node.args[1:3])
                order = list(range(rank))
                order[a], order[b] = b, a
            else:
                dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) \
                    else node.args[1:]
                order = [d % rank for d in dims]
            axis = order.index(in_axis)
            return _Op("layout", axis, size(axis))
        if target in (torch.mean, "mean") and in_axis is not None:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            if dims is not None:
                dims = [d % len(in_shape) for d in ((dims,) if isinstance(dims, int) else dims)]
                if in_axis not in dims:
                    axis = in_axis if keep else in_axis - sum(d < in_axis for d in dims)
                    return _Op("layout", axis, size(axis))
            return unknown("mean over the units")
        if target is torch.cat:
            return self.cat(node, shape)
        return unknown(f"{_name(target)} is not a per-unit op")

    def flatten(self, node: fx.Node, shape, in_shape, in_axis, start: int = 0, end: int = -1) -> _Op:
        """Flattening a map's channels with its positions (start dim 1 to the last): each channel becomes a
        contiguous run of H·W features, so a kept channel keeps its whole run (``extra``: H·W)."""
        if in_shape is not None and in_axis == 1 and start == 1 and end in (-1, len(in_shape) - 1):
            positions = math.prod(in_shape[2:])
            return _Op("layout", 1, shape[1]) if positions == 1 else _Op("flatten", 1, shape[1], extra=positions)
        if in_shape is not None and in_axis is not None:
            start, end = start % len(in_shape), end % len(in_shape)
            if in_axis < start:  # positions flattened after the units: they stay where they are
                return _Op("layout", in_axis, shape[in_axis])
            if in_axis > end:
                return _Op("layout", in_axis - (end - start), shape[in_axis - (end - start)])
        return _Op("unknown", _default_axis(shape), shape[_default_axis(shape)] if _default_axis(shape) else 0,
                   "flatten mixes units and positions")

    def binary(self, node: fx.Node, shape, family: set) -> _Op:
        operands = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
        tracked = [a for a in operands if self.axis(a) is not None and _shape(a) is not None
                   and len(_shape(a)) == len(shape) and _shape(a)[self.axis(a)] == shape[self.axis(a)]
                   and self.ops[a].kind not in _WHOLE]
        axis = self.axis(tracked[0]) if tracked else _default_axis(shape)
        unknown = _Op("unknown", _default_axis(shape), 0, f"{_name(node.target)} of tensors with other unit axes")
        if axis is None:
            return unknown
        for a in operands:
            a_shape = _shape(a)
            if a_shape is None or len(a_shape) != len(shape):
                return unknown
            if a_shape[axis] == 1:
                continue
            if a_shape[axis] != shape[axis] or (self.ops[a].kind not in _WHOLE and self.axis(a) != axis):
                return unknown
        scalars = [a for a in node.args if isinstance(a, (int, float))]
        name = "add" if family is _ADD else "mul" if family is _MUL else "div"
        return _Op("binary", axis, shape[axis], extra=(name, scalars))

    def cat(self, node: fx.Node, shape) -> _Op:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        dim %= len(shape)
        axes = {self.axis(t) for t in tensors}
        kinds = {self.ops[t].kind for t in tensors}
        if len(axes) != 1 or None in axes or kinds & set(_WHOLE) and dim == next(iter(axes)) and len(kinds) > 1:
            return _Op("unknown", _default_axis(shape), 0, "concatenation of tensors with other unit axes")
        axis = axes.pop()
        return _Op("cat", axis, shape[axis], extra=dim == axis)

    # -- support and demand ----------------------------------------------------------------------------------
    def tracked(self, node: Any) -> bool:
        return isinstance(node, fx.Node) and self.axis(node) is not None and node in self.ops

    def run(self) -> GraphComposition:
        self.analyse()
        return self.rewrite()

    def classify_all(self) -> None:
        """Each node's op (what it is, its unit axis and size); the report of what is kept whole."""
        self.ops.clear()
        self.report.clear()
        for node in self.module.graph.nodes:
            self.ops[node] = op = self.classify(node)
            if op.axis is not None:
                op.size = _shape(node)[op.axis]
            if op.kind == "unknown" and any(_shape(n) is not None for n in _nodes((node.args, node.kwargs))):
                self.report.append((self.traced.names.get(node, node.name), op.reason))

    def analyse(self) -> None:
        """Support, demand and the units each node keeps (``self.kept``: None = all) for ``self.site_masks``."""
        graph = self.module.graph
        if not self.ops:
            self.classify_all()
        for node, op in self.ops.items():
            if op.kind == "site" and op.size != self.site_masks[node.name].numel():
                raise ModaError(f"mask of site {self.traced.names[node]!r} has {self.site_masks[node.name].numel()} "
                                f"units, the site has {op.size}")
        support: dict[fx.Node, torch.Tensor] = {}
        for node in graph.nodes:
            op = self.ops[node]
            if op.axis is None:
                continue
            support[node] = self.support(node, op, support)
        demand = {node: torch.zeros(op.size, dtype=torch.bool) for node, op in self.ops.items() if op.axis is not None}
        for node in reversed(graph.nodes):
            self.demand(node, self.ops[node], demand)
        self.kept: dict[fx.Node, torch.Tensor | None] = {}
        for node, op in self.ops.items():
            if op.axis is None or op.kind in _WHOLE:
                self.kept[node] = None
                continue
            keep = support[node] & demand[node]
            self.kept[node] = None if bool(keep.all()) else keep.nonzero().flatten()

    def sliced_units(self, node: fx.Node) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (output, input) units a sliced conv/linear/batch norm node keeps (None: all), as ``rewrite``
        slices it: an empty set computes one unit (modules cannot have zero channels)."""
        op, source = self.ops[node], node.args[0]
        outputs = self.kept[node]
        if outputs is not None and len(outputs) == 0:
            outputs = torch.zeros(1, dtype=torch.long)
        inputs = None
        if op.kind in ("conv", "linear"):
            inputs = self.kept.get(source) if self.tracked(source) else None
            if inputs is not None and len(inputs) == 0:
                inputs = torch.zeros(1, dtype=torch.long)
        return outputs, inputs

    def support(self, node: fx.Node, op: _Op, support: dict) -> torch.Tensor:
        full = torch.ones(op.size, dtype=torch.bool)
        first = node.args[0] if node.args else None
        if op.kind in ("site",):
            return support[first] & self.site_masks[node.name]
        if op.kind in ("unary0", "layout", "pool"):
            return support[first].clone()
        if op.kind == "flatten":
            return support[first].repeat_interleave(op.extra)
        if op.kind == "depthwise":
            return full if self.module.get_submodule(node.target).bias is not None else support[first].clone()
        if op.kind == "binary":
            name, scalars = op.extra
            # operands along the units (a broadcast one, of size 1 there, is left out); one kept whole with its
            # units on another axis can be non-zero at every unit
            parts = [support[a] if self.axis(a) == op.axis and a in support else full
                     for a in _nodes(node.args) if self.tracked(a) and _shape(a)[op.axis] == op.size]
            if name == "add":
                if any(s != 0 for s in scalars) or len(parts) < len([a for a in node.args if isinstance(a, fx.Node)]):
                    return full
                return torch.stack(parts).any(0)
            if name == "mul":
                return torch.stack(parts).all(0) if parts else full
            return support[first].clone() if first in support and _shape(first)[op.axis] == op.size else full
        if op.kind == "cat":
            parts = [support.get(t, torch.ones(_shape(t)[op.axis], dtype=torch.bool)) for t in first]
            return torch.cat(parts) if op.extra else torch.stack(parts).any(0)
        return full

    def demand(self, node: fx.Node, op: _Op, demand: dict) -> None:
        def need(source: Any, wanted: torch.Tensor | None) -> None:
            if self.tracked(source):
                demand[source] |= True if wanted is None else wanted

        if op.kind == "output":
            out = node.args[0]
            shape = _shape(out)
            if not isinstance(out, fx.Node) or shape is None or len(shape) != 2 or self.axis(out) != 1:
                raise ModaError("composition needs a model whose output is one [batch, classes] tensor")
            bad = [c for c in self.classes if not 0 <= c < shape[1]]
            if bad:
                raise ModaError(f"class(es) {bad} out of range: the model has {shape[1]} logits")
            wanted = torch.zeros(shape[1], dtype=torch.bool)
            wanted[self.classes] = True
            need(out, wanted)
            return
        mine = demand.get(node)
        first = node.args[0] if node.args else None
        if op.kind in ("conv", "linear"):
            need(first, None)
        elif op.kind == "site":
            need(first, mine & self.site_masks[node.name])
        elif op.kind in ("unary0", "unary", "layout", "pool", "depthwise", "bn"):
            need(first, mine)
        elif op.kind == "flatten":
            need(first, mine.view(-1, op.extra).any(1))
        elif op.kind == "binary":
            for a in _nodes(node.args):
                need(a, mine if _shape(a)[op.axis] == op.size and self.axis(a) == op.axis else None)
        elif op.kind == "cat":
            offset = 0
            for t in first:
                width = _shape(t)[op.axis]
                need(t, mine[offset:offset + width] if op.extra else mine)
                offset += width if op.extra else 0
        elif op.kind == "size0":
            return
        else:
            for source in _nodes((node.args, node.kwargs)):
                need(source, None)

    # -- rewriting -------------------------------------------------------------------------------------------
    def rewrite(self) -> GraphComposition:
        graph, env = fx.Graph(), {}
        self.root: dict[str, Any] = {}
        self.new_graph, self.index_count, self.used_targets = graph, 0, set()
        for node in self.module.graph.nodes:
            op = self.ops[node]
            if node.op == "output":
                out = node.args[0]
                wanted = torch.tensor(sorted(self.classes))
                graph.output(self.adapt(env[out], out, wanted))
                continue
            if node.op == "get_attr":
                self.root[node.target] = self.attribute(node.target)
                env[node] = graph.get_attr(node.target)
                continue
            if node.op == "placeholder":
                env[node] = graph.node_copy(node)
                continue
            kept = self.kept[node]
            if op.kind in ("conv", "linear", "depthwise", "bn"):
                # an empty unit set computes one unit and drops it (modules cannot have zero channels)
                source, empty = node.args[0], kept is not None and len(kept) == 0
                outputs, inputs = self.sliced_units(node)
                if op.kind in ("conv", "linear"):
                    held = self.kept.get(source) if self.tracked(source) else None
                    # no input unit can be non-zero: feed one zero
                    inp = self.adapt(env[source], source, inputs) if held is not None and len(held) == 0 \
                        else env[source]
                else:
                    inp = self.adapt(env[source], source, outputs)
                module = self.module.get_submodule(node.target)
                sliced = self.slice(module, op.kind, inputs, outputs)
                target = node.target if node.target not in self.used_targets else node.name
                self.used_targets.add(target)
                self.root[target] = sliced
                env[node] = graph.call_module(target, (inp,) + tuple(node.args[1:]), node.kwargs)
                if empty:
                    env[node] = graph.call_method("narrow", (env[node], op.axis, 0, 0))
                continue
            if node.op == "call_module":
                self.used_targets.add(node.target)
                self.root[node.target] = self.module.get_submodule(node.target)
            if op.kind == "cat":
                pieces, offset = [], 0
                for t in node.args[0]:
                    width = _shape(t)[op.axis]
                    if op.extra:
                        wanted = None if kept is None else \
                            kept[(kept >= offset) & (kept < offset + width)] - offset
                        offset += width
                    else:
                        wanted = kept
                    pieces.append(self.adapt(env[t], t, wanted, op.axis))
                env[node] = graph.create_node(node.op, node.target, (pieces,) + tuple(node.args[1:]), node.kwargs,
                                              node.name)
                continue
            if op.kind == "flatten":
                env[node] = self.flattened(node, op, env)
                continue
            wants = {}
            for source in _nodes((node.args, node.kwargs)):
                if op.kind == "size0" or not self.tracked(source):
                    wants[source] = env[source]
                elif op.kind in ("site", "unary0", "unary", "layout", "pool"):
                    wants[source] = self.adapt(env[source], source, kept)
                elif op.kind == "binary":
                    # broadcast along the units, or kept whole with its units elsewhere: all of it is there
                    as_is = _shape(source)[op.axis] != op.size or self.axis(source) != op.axis
                    wants[source] = self.adapt(env[source], source, None) if as_is and self.axis(source) != op.axis \
                        else env[source] if as_is else self.adapt(env[source], source, kept, op.axis)
                else:
                    wants[source] = self.adapt(env[source], source, None)
            env[node] = graph.node_copy(node, lambda n: wants[n])  # noqa: B023
        graph.lint()
        composed = fx.GraphModule(self.root, graph, "ComposedModule")
        return GraphComposition(composed.eval(), sorted(self.classes), self.report)

    def flattened(self, node: fx.Node, op: _Op, env: dict) -> fx.Node:
        """A flatten of the source's channels that hold some kept feature, then the kept features of those."""
        source, kept = node.args[0], self.kept[node]
        channels = None if kept is None else torch.unique(kept // op.extra)
        inputs = {n: env[n] for n in _nodes((node.args, node.kwargs))}
        inputs[source] = self.adapt(env[source], source, channels)
        new = self.new_graph.node_copy(node, lambda n: inputs[n])
        if kept is None:
            return new
        produced = (channels[:, None] * op.extra + torch.arange(op.extra)).flatten()
        if torch.equal(produced, kept):
            return new
        name = f"_moda_index_{self.index_count}"
        self.index_count += 1
        self.root[name] = torch.searchsorted(produced, kept)
        return self.new_graph.call_method("index_select", (new, 1, self.new_graph.get_attr(name)))

    def attribute(self, target: str) -> Any:
        owner, _, name = target.rpartition(".")
        return getattr(self.module.get_submodule(owner) if owner else self.module, name)

    def adapt(self, new: fx.Node, source: fx.Node, wanted: torch.Tensor | None, axis: int | None = None) -> fx.Node:
        """``new`` (the composed value of ``source``, holding its kept units) re-expressed as the units
        ``wanted`` (None: all), with zeros for the units it does not hold."""
        if not self.tracked(source):
            return new
        held, size = self.kept.get(source), self.ops[source].size
        axis = self.ops[source].axis if axis is None else axis
        if held is None and wanted is None or held is not None and wanted is not None and torch.equal(held, wanted):
            return new
        position = torch.full((size,), -1, dtype=torch.long)
        held = torch.arange(size) if held is None else held
        position[held] = torch.arange(len(held))
        index = position[torch.arange(size) if wanted is None else wanted]
        name = f"_moda_index_{self.index_count}"
        self.index_count += 1
        if bool((index >= 0).all()):
            self.root[name] = index
            return self.new_graph.call_method("index_select", (new, axis, self.new_graph.get_attr(name)))
        index[index < 0] = len(held)
        self.root[name] = index
        return self.new_graph.call_function(zero_fill_gather, (new, self.new_graph.get_attr(name), axis))

    @staticmethod
    def slice(module: nn.Module, kind: str, inputs: torch.Tensor | None, outputs: torch.Tensor | None) -> nn.Module:
        def pick(tensor: torch.Tensor | None, rows: torch.Tensor | None, cols: torch.Tensor | None = None):
            if tensor is None:
                return None
            tensor = tensor.detach()
            if rows is not None:
                tensor = tensor[rows]
            if cols is not None:
                tensor = tensor[:, cols]
            return tensor.clone()

        def size(index: torch.Tensor | None, whole: int) -> int:
            return whole if index is None else len(index)

        factory = {"device": next(module.parameters(), torch.empty(0)).device,
                   "dtype": next(module.parameters(), torch.empty(0)).dtype}
        if kind in ("conv", "depthwise"):
            outs = size(outputs, module.out_channels)
            ins = outs if kind == "depthwise" else size(inputs, module.in_channels)
            new = nn.Conv2d(ins, outs, module.kernel_size, module.stride, module.padding, module.dilation,
                            groups=outs if kind == "depthwise" else 1, bias=module.bias is not None,
                            padding_mode=module.padding_mode, **factory)
            state = {"weight": pick(module.weight, outputs, None if kind == "depthwise" else inputs)}
            if module.bias is not None:
                state["bias"] = pick(module.bias, outputs)
        elif kind == "linear":
            new = nn.Linear(size(inputs, module.in_features), size(outputs, module.out_features),
                            bias=module.bias is not None, **factory)
            state = {"weight": pick(module.weight, outputs, inputs)}
            if module.bias is not None:
                state["bias"] = pick(module.bias, outputs)
        else:
            new = type(module)(size(outputs, module.num_features), eps=module.eps, momentum=module.momentum,
                               affine=module.affine, track_running_stats=module.track_running_stats, **factory)
            state = {key: pick(value, outputs) if value.dim() else value.clone()
                     for key, value in module.state_dict().items()}
        new.load_state_dict(state)
        return new.eval()


def union_masks(masks: Mapping[str, torch.Tensor], classes: Sequence[int] | None) -> dict[str, torch.Tensor]:
    """Site → bool over units: a class×unit mask is OR-ed over ``classes``; a unit mask is taken as it is."""
    union = {}
    for name, mask in masks.items():
        mask = torch.as_tensor(mask).bool()
        if mask.dim() == 2:
            if classes is None:
                raise ModaError("class masks need the classes to compose")
            mask = mask[list(classes)].any(0)
        if mask.dim() != 1:
            raise ModaError(f"mask of site {name!r} must be units or classes × units, got shape {tuple(mask.shape)}")
        union[name] = mask
    return union


def compose_graph(model: nn.Module, masks: Mapping[str, torch.Tensor], classes: Iterable[int],
                  example_input: torch.Tensor, points: str | Sequence[str] = "relu") -> GraphComposition:
    """Compose ``model`` (any fx-traceable module, evaluated in eval mode) for the target ``classes``.

    ``masks``: site name (``moda_core.graph.activation_sites``) → bool over the site's units (the units the
    composed model keeps; already OR-ed over the targets) or bool classes × units (OR-ed here over
    ``classes``). A site without a mask keeps all of its units. ``example_input``: one input batch, used for
    the graph's shapes. Returns the composed module (logits of the sorted target classes) and the report of
    what was kept whole.
    """
    classes = sorted({int(c) for c in classes})
    if not classes:
        raise ModaError("composition needs at least one target class")
    union = union_masks(masks, classes)
    traced = trace(model, points, example_input)
    unknown = [name for name in union if name not in traced.sites]
    if unknown:
        raise ModaError(f"unknown activation site(s) {unknown}: this model's sites are {list(traced.sites)}")
    masks_by_node = {traced.sites[name].node: mask for name, mask in union.items()}
    composer = _Composer(traced, {}, classes)
    composer.site_masks = masks_by_node
    return composer.run()


_Use = tuple[torch.Tensor | None, torch.Tensor | None] | None


def _param_uses(composer: _Composer) -> dict[nn.Parameter, list[_Use]]:
    """After ``composer.analyse()``: each parameter the composed module holds, and how, once per use: None =
    whole, (rows, columns) = the output and input units its sliced copy keeps (None: all of that dim)."""
    uses: dict[nn.Parameter, list] = {}
    for node, op in composer.ops.items():
        if node.op == "call_module":
            module = composer.module.get_submodule(node.target)
            if op.kind in _SLICED:
                outputs, inputs = composer.sliced_units(node)
                for name, parameter in module.named_parameters(recurse=False):
                    columns = inputs if name == "weight" and op.kind in ("conv", "linear") else None
                    uses.setdefault(parameter, []).append((outputs, columns))
            else:
                for parameter in module.parameters():
                    uses.setdefault(parameter, []).append(None)
        elif node.op == "get_attr":
            attribute = composer.attribute(node.target)
            if isinstance(attribute, nn.Parameter):
                uses.setdefault(attribute, []).append(None)
    return uses


def _indicator(index: torch.Tensor | None, size: int) -> torch.Tensor:
    row = torch.zeros(size, dtype=torch.float64)
    row[slice(None) if index is None else index] = 1
    return row


def _entries(parameter: torch.Tensor, uses: list) -> torch.Tensor:
    """Bool over the parameter's entries: those some use keeps."""
    kept = torch.zeros(parameter.shape, dtype=torch.bool)
    for use in uses:
        if use is None:
            kept[...] = True
            continue
        rows, columns = use
        rows = torch.arange(parameter.shape[0]) if rows is None else rows
        if columns is None or parameter.dim() < 2:
            kept[rows] = True
        else:
            kept[rows[:, None], columns[None, :]] = True
    return kept


def graph_overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor], example_input: torch.Tensor,
                         points: str | Sequence[str] = "relu", by_layer: bool = False
                         ) -> torch.Tensor | dict[str, torch.Tensor]:
    """Class×class counts (float64) of full-model parameters that both single-class modules of ``model`` keep,
    from ``masks`` (site → classes × units) alone; the diagonal is each single-class module's parameter count.
    With ``by_layer``: ``{owner module or attribute: matrix}`` instead of the sum."""
    traced = trace(model, points, example_input)
    unknown = [name for name in masks if name not in traced.sites]
    if unknown:
        raise ModaError(f"unknown activation site(s) {unknown}: this model's sites are {list(traced.sites)}")
    num_classes = len(next(iter(masks.values())))
    composer = _Composer(traced, {}, [0])
    per_class = []
    for c in range(num_classes):
        composer.classes = [c]
        composer.site_masks = {traced.sites[name].node: torch.as_tensor(mask[c]).bool()
                               for name, mask in masks.items()}
        composer.analyse()
        per_class.append(_param_uses(composer))
    owner = {}
    for name, parameter in model.named_parameters():
        owner.setdefault(parameter, name.rpartition(".")[0] or name)
    layers: dict[str, torch.Tensor] = {}
    for parameter in per_class[0]:
        uses = [class_uses[parameter] for class_uses in per_class]
        if all(use == [None] for use in uses):
            shared = torch.full((num_classes, num_classes), float(parameter.numel()), dtype=torch.float64)
        elif all(len(use) == 1 and use[0] is not None for use in uses):
            rows = torch.stack([_indicator(use[0][0], parameter.shape[0]) for use in uses])
            shared = rows @ rows.T
            if parameter.dim() >= 2:
                rest = math.prod(parameter.shape[2:])
                if uses[0][0][1] is not None or any(use[0][1] is not None for use in uses):
                    columns = torch.stack([_indicator(use[0][1], parameter.shape[1]) for use in uses])
                    shared = shared * (columns @ columns.T) * rest
                else:
                    shared = shared * parameter.shape[1] * rest
        else:  # used at several places: count entries
            kept = torch.stack([_entries(parameter, use).flatten() for use in uses]).double()
            shared = kept @ kept.T
        key = owner.get(parameter, "?")
        layers[key] = layers[key] + shared if key in layers else shared
    if by_layer:
        return layers
    return sum(layers.values(), torch.zeros(num_classes, num_classes, dtype=torch.float64))
