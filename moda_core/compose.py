"""Composition: class masks → a physically smaller network, and the weight overlap between class modules, on the
model's graph (``moda_core.graph``; docs/design.md, Composition and its exactness contract; Weight overlap).

Given the units each point keeps, one walk forward finds every tensor's *support* (the units that can be non-zero
in the masked full model) and one walk back its *demand* (the units some later op needs); a composed tensor holds
the units in both. Each op's rule (``moda_core.oprules``) says how support and demand pass through it and how its
composed copy reads only what its inputs hold: convolutions (dense, depthwise), linear layers and batch norms are
sliced; where an op needs a unit its producer dropped (a residual add of differently masked branches), a
zero-filling gather supplies it, exact because that unit is zero in the masked full model; anything else is kept
whole, exact and only not smaller, and reported with the reason.

The walks run on K mask rows at once: one row (the union of the targets' masks) to compose, one per class to count
every pair's shared weights in one pass (``moda_core.overlap.overlap_counts``). The composed module
is an fx ``GraphModule`` (logits of the sorted targets; ``classes``, ``input_shape``, ``kept_whole``) that
``torch.export`` exports with a dynamic batch. Eval mode only (batch norms use their running statistics).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import fx, nn

from moda_core.activations import point_units
from moda_core.data import check_classes
from moda_core.errors import ModaError
from moda_core.graph import NetGraph, TraceError, attribute, graph_of, module_view
from moda_core.model_attrs import arch_of, input_shape_of, set_attributes
from moda_core.oprules import acting, target_name

__all__ = ["check_masks", "compose_module", "composition_blocker", "limits", "parameter_count"]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def zero_fill_gather(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` along ``axis`` gathered at ``index``, where index ``x.shape[axis]`` picks a zero."""
    pad = torch.zeros_like(x.narrow(axis, 0, 1)) if x.shape[axis] else torch.zeros_like(x.sum(axis, keepdim=True))
    return torch.cat([x, pad], axis).index_select(axis, index)


fx.wrap("zero_fill_gather")


def _key(value: Any) -> Any:
    """``value`` (an fx argument) as a hashable key, its nodes by name."""
    kind = type(value)
    if kind is fx.Node:
        return "node", value.name
    if kind in (tuple, list, torch.Size):
        return kind.__name__, tuple(_key(v) for v in value)
    if kind is dict:
        return "dict", tuple((k, _key(v)) for k, v in value.items())
    if kind is slice:
        return "slice", _key(value.start), _key(value.stop), _key(value.step)
    return value


class _ComposedGraph(fx.Graph):
    """An fx graph whose generated code is shared with every earlier graph of the same nodes: compositions of one
    model for other classes often differ only in the constants and weights, and generating the code was a third of
    a composition's time. The key is read from the nodes on every call, so an edited graph gets its own code."""

    codes: dict[Any, Any] = {}

    def python_code(self, root_module: str, **options: Any) -> Any:
        try:
            key = (root_module, tuple(sorted(options.items())), tuple(
                (n.op, n.name, n.target, _key(n.args), _key(n.kwargs), n.type) for n in self.nodes))
            hash(key)
        except TypeError:  # an unhashable argument: no sharing
            return super().python_code(root_module, **options)
        code = self.codes.get(key)
        if code is None:  # two threads may both generate it: the same code
            code = super().python_code(root_module, **options)
            if len(self.codes) >= 256:
                self.codes.clear()
            self.codes[key] = code
        return code


def _live(g: NetGraph) -> list[fx.Node]:
    """The nodes the output depends on, in graph order (built once per graph)."""
    def walk() -> frozenset[str]:
        stack, live = [g.node("output")], set()
        while stack:
            node = stack.pop()
            if node.name not in live:
                live.add(node.name)
                stack += node.all_input_nodes
        return frozenset(live)
    live = g.cached("live", walk)
    return [node for node in g.graph.nodes if node.name in live]


class _Analysis:
    """Support and demand of every node for K rows of point masks; ``kept[name]``: K × units bool (None: the node's
    tensor holds all of them). Also what rules read: ops, shapes, modules."""

    def __init__(self, g: NetGraph, model: nn.Module, masks: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        self.g, self.model, self.ops, self.rows, self.logits = g, model, g.ops, logits.shape[0], logits
        self.masks = {g.points[name].node: mask for name, mask in masks.items()}
        self.supports, self.demands = {}, {}
        nodes = _live(g)
        for node in nodes:
            if self.ops[node.name].axis is not None:
                self.supports[node.name] = acting(self.ops[node.name]).support(node, self.ops[node.name], self)
                self.demands[node.name] = torch.zeros(self.rows, self.ops[node.name].size, dtype=torch.bool)
        for node in reversed(nodes):
            acting(self.ops[node.name]).demand(node, self.ops[node.name], self, self.demands.get(node.name))
        self.kept = {name: None if self.ops[name].holds_all else s & self.demands[name]
                     for name, s in self.supports.items()}

    def op(self, node: Any) -> Any:
        return self.ops[node.name]

    def shape(self, node: Any) -> Any:
        return self.g.shapes.get(node.name) if isinstance(node, fx.Node) else None

    def module(self, node: fx.Node) -> nn.Module:
        return self.model.get_submodule(target_name(node))

    def full(self, size: int) -> torch.Tensor:
        return torch.ones(self.rows, size, dtype=torch.bool)

    def support_of(self, node: fx.Node) -> torch.Tensor:
        return self.supports[node.name] if node.name in self.supports else self.full(self.ops[node.name].size)

    def mask(self, node: fx.Node) -> torch.Tensor:
        return self.masks[node.name] if node.name in self.masks else self.full(self.ops[node.name].size)

    def need(self, source: Any, wanted: torch.Tensor | None) -> None:
        if isinstance(source, fx.Node) and source.name in self.demands:
            self.demands[source.name] |= True if wanted is None else wanted

    def logits_demand(self, out: Any) -> torch.Tensor:
        shape = self.shape(out)
        if not isinstance(shape, tuple) or len(shape) != 2 or self.ops[out.name].axis != 1:
            raise ModaError("composition needs a model whose output is one [batch, classes] tensor")
        if shape[1] != self.logits.shape[1]:
            raise ModaError(f"the model has {shape[1]} logits, the masks are for {self.logits.shape[1]} classes")
        return self.logits

    def sliced_rows(self, node: fx.Node) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """K × units: the output rows and input columns a sliced layer keeps (None: all); an empty set keeps one
        unit, as the composed layer does (modules cannot have zero channels)."""
        op = self.ops[node.name]
        reads = getattr(op.rule, "reads", None)
        cols = self.kept[node.all_input_nodes[0].name] if reads and reads(node, op, self) else None  # its input's
        rows, cols = (None if r is None else r.clone() for r in (self.kept[node.name], cols))
        for kept in (r for r in (rows, cols) if r is not None):
            kept[:, 0] |= ~kept.any(1)
        return rows, cols


def _indices(kept: torch.Tensor | None) -> torch.Tensor | None:
    """The units row 0 of ``kept`` keeps, as indices (None: all of them, or no row)."""
    if kept is None:
        return None
    index = kept[0].nonzero().flatten()
    return None if len(index) == kept.shape[1] else index


class _Rewriter:
    """Builds the composed graph from one row of an analysis."""

    def __init__(self, a: _Analysis, classes: list[int]) -> None:
        self.a, self.g, self.model, self.ops, self.classes = a, a.g, a.model, a.ops, classes
        self.held = {name: _indices(k) for name, k in a.kept.items()}
        self.graph, self.env, self.root = _ComposedGraph(), dict[str, fx.Node](), dict[str, Any]()
        self.device = next(iter(self.model.parameters()), torch.empty(0)).device
        self.shape, self.op, self.module = a.shape, a.op, a.module

    def kept(self, node: fx.Node) -> torch.Tensor | None:
        return self.held.get(node.name)

    def adapt(self, source: Any, wanted: torch.Tensor | None, axis: int | None = None) -> Any:
        """The composed value of ``source`` holding exactly the units ``wanted`` (None: all) along ``axis`` (its unit
        axis by default), zeros for those it does not hold."""
        if not isinstance(source, fx.Node):
            return source
        new, op = self.env[source.name], self.ops[source.name]
        if axis is not None and axis != op.axis:  # not its units: it holds all of that dim
            return self.adapt_new(new, None, wanted, self.shape(source)[axis], axis)
        return new if op.axis is None else \
            self.adapt_new(new, None if op.holds_all else self.held.get(source.name), wanted, op.size, op.axis)

    def adapt_new(self, new: fx.Node, held: torch.Tensor | None, wanted: torch.Tensor | None, size: int,
                  axis: int) -> fx.Node:
        if held is None and wanted is None or held is not None and wanted is not None and torch.equal(held, wanted):
            return new
        held = torch.arange(size) if held is None else held
        position = torch.full((size,), -1, dtype=torch.long)
        position[held] = torch.arange(len(held))
        index = position[torch.arange(size) if wanted is None else wanted]
        if bool((index >= 0).all()):
            return self.graph.call_method("index_select", (new, axis, self.constant(index)))
        index[index < 0] = len(held)
        return self.graph.call_function(zero_fill_gather, (new, self.constant(index), axis))

    def constant(self, value: Any) -> fx.Node:
        name = f"_moda_{len(self.root)}"
        self.root[name] = value.to(self.device)
        return self.graph.get_attr(name)

    def copy(self, node: fx.Node, replace: Mapping[fx.Node, Any]) -> fx.Node:
        if node.op == "call_module" and node.target not in self.root:  # a module kept whole: a copy of its own
            self.root[target_name(node)] = module = module_view(self.module(node))
            for part in module.modules():
                part._parameters = {k: None if v is None else nn.Parameter(v.detach().clone(), v.requires_grad)
                                    for k, v in part._parameters.items()}
                part._buffers = {k: None if v is None else v.clone() for k, v in part._buffers.items()}
            if node.target in self.g.inplace_modules:
                set_attributes(module, inplace=False)
        feed = lambda n: replace[n] if n in replace else self.env[n.name]  # noqa: E731
        return self.graph.create_node(node.op, node.target, fx.map_arg(node.args, feed), fx.map_arg(node.kwargs, feed),
                                      node.name, node.type)

    def get_attr(self, node: fx.Node) -> fx.Node:
        value = attribute(self.model, target_name(node))
        if isinstance(value, torch.Tensor):
            value = nn.Parameter(value.detach().clone(), value.requires_grad) if isinstance(value, nn.Parameter) \
                else value.detach().clone()
        self.root[target_name(node)] = value
        return self.graph.get_attr(target_name(node))

    def sliced(self, node: fx.Node) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The output and input units a sliced layer keeps, as indices (None: all)."""
        rows, cols = self.a.sliced_rows(node)
        return _indices(rows), _indices(cols)

    @staticmethod
    def sliced_module(module: nn.Module, tensors: Mapping[str, torch.Tensor | None], **attributes: Any) -> nn.Module:
        """A copy of ``module`` holding ``tensors`` (its parameters and buffers, sliced copies) and ``attributes``."""
        new = module_view(module)
        for name, tensor in tensors.items():  # fresh copies (``oprules.pick``)
            if name in module._parameters:
                new._parameters[name] = None if tensor is None else \
                    nn.Parameter(tensor, module.get_parameter(name).requires_grad)
            else:
                new._buffers[name] = tensor
        new.__dict__.update(attributes)
        return new

    def call_sliced(self, node: fx.Node, module: nn.Module, feed: fx.Node) -> fx.Node:
        target = target_name(node) if node.target not in self.root else f"{node.target}_{len(self.root)}"
        self.root[target] = module
        new = self.graph.call_module(target, (feed, *node.args[1:]), dict(node.kwargs))
        if (kept := self.kept(node)) is not None and len(kept) == 0:  # an empty set: the one unit made is dropped
            new = self.graph.call_method("narrow", (new, self.ops[node.name].axis, 0, 0))
        return new

    def run(self) -> fx.GraphModule:
        for node in _live(self.g):
            self.env[node.name] = acting(self.ops[node.name]).rewrite(node, self.ops[node.name], self)
        for node in reversed(list(self.graph.nodes)):  # what no output needs (a split bypassed, say)
            if node.op not in ("output", "placeholder") and not node.users:
                self.graph.erase_node(node)
        return fx.GraphModule(self.root, self.graph, "ComposedModule").eval()


# ----------------------------------------------------------------------------------------------
# checks

def _checked_graph(model: nn.Module) -> NetGraph:
    """The model's graph, or a ``ModaError`` saying why module size, overlap and composition cannot read one."""
    g = graph_of(model)  # an untraceable model: the TraceError that says why
    g.check_composable()
    return g


def composition_blocker(model: nn.Module) -> str | None:
    """Why ``model`` cannot be composed (None when it can): no traceable forward, or an in-place op on a view."""
    try:
        _checked_graph(model)
    except (ModaError, TraceError) as error:
        return str(error)
    return None


def limits(model: nn.Module) -> list[str]:
    """What composition cannot do for ``model``, one line each: why it cannot compose at all (rates and masks still
    work), or what it keeps whole and which points reach the logits directly (``NetGraph.limits``)."""
    blocker = composition_blocker(model)
    if blocker is not None:
        return [f"{blocker}; rates and masks work, module size, overlap and composition do not"]
    return graph_of(model).limits()


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], graph: NetGraph | None = None) -> int:
    """Masks must cover exactly the model's points with shape (num_classes, units); returns num_classes."""
    units = {n: p.units for n, p in graph.points.items()} if graph is not None else point_units(model)
    num_classes = arch_of(model)["num_classes"]
    if set(masks) != set(units):
        missing, extra = sorted(set(units) - set(masks)), sorted(set(masks) - set(units))
        raise ModaError(f"masks do not belong to this model: missing points {missing[:4]}, unknown points {extra[:4]}")
    for point, count in units.items():
        if tuple(masks[point].shape) != (num_classes, count):
            raise ModaError(f"mask for point {point!r} has shape {tuple(masks[point].shape)}, expected "
                            f"({num_classes}, {count}) for this model: masks from another model?")
    return num_classes


# ----------------------------------------------------------------------------------------------
# composition and overlap

def compose_module(model: nn.Module, masks: Mapping[str, torch.Tensor], classes: Iterable[int]) -> fx.GraphModule:
    """The smaller network that keeps the union of ``classes``' modules (eval mode, no training): an fx
    ``GraphModule`` whose logits are ``classes`` in sorted order, with ``classes``, ``input_shape`` and
    ``kept_whole`` ((op, reason) for what could not be sliced)."""
    g = _checked_graph(model)
    num_classes = check_masks(model, masks, g)
    classes = sorted(check_classes(list(classes), num_classes, "composition"))
    union = {point: torch.as_tensor(mask).bool()[classes].any(0, keepdim=True) for point, mask in masks.items()}
    empty = [point for point, kept in union.items() if not kept.any()]
    if empty:  # a decomposition keeps at least one unit per class and point (decompose.masks_from_rates)
        raise ModaError(f"classes {classes} keep no unit at point {empty[0]!r}"
                        f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}: a module needs at least one "
                        "unit at every point, as decompositions keep")
    logits = torch.zeros(1, num_classes, dtype=torch.bool)
    logits[0, classes] = True
    with torch.no_grad():
        module = _Rewriter(_Analysis(g, model, union, logits), classes).run()
    set_attributes(module, classes=classes, input_shape=input_shape_of(model), kept_whole=g.kept_whole())
    return module  # on the model's device: weights are sliced from its own, constants made there
