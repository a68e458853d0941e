"""From a model to a plain fx graph (``moda_core.graph`` reads it into a ``NetGraph``): tracing on a *view* of
the model (``module_view``: the same tensors in a module tree of its own, in the mode asked for) with torchvision's
node-path tracer confined to the tracing thread, the activation call sites of each kind (``call_sites``), in-place
ops made out of place (``functionalise``) and every node's output shape from one example pass
(``propagate_shapes``)."""
from __future__ import annotations

import inspect
import operator
import threading
from collections import OrderedDict
from typing import Any, Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn

from moda_core import oprules
from moda_core.errors import ModaError

KINDS = ("relu", "gelu", "silu")  # the activations a point may be, and how each is called
_MODULES = {"relu": (nn.ReLU, nn.ReLU6), "gelu": (nn.GELU,), "silu": (nn.SiLU,)}
_FUNCTIONS = {"relu": (F.relu, torch.relu, F.relu6, torch.relu_, F.relu_), "gelu": (F.gelu,), "silu": (F.silu,)}
_METHODS = {"relu": ("relu", "relu_"), "gelu": (), "silu": ()}


class TraceError(ModaError):
    """fx cannot trace the model's forward pass (Python control flow on tensor values, ...)."""


_CONTAINERS = {dict, set, list, OrderedDict}


def module_view(module: nn.Module, training: bool = False) -> nn.Module:
    """``module``'s tree without copying its tensors: each module a shallow copy with containers of its own (its
    own mode and hooks), the same parameter and buffer objects, all in ``training`` mode."""
    return _view(module, training, {})


def _view(m: nn.Module, training: bool, memo: dict[int, nn.Module]) -> nn.Module:
    """(Not a closure: a recursive closure is a reference cycle, left to the garbage collector on every call.)"""
    if id(m) not in memo:
        new = memo[id(m)] = object.__new__(type(m))
        new.__dict__.update({k: type(v)(v) if type(v) in _CONTAINERS else v for k, v in m.__dict__.items()})
        new.__dict__["training"] = training
        new.__dict__["_modules"] = {k: None if c is None else _view(c, training, memo) for k, c in m._modules.items()}
    return memo[id(m)]


# While fx traces, it replaces nn.Module.__call__ and __getattr__ (and a few functions) for the whole process, and
# keeps its patches in one global: two traces at once undo each other's patches, and a forward pass in another
# thread (another visitor's recording, an evaluation) would be routed into the trace. So traces take turns
# (_TRACING), and the tracer lets every thread but its own run modules as if no trace were going on.
_TRACING = threading.Lock()
_TRACER_CLASS: list[type] = []


def _tracer_class() -> type:
    """torchvision's node-path tracer, confined to the thread that traces (made once, after torchvision loads)."""
    if not _TRACER_CLASS:
        from torchvision.models import feature_extraction as fe

        class ThreadTracer(fe.NodePathTracer):
            def trace(self, root: Any, *args: Any, **kwargs: Any) -> fx.Graph:
                self._thread = threading.get_ident()
                return super().trace(root, *args, **kwargs)

            def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
                if threading.get_ident() != self._thread:  # another thread's forward pass: not part of this trace
                    return forward(*args, **kwargs)
                return super().call_module(m, forward, args, kwargs)

            def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
                if threading.get_ident() != self._thread:
                    return attr_val
                return super().getattr(attr, attr_val, parameter_proxy_cache)

        _TRACER_CLASS.append(ThreadTracer)
    return _TRACER_CLASS[0]


def trace(view: nn.Module) -> tuple[fx.Graph, dict[str, str]]:
    from moda_core._tv import import_torchvision

    import_torchvision()
    from torchvision.models import feature_extraction as fe

    # torchvision's tracer, except that its ops' module classes (Conv2dNormActivation, ...) are traced through
    # and module classes with an op rule of their own are single ops
    kwargs = {**fe._set_default_tracer_kwargs(None), "leaf_modules": oprules.leaf_modules()}
    tracer = _tracer_class()(**kwargs)
    try:
        with _TRACING:
            graph = tracer.trace(view)
    except Exception as error:  # fx raises TraceError, TypeError, RuntimeError... on dynamic control flow
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TraceError(f"cannot trace {type(view).__name__}: {first}; this needs a traceable forward (no Python "
                         "control flow on tensor values)") from error
    return graph, {node.name: tracer.node_to_qualname[node] for node in graph.nodes if node in tracer.node_to_qualname}


def site_kind(model: nn.Module, node: fx.Node, kinds: Collection[str]) -> str | None:
    """The activation kind ``node`` calls, if it is one of ``kinds``."""
    return next((kind for kind in kinds if
                 node.op == "call_module" and isinstance(model.get_submodule(oprules.target_name(node)), _MODULES[kind])
                 or node.op == "call_function" and node.target in _FUNCTIONS[kind]
                 or node.op == "call_method" and node.target in _METHODS[kind]), None)


def call_sites(graph: fx.Graph, names: Mapping[str, str], model: nn.Module, kinds: Collection[str],
           wanted: set[str] | None = None) -> dict[str, fx.Node]:
    return {names[n.name]: n for n in graph.nodes if n.op.startswith("call_") and site_kind(model, n, kinds)
            and (wanted is None or names[n.name] in wanted)}


_VIEWS = {"view", "reshape", "transpose", "permute", "expand", "flatten", "squeeze", "unsqueeze", "movedim",
          "unflatten", "narrow", "select", "chunk", "split", "unbind", "T", "mT", "view_as", "expand_as", "diagonal",
          "as_strided", "detach", "swapaxes", "unfold", "getitem"}
_TWINS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
          operator.itruediv: operator.truediv, torch.relu_: torch.relu, F.relu_: F.relu, F.elu_: F.elu,
          F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh, torch.threshold_: F.threshold,  # = F.threshold_
          torch.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh, torch.clamp_: torch.clamp}


def _out_of_place(node: fx.Node) -> Callable[[], None] | str | None:
    """For an in-place call: a function that makes it out of place, or why it cannot be; None for another op."""
    method = oprules.target_name(node) if node.op == "call_method" else ""
    if method.endswith("_") and not method.startswith("_") and method != "requires_grad_":
        twin = method[:-1]
        return (lambda: setattr(node, "target", twin)) if hasattr(torch.Tensor, twin) else \
            f"in-place {method} ({node.name})"
    function = node.target
    if node.op != "call_function" or not callable(function):
        return None
    if function in _TWINS:
        return lambda: setattr(node, "target", _TWINS[function])
    try:
        bound = inspect.signature(function).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return None
    if bound.arguments.get("inplace") is not True:
        return None
    bound.arguments["inplace"] = False

    def fix() -> None:
        node.args, node.kwargs = tuple(bound.args), dict(bound.kwargs)
    return fix


def functionalise(graph: fx.Graph, model: nn.Module, shapes: Mapping[str, Any]) -> tuple[str | None, set[str]]:
    """Make in-place ops out of place and point every later use of a mutated tensor at the op's result. Returns
    why composition must be refused (another view of the memory read afterwards), or None, and the in-place
    module calls (left in place: their result is the mutated tensor)."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    base: dict[fx.Node, fx.Node] = {}
    blocker, modules = None, set()
    for node in list(graph.nodes):
        source = oprules.first(node)
        viewed = oprules.describe(node) in _VIEWS and node.op != "call_module"
        base[node] = base.get(source, source) if viewed and source is not None else node
        module = node.op == "call_module" and \
            getattr(model.get_submodule(oprules.target_name(node)), "inplace", False) is True
        fix = None if module else _out_of_place(node)
        if source is None or not module and fix is None or shapes and node.target in _TWINS and \
                not isinstance(shapes.get(source.name), tuple):  # += on a number
            continue
        aliases = [n for n in graph.nodes if n is not source and base.get(n) is base[source]
                   and any(order[u] > order[node] for u in n.users)]
        if isinstance(fix, str) or aliases:  # a view of the same memory read afterwards would see the change
            blocker = blocker or (fix if isinstance(fix, str) else f"an in-place op ({node.name}) on a tensor also "
                                  f"read through another view ({aliases[0].name})")
            continue
        for user in [u for u in source.users if u is not node and order[u] > order[node]]:
            user.replace_input_with(source, node)
        if module:
            modules.add(oprules.target_name(node))
        elif callable(fix):
            fix()
    graph.lint()
    return blocker, modules


def propagate_shapes(graph: fx.Graph, view: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Node name → output shape (a list for a tuple of tensors, None for anything else), from one pass."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        with torch.no_grad():
            ShapeProp(fx.GraphModule(view, graph)).propagate(example)
    except Exception as error:  # ShapeProp wraps the op's own error
        cause = error.__cause__ or error
        raise ModaError(f"{type(view).__name__} fails on an example input of shape {tuple(example.shape)} "
                        f"({example.dtype}): {type(cause).__name__}: {' '.join(str(cause).split())[:300]}") from None
    metas = {node.name: node.meta.get("tensor_meta") for node in graph.nodes}
    return {name: tuple(m.shape) if hasattr(m, "shape") else [tuple(x.shape) for x in m]
            if isinstance(m, (list, tuple)) and m and all(hasattr(x, "shape") for x in m) else None
            for name, m in metas.items()}

