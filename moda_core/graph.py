"""The one reading of a network (docs/design.md, The graph): traced once, shared by everything that needs it.

``graph_of(model)`` traces ``model`` with ``torch.fx``, naming nodes as torchvision's feature extraction does
(``layer1.0.relu``, ``layer1.0.relu_1``, ``relu_3`` for a functional call at top level), and returns a ``NetGraph``,
built once per model structure and read-only afterwards, so any number of callers may share it: the *points*
(activation call sites, each with its *unit axis*, carried forward from the layer that produced its features by
the op rules of ``moda_core.oprules``, and its units), an ``Op`` for every node, and the graph with in-place ops
made out of place (``x.relu_()``, ``out += x``, an in-place ReLU whose result is dropped): every later use of a
mutated tensor reads the op's result, so masking, recording and composition act on what the network goes on using.

The model itself is never touched: tracing (``moda_core.tracing``) runs on a *view* (``module_view``: the same
tensors in a module tree of its own, in the mode asked for), and ``bind`` runs a graph over the model's tensors,
either purely (eval-mode views: safe from many threads) or, for training, over the model's own modules with the
graph traced in training mode, so that dropout and stochastic depth behave as in the model.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import fx, nn

from moda_core import oprules
from moda_core.errors import ModaError
from moda_core.model_attrs import input_shape_of, set_attributes
from moda_core.oprules import Op
from moda_core.tracing import (
    KINDS,
    TraceError,
    call_sites,
    functionalise,
    module_view,
    propagate_shapes,
    site_kind,
    trace,
)

DEFAULT_THRESHOLD = 0.0  # a unit fires where its activation exceeds this (for ReLU: where it is non-zero)
EXAMPLE_BATCH = 2  # more than 1, so that the batch dim is told from dims of size 1
MAX_STRUCTURES = 64  # graphs kept for different model structures (the oldest dropped first)


class GraphError(ModaError):
    """The graph cannot be read as asked: a point whose units cannot be told, an op composition cannot undo."""


@dataclass(frozen=True)
class Point:
    """One activation point: its name, kind (relu/gelu/silu), fx node, unit axis, units and example shape."""

    name: str
    kind: str
    node: str
    axis: int
    units: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class NetGraph:
    """A network read once (see the module docstring)."""

    graph: fx.Graph  # eval mode, in-place ops out of place
    names: Mapping[str, str]  # node name → qualified (feature-extraction) name
    shapes: Mapping[str, Any]  # node name → output shape (batch EXAMPLE_BATCH), a list for tuples, else None
    ops: Mapping[str, Op]
    points: Mapping[str, Point]
    blocker: str | None  # why masking and composition are refused (an in-place op on a shared view), else None
    inplace_modules: frozenset[str]  # in-place module calls (pure bindings call them out of place)
    weighted: frozenset[str]  # module calls that hold parameters
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # built from it on demand, as read-only

    def node(self, name: str) -> fx.Node:
        return next(n for n in self.graph.nodes if n.name == name)

    def point_at(self, node: fx.Node) -> Point | None:
        return self.cached("by node", lambda: {p.node: p for p in self.points.values()}).get(node.name)

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once for this graph."""
        with _LOCK:
            if key in self.cache:
                return self.cache[key]
        value = build()
        with _LOCK:
            return self.cache.setdefault(key, value)

    def kept_whole(self) -> list[tuple[str, str]]:
        """(op, reason) for every op composition keeps whole where that costs something: it reads a tensor whose
        units are known, or holds weights."""
        return list(self.cached("kept whole", lambda: [
            (self.names.get(node.name, node.name), self.ops[node.name].whole) for node in self.graph.nodes
            if self.ops[node.name].whole and (node.target in self.weighted and node.op == "call_module" or any(
                self.ops[n.name].axis is not None for n in node.all_input_nodes))]))

    def logit_points(self) -> list[str]:
        """Points whose units reach the logits through per-unit ops only (no weights between)."""
        passing = (oprules.PerUnit, oprules.Permute, oprules.Reshape, oprules.Reduce, oprules.Pool, oprules.Getitem,
                   oprules.Binary, oprules.Cat)
        stack, seen = [self.node("output").args[0]], set()
        while stack:
            node = stack.pop()
            if isinstance(node, fx.Node) and node.name not in seen:
                seen.add(node.name)
                if self.point_at(node) is None and isinstance(self.ops[node.name].rule, passing):
                    stack += node.all_input_nodes
        return [name for name, point in self.points.items() if point.node in seen]

    def limits(self) -> list[str]:
        """What composition cannot do here, one line each: refused, ops kept whole (by reason), logit points."""
        lines = [f"masking and composition are refused: {self.blocker}"] if self.blocker else []
        reasons: dict[str, list[str]] = {}
        for name, reason in self.kept_whole():
            reasons.setdefault(reason, []).append(name)
        for reason, names in reasons.items():
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            lines.append(f"kept whole ({reason}): {', '.join(names[:3])}{more}")
        return lines + [f"point {p!r} reaches the logits without a weight layer between: a class's module can drop "
                        "that class's own logit" for p in self.logit_points()]

    def check_composable(self) -> None:
        if self.blocker:
            raise GraphError(f"cannot mask or compose this model: {self.blocker}")

    def mode_graph(self, model: nn.Module, training: bool) -> tuple[fx.Graph, dict[str, str]]:
        """The graph a forward in this mode runs, and point name → its node there (training: traced in training
        mode, once)."""
        if not training:
            return self.graph, {name: p.node for name, p in self.points.items()}
        return self.cached("train", lambda: _training_graph(self, model))


def _training_graph(g: NetGraph, model: nn.Module) -> tuple[fx.Graph, dict[str, str]]:
    graph, names = trace(module_view(model, training=True))
    sites = call_sites(graph, names, model, {p.kind for p in g.points.values()} or {"relu"}, set(g.points))
    if set(sites) != set(g.points):
        raise GraphError(f"{type(model).__name__} has other activation points in training mode "
                         f"({sorted(set(sites) ^ set(g.points))[:4]}) than in evaluation mode")
    _, inplace = functionalise(graph, model, {})
    for node in list(graph.nodes):  # an in-place module must not change a recorded activation
        source = oprules.first(node)
        if node.op == "call_module" and node.target in inplace and source in sites.values():
            with graph.inserting_before(node):
                node.replace_input_with(source, graph.call_method("clone", (source,)))
    graph.lint()
    return graph, {name: node.name for name, node in sites.items()}


# ----------------------------------------------------------------------------------------------
# one graph per model structure, built once

_LOCK = threading.RLock()
_BY_MODEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (identity, NetGraph or its error)
_BY_STRUCTURE: dict[tuple, Any] = {}
_BUILDING: dict[tuple, threading.Lock] = {}


def identity(model: nn.Module) -> tuple:
    """What changes when a module or tensor of ``model`` is replaced."""
    return (tuple(map(id, model.modules())),
            tuple((id(t), tuple(t.shape)) for t in [*model.parameters(), *model.buffers()]))


def points_of(model: nn.Module) -> Any:
    """``model``'s points: its ``arch["points"]`` (kinds, comma-separated, or site name → unit axis), else ReLU."""
    return (getattr(model, "arch", None) or {}).get("points", "relu")


def graph_of(model: nn.Module, points: str | Sequence[str] | Mapping[str, int | None] | None = None,
             example_input: torch.Tensor | None = None) -> NetGraph:
    """The ``NetGraph`` of ``model``, built on first use per structure (class, modules, tensor shapes, input shape,
    points) and shared. ``points``: kinds (``"relu"``, ``"relu,gelu"``) or site name → unit axis (None: read from
    the graph); default ``points_of(model)``. ``example_input`` (a batch) defaults to zeros of ``model.input_shape``.
    Raises ``TraceError`` when fx cannot trace the model, ``GraphError`` for a point whose units cannot be told."""
    model = model.__dict__.get("recorded_model", model)  # a RecordingModel (moda_core.loop) reads as its model
    points = points_of(model) if points is None else points
    spec: str | tuple[Any, ...] = tuple(sorted(points.items())) if isinstance(points, Mapping) else \
        (points if isinstance(points, str) else tuple(points))  # hashable: kinds, or (site name, unit axis) pairs
    shape = tuple(example_input.shape[1:]) if example_input is not None else input_shape_of(model)
    mine = (identity(model), shape, spec)
    with _LOCK:
        known = _BY_MODEL.get(model)
    if known is None or known[0] != mine:
        key = (type(model), tuple((n, type(m), m.extra_repr(), _settings(m)) for n, m in model.named_modules()),
               tuple((n, tuple(t.shape), t.dtype) for n, t in [*model.named_parameters(), *model.named_buffers()]),
               shape, spec)
        with _LOCK:
            gate = _BUILDING.setdefault(key, threading.Lock())
        with gate:  # one build per structure: callers asking meanwhile wait for it
            with _LOCK:
                built = _BY_STRUCTURE.get(key)
            if built is None:
                try:
                    built = _build(model, shape, dict(spec) if isinstance(spec, tuple) and spec and
                                   isinstance(spec[0], tuple) else spec)
                except (TraceError, GraphError) as error:  # remembered: the same structure fails the same way
                    built = error
                with _LOCK:
                    _BY_STRUCTURE[key] = built
                    while len(_BY_STRUCTURE) > MAX_STRUCTURES:
                        del _BY_STRUCTURE[next(iter(_BY_STRUCTURE))]
                    if _BUILDING.get(key) is gate:  # built: later callers find it above (the gates stay few)
                        del _BUILDING[key]
        with _LOCK:
            _BY_MODEL[model] = known = (mine, built)
    if isinstance(known[1], Exception):
        raise type(known[1])(str(known[1]))
    return known[1]


def _settings(module: nn.Module) -> tuple:
    """A module's own plain attributes (flags, sizes, names; a function by identity): two modules of one class
    whose forward may differ by them read as different structures."""
    def plain(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (tuple, list)):
            return tuple(plain(x) for x in v)
        return id(v) if callable(v) else type(v).__name__
    return tuple((k, plain(v)) for k, v in sorted(module.__dict__.items())
                 if not k.startswith("_") and k != "training" and not isinstance(v, torch.Tensor))


# ----------------------------------------------------------------------------------------------
# building: the traced graph (moda_core.tracing) read with the op rules

class _Classifier:
    """What op rules read while classifying: shapes, earlier ops, modules, a zero probe."""

    def __init__(self, view: nn.Module, shapes: Mapping[str, Any], dtype: torch.dtype) -> None:
        self.view, self.shapes, self.dtype, self.ops = view, shapes, dtype, dict[str, Op]()

    def shape(self, node: Any) -> Any:
        return self.shapes.get(node.name) if isinstance(node, fx.Node) else None

    def op(self, node: Any) -> Op:
        return self.ops[node.name] if isinstance(node, fx.Node) else Op(oprules.WHOLE, holds_all=True)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.view.get_submodule(oprules.target_name(node)) if node.op == "call_module" else None

    def maps_zero_to_zero(self, node: fx.Node) -> bool:
        """Whether the op gives zero for a zero input, with its own arguments (Hardtanh(0.1, 4) does not)."""
        rest = (node.args[1:], node.kwargs)
        try:
            zeros = torch.zeros(self.shape(node), dtype=self.dtype)
            with torch.no_grad():
                module, target = self.module(node), node.target
                out = module(zeros) if module is not None else target(zeros, *rest[0], **rest[1]) \
                    if callable(target) else getattr(zeros, target)(*rest[0], **rest[1])
        except Exception:  # noqa: BLE001 - an op that cannot run on its own is not known to keep zeros
            return False
        return len(node.all_input_nodes) == 1 and isinstance(out, torch.Tensor) and bool((out == 0).all())


def _build(model: nn.Module, input_shape: tuple, points: Any) -> NetGraph:
    view = module_view(model, training=False)
    graph, names = trace(view)
    declared = dict(points) if isinstance(points, Mapping) else None
    kinds = KINDS if declared is not None else _kinds(points)
    sites = call_sites(graph, names, view, kinds, set(declared) if declared is not None else None)
    if declared is not None and set(declared) - set(sites):
        raise GraphError(f"unknown activation point(s) {sorted(set(declared) - set(sites))}: this model's activation "
                         f"calls are {list(call_sites(graph, names, view, KINDS))}")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype, device = (param.dtype, param.device) if param is not None else (torch.float32, torch.device("cpu"))
    shapes = propagate_shapes(graph, view, torch.zeros(EXAMPLE_BATCH, *input_shape, dtype=dtype, device=device))
    blocker, inplace = functionalise(graph, view, shapes)
    for target in inplace:  # the zero probe sees them out of place
        set_attributes(view.get_submodule(target), inplace=False)
    site_nodes, c = {node.name: name for name, node in sites.items()}, _Classifier(view, shapes, dtype)
    found: dict[str, Point] = {}
    for node in graph.nodes:
        rule = oprules.rule_for(node, c.module(node))
        reads_tensor = any(isinstance(shapes.get(n.name), (tuple, list)) for n in node.all_input_nodes)
        if shapes.get(node.name) is None and node.op.startswith("call_") and not isinstance(rule, oprules.Split) \
                and (rule is oprules.META or not reads_tensor):  # sizes and arithmetic on them
            c.ops[node.name] = Op(oprules.META, holds_all=True)
            continue
        c.ops[node.name] = rule.classify(node, c)
        kind = site_kind(view, node, kinds) if node.name in site_nodes else None
        if kind is not None:
            c.ops[node.name] = _point_op(node, site_nodes[node.name], c, declared, found, kind)
    weighted = frozenset(n.target for n in graph.nodes if n.op == "call_module"
                         and next(view.get_submodule(n.target).parameters(), None) is not None)
    return NetGraph(graph, names, shapes, c.ops, found, blocker, frozenset(inplace), weighted)


def _kinds(points: str | Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in points.split(",")) if isinstance(points, str) else tuple(points)
    if not kinds or set(kinds) - set(KINDS):
        raise ModaError(f"unknown activation kind(s) {sorted(set(kinds) - set(KINDS)) or list(kinds)}: expected some "
                        f"of {', '.join(KINDS)}")
    return kinds


def _point_op(node: fx.Node, name: str, c: _Classifier, declared: Mapping | None, found: dict, kind: str) -> Op:
    """A point's op: a per-unit op on its input's unit axis, or on the axis declared for it."""
    held, shape, op = c.op(oprules.first(node)), c.shape(node), c.ops[node.name]
    axis = (declared or {}).get(name)
    if axis is not None and (not -len(shape) <= axis < len(shape) or axis % len(shape) == 0):
        raise GraphError(f"point {name!r}: unit axis {axis} is not a feature dim of its {len(shape)}-D activation")
    axis = held.axis if axis is None else axis % len(shape)
    if axis is None:
        raise GraphError(f"cannot tell the units of point {name!r}: nothing before it says which dim of its "
                         f"{len(shape)}-D activation {list(shape)} holds the features (no convolution or linear layer "
                         f"leads to it); declare it, e.g. points={{{name!r}: -1}}")
    zero = op.data if isinstance(op.rule, oprules.PerUnit) and op.axis is not None else c.maps_zero_to_zero(node)
    found[name] = Point(name, kind, node.name, axis, shape[axis], tuple(shape))
    return Op(oprules.POINT, axis, shape[axis], data=bool(zero))


# ----------------------------------------------------------------------------------------------
# running a graph over a model's tensors

def attribute(model: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


def bind(graph: fx.Graph, model: nn.Module, pure: bool, inplace_modules: frozenset[str] = frozenset(),
         class_name: str = "Bound") -> fx.GraphModule:
    """``graph`` as a module over ``model``'s tensors: ``pure``, over eval-mode views (in-place modules called out
    of place; the model is never changed or switched), else over the model's own modules (for training)."""
    source, root = module_view(model, training=False) if pure else model, {}
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and node.target not in root:
            root[node.target] = source.get_submodule(node.target) if node.op == "call_module" else \
                attribute(source, node.target)
            if pure and node.target in inplace_modules:
                root[node.target].inplace = False
    return fx.GraphModule(root, graph, class_name)


__all__ = ["DEFAULT_THRESHOLD", "EXAMPLE_BATCH", "GraphError", "KINDS", "NetGraph", "Point", "TraceError", "bind",
           "graph_of", "identity", "module_view", "points_of"]
