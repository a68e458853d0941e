"""Activation call sites of any traceable model, found on its ``torch.fx`` graph.

A *site* is one call of an activation in the model's forward pass: an ``nn.ReLU``/``nn.ReLU6`` module call
(a module called twice is two sites), ``F.relu``, ``torch.relu`` or ``Tensor.relu``; GELU and SiLU calls are
sites only when asked for (``points="gelu"``, ``"silu"`` or a list). Sites are named exactly as
``torchvision.models.feature_extraction.get_graph_node_names`` names graph nodes in eval mode
(``layer1.0.relu``, ``layer1.0.relu_1``, ``relu_3`` for a functional call at top level), so for a zoo model
the site names are its ReLU module paths, i.e. ``moda_core.activations.modular_points``. One difference:
torchvision's own building blocks (``Conv2dNormActivation``, ...) are traced through rather than kept as
leaves, so the ReLU6 of MobileNetV2's stem is the site ``features.0.2``.

Units: channels (dim 1) of 4-D and 2-D activations, features (the last dim) of 3-D token activations. When
the graph shows that a 3-D activation is a Linear's output with its last two dims swapped (the zoo ViT lays
its MLP hidden layer out channels-first, B×H×T), the units follow the Linear's features (dim 1 there).

A *tapped* model (``moda_core.tapped``) carries a ``Tap`` module after each of its sites; tracing it finds the
taps as its sites, named and typed as the sites they follow.

``masked_graph`` builds the *masked full model* on the graph: the model with every unit outside a site's
mask zeroed at every call of that site; composition must equal it (docs/design.md, Composition).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from moda_core.errors import ModaError

# activation kinds a site can be, and the module classes / functions / methods behind each
_MODULES: dict[str, tuple[type[nn.Module], ...]] = {
    "relu": (nn.ReLU, nn.ReLU6), "gelu": (nn.GELU,), "silu": (nn.SiLU,)}
_FUNCTIONS: dict[str, tuple] = {
    "relu": (F.relu, torch.relu, F.relu6, torch.relu_, F.relu_), "gelu": (F.gelu,), "silu": (F.silu,)}
_METHODS: dict[str, tuple[str, ...]] = {"relu": ("relu", "relu_"), "gelu": (), "silu": ()}
KINDS = tuple(_MODULES)
# a unit fires when its activation exceeds this somewhere (any position of a map or any token); for ReLU
# sites "> 0" is "≠ 0"
DEFAULT_THRESHOLD = 0.0


class TraceError(ModaError):
    """fx cannot trace the model's forward pass (Python control flow on tensor values, ...)."""


@dataclass(frozen=True)
class Site:
    """One activation call site: its name (feature-extraction naming), the activation ``kind``
    (``relu``/``gelu``/``silu``), the fx node's name and what it calls (module path or function name),
    and, when shapes are known (``activation_sites(..., example_input=...)``), the activation's shape
    (batch included) and its unit dimension ``dim``."""

    name: str
    kind: str
    node: str
    target: str
    shape: tuple[int, ...] | None = None
    dim: int | None = None

    @property
    def units(self) -> int | None:
        """Number of units (None when shapes are unknown)."""
        return None if self.shape is None or self.dim is None else self.shape[self.dim]

    @staticmethod
    def unit_dim_for(ndim: int) -> int:
        """The default unit dimension of an ``ndim``-D activation: dim 1 for 4-D and 2-D, the last dim for
        3-D token activations."""
        if ndim == 3:
            return 2
        if ndim in (2, 4):
            return 1
        raise ModaError(f"an activation site must be 2-D, 3-D or 4-D, got a {ndim}-D activation")


class Tap(nn.Module):
    """The identity, placed after one activation site of a tapped model; hooks record and mask its output."""

    def __init__(self, site: Site, threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__()
        self.site, self.unit_dim, self.threshold = site.name, site.dim, float(threshold)
        self.kind, self.units = site.kind, site.units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"site={self.site!r}, kind={self.kind}, units={self.units}, unit_dim={self.unit_dim}"


def _kinds(points: str | Sequence[str]) -> tuple[str, ...]:
    kinds = (points,) if isinstance(points, str) else tuple(points)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ModaError(f"unknown activation kind(s) {unknown or list(kinds)}: expected some of {', '.join(KINDS)}")
    return kinds


@dataclass
class Traced:
    """A traced model: the fx ``GraphModule``, fx node → feature-extraction name, and the sites."""

    module: fx.GraphModule
    names: dict[fx.Node, str]
    sites: dict[str, Site]

    def node(self, site: str) -> fx.Node:
        wanted = self.sites[site].node
        return next(n for n in self.module.graph.nodes if n.name == wanted)


def site_kind(module: fx.GraphModule, node: fx.Node, kinds: Sequence[str]) -> str | None:
    """The activation kind node ``node`` calls, if it is one of ``kinds``."""
    for kind in kinds:
        if node.op == "call_module" and isinstance(module.get_submodule(node.target), _MODULES[kind]):
            return kind
        if node.op == "call_function" and node.target in _FUNCTIONS[kind]:
            return kind
        if node.op == "call_method" and node.target in _METHODS[kind]:
            return kind
    return None


def trace(model: nn.Module, points: str | Sequence[str] = "relu",
          example_input: torch.Tensor | None = None) -> Traced:
    """Trace ``model`` in eval mode as torchvision's feature extraction does; find its activation sites.

    With ``example_input`` the graph's tensor shapes are propagated (``node.meta["tensor_meta"]``) and every
    site gets its shape and unit dimension. The model's train/eval mode is restored afterwards.
    """
    from moda_core._tv import import_torchvision

    import_torchvision()
    from torchvision.models import feature_extraction as fe

    kinds = _kinds(points)
    was_training = model.training
    tapped = any(isinstance(module, Tap) for module in model.modules())
    # torchvision's default tracer arguments, except that its ops' module classes (Conv2dNormActivation,
    # SqueezeExcitation, ...) are traced through instead of kept as leaves: the activations inside are sites
    tracer_kwargs = fe._set_default_tracer_kwargs(None)
    tracer_kwargs["leaf_modules"] = [Tap] if tapped else []
    tracer = fe.NodePathTracer(**tracer_kwargs)
    try:
        graph = tracer.trace(model.eval())
    except Exception as error:  # fx raises TraceError, TypeError, RuntimeError... on dynamic control flow
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TraceError(f"cannot trace {type(model).__name__}: {first}; composition needs a traceable forward "
                         "(no Python control flow on tensor values)") from error
    finally:
        model.train(was_training)
    module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    module.eval()
    names = {node: tracer.node_to_qualname[node] for node in graph.nodes if node in tracer.node_to_qualname}
    if example_input is not None:
        propagate_shapes(module, example_input)
    sites: dict[str, Site] = {}
    for node in graph.nodes:
        tap = module.get_submodule(node.target) if tapped and node.op == "call_module" else None
        if tapped and not isinstance(tap, Tap):
            continue  # a tapped model's sites are its taps
        kind = tap.kind if tapped else site_kind(module, node, kinds)
        if kind is None:
            continue
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        shape, dim = None, None
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            shape = tuple(meta.shape)
            dim = tap.unit_dim if tapped else unit_axis(node)
        name = tap.site if tapped else names[node]
        sites[name] = Site(name, kind, node.name, target, shape, dim)
    return Traced(module, names, sites)


def propagate_shapes(module: fx.GraphModule, example_input: torch.Tensor) -> None:
    """Record every node's output shape in ``node.meta["tensor_meta"]`` (one eval-mode forward pass). Taps
    pass their input on without running their hooks (a recorder on the tapped model must not see this pass)."""
    from torch.fx.passes.shape_prop import ShapeProp

    class _Propagation(ShapeProp):
        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            if isinstance(self.fetch_attr(target), Tap):
                return args[0]
            return super().call_module(target, args, kwargs)

    try:
        with torch.no_grad():
            _Propagation(module).propagate(example_input)
    except Exception as error:  # ShapeProp wraps the op's own error
        cause = error.__cause__ or error
        raise ModaError(f"{module.__class__.__name__} fails on an example input of shape "
                        f"{tuple(example_input.shape)} ({example_input.dtype}): {type(cause).__name__}: "
                        f"{' '.join(str(cause).split())[:300]}") from None


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def unit_axis(node: fx.Node) -> int:
    """The unit dimension of a site's activation (shapes must have been propagated): the default rule of
    ``Site.unit_dim_for``, except that a 3-D activation computed from a Linear's output through a swap of
    its last two dims (and elementwise ops) has its units where the Linear's features went."""
    shape = _shape(node)
    if shape is None:
        raise ModaError(f"no shape recorded for node {node.name}")
    axis = Site.unit_dim_for(len(shape))
    if len(shape) != 3:
        return axis
    source, swapped = node.args[0] if node.args else None, False
    for _ in range(8):  # a short walk back through transposes and elementwise ops
        if not isinstance(source, fx.Node):
            break
        if source.op == "call_method" and source.target == "transpose" and set(source.args[1:3]) in ({1, 2}, {-1, 1},
                                                                                                      {-2, -1}):
            swapped, source = not swapped, source.args[0]
            continue
        if source.op == "call_module":
            module = source.graph.owning_module.get_submodule(source.target)
            if isinstance(module, nn.Linear):
                return 1 if swapped else 2
        if source.op in ("call_module", "call_function", "call_method") and source.args and \
                isinstance(source.args[0], fx.Node):
            source = source.args[0]
            continue
        break
    return axis


def activation_sites(model: nn.Module, points: str | Sequence[str] = "relu",
                     example_input: torch.Tensor | None = None) -> dict[str, Site]:
    """Every activation call site of ``model`` (``points``: ``"relu"``, ``"gelu"``, ``"silu"`` or a list),
    in forward order, keyed by its feature-extraction name. Raises ``ModaError`` if fx cannot trace it."""
    return trace(model, points, example_input).sites


def masked_graph(model: nn.Module, masks: Mapping[str, torch.Tensor], example_input: torch.Tensor,
                 points: str | Sequence[str] = "relu") -> fx.GraphModule:
    """The masked full model: ``model`` (traced, eval mode) with each site's output multiplied by its
    0/1 unit mask (``masks``: site name → bool over units) along the site's unit dimension."""
    traced = trace(model, points, example_input)
    unknown = [name for name in masks if name not in traced.sites]
    if unknown:
        raise ModaError(f"unknown activation site(s) {unknown}: this model's sites are {list(traced.sites)}")
    module, graph = traced.module, traced.module.graph
    for index, (name, mask) in enumerate(masks.items()):
        site = traced.sites[name]
        if mask.dim() != 1 or mask.numel() != site.units:
            raise ModaError(f"mask of site {name!r} has shape {tuple(mask.shape)}, expected ({site.units},)")
        view = [1] * len(site.shape)
        view[site.dim] = -1
        buffer = f"_moda_mask_{index}"
        module.register_buffer(buffer, mask.to(example_input.dtype).view(view))
        node = traced.node(name)
        with graph.inserting_after(node):
            attr = graph.get_attr(buffer)
        with graph.inserting_after(attr):
            scaled = graph.call_function(operator.mul, (node, attr))
        node.replace_all_uses_with(scaled, delete_user_cb=lambda user, keep=scaled: user is not keep)
    graph.lint()
    module.recompile()
    return module.eval()
