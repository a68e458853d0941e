"""Modular activation points: which they are, recording them, masking them. Every call is pure: the model object is
never changed, hooked or switched between training and evaluation, so many threads may share it.

A traceable model's points come from its graph (``moda_core.graph``): recording runs a module built once per model
that returns the logits and every point's activation, units moved to dim 1 (as torchvision's
``create_feature_extractor`` returns intermediate tensors). A model fx cannot trace (``arch["traced"] = False``)
keeps its ``nn.ReLU``/``nn.ReLU6`` modules as points, recorded with forward hooks on a view of the model made for
that call. ``masked_model`` is the *masked full model* of the composition contract; ``units_firing`` says which
units of a recorded activation fire.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Mapping, Sequence

import torch
from torch import fx, nn

from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD, TraceError, bind, graph_of, identity, module_view
from moda_core.hooks import hooks
from moda_core.model_attrs import input_shape_of


def traceable(model: nn.Module) -> bool:
    """Whether ``model`` has a graph (an untraceable model of the user's own is marked ``arch["traced"] = False``)."""
    return (getattr(model, "arch", None) or {}).get("traced", True) is not False


def _relus(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.ReLU6))}


def point_units(model: nn.Module) -> dict[str, int]:
    """Point name → number of units, in forward order."""
    if traceable(model):
        return {name: point.units for name, point in graph_of(model).points.items()}
    param = next(model.parameters())
    _, acts, _ = recorder(model)(torch.zeros(2, *input_shape_of(model), dtype=param.dtype, device=param.device))
    return {name: act.shape[1] for name, act in zip(_relus(model), acts, strict=True)}


def modular_points(model: nn.Module) -> list[str]:
    """Names of the model's points, in forward order."""
    return list(point_units(model))


def firing_threshold(model: nn.Module) -> float:
    """A unit fires where its activation exceeds this (0, unless the model's ``arch`` says otherwise)."""
    return float((getattr(model, "arch", None) or {}).get("threshold", DEFAULT_THRESHOLD))


def nonnegative_points(model: nn.Module) -> bool:
    """Whether every point's activation is ≥ 0 (ReLU and ReLU6; not GELU or SiLU)."""
    return not traceable(model) or all(p.kind == "relu" for p in graph_of(model).points.values())


class _HookRecorder(nn.Module):
    """An untraceable model's ReLU modules, recorded with hooks: on a view made per call (pure) or, for training,
    on the model itself while its forward runs."""

    model: nn.Module  # kept out of its submodules
    pure: bool

    def __init__(self, model: nn.Module, pure: bool) -> None:
        super().__init__()
        self.__dict__.update(model=model, pure=pure)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple, tuple]:
        model = module_view(self.model) if self.pure else self.model
        cache: dict[str, torch.Tensor] = {}

        def hook_for(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
            def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
                if name in cache:
                    raise ModaError(f"ReLU module {name!r} ran twice in one forward pass; give every activation point "
                                    "its own nn.ReLU instance (or make the forward traceable)")
                cache[name] = output
            return hook

        relus = _relus(model)
        with hooks(forward=[(module, hook_for(name)) for name, module in relus.items()]):
            logits = model(x)
        missing = [name for name in relus if name not in cache]
        if missing:
            raise ModaError(f"activation point(s) {missing[:4]} did not run in the forward pass")
        return logits, tuple(cache[name] for name in relus), ()


def _recording_graph(model: nn.Module, training: bool, extras: Mapping[str, str]) -> fx.Graph:
    """The model's graph returning (logits, point activations with units on dim 1, the first output of each module
    call ``extras`` names)."""
    g = graph_of(model)
    graph, nodes = g.mode_graph(model, training)
    calls: dict[str, fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, node)
    missing = [target for target in extras.values() if target not in calls]
    if missing:
        raise ModaError(f"no call of module(s) {missing} in the forward pass")
    new, env = fx.Graph(), dict[str, fx.Node]()
    for node in graph.nodes:
        if node.op != "output":
            env[node.name] = new.node_copy(node, lambda n: env[n.name])
    acts = [env[nodes[name]] if p.axis == 1 else new.call_method("movedim", (env[nodes[name]], p.axis, 1))
            for name, p in g.points.items()]
    logits = fx.node.map_arg(graph.output_node().args[0], lambda n: env[n.name])
    new.output((logits, tuple(acts), tuple(env[calls[t].name] for t in extras.values())))
    return new


_PURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {extras: (identity, recorder)}
_PURE_LOCK = threading.Lock()


def recorder(model: nn.Module, training: bool = False, extras: Mapping[str, str] | None = None) -> nn.Module:
    """A module ``x → (logits, activations, extras)``: every point's activation (units on dim 1, in point order)
    and the outputs of the module calls ``extras`` names (key → module path: MwT's gates).

    ``training=False``: pure, over eval-mode views of the model's tensors, built once per model and shared.
    ``training=True``: over the model's own modules (its train/eval mode is theirs), the graph traced in training
    mode, for the one who trains it."""
    extras = dict(extras or {})
    if not traceable(model):
        if extras:
            raise ModaError(f"{type(model).__name__} cannot be traced, so module outputs cannot be recorded")
        return _HookRecorder(model, pure=not training)
    if training:
        return bind(_recording_graph(model, True, extras), model, pure=False, class_name="Recorder")
    key, stamp, g = tuple(sorted(extras.items())), identity(model), graph_of(model)
    with _PURE_LOCK:
        known = _PURE.setdefault(model, {}).get(key)
    if known is None or known[0] != stamp:
        graph = g.cached(("recording", key), lambda: _recording_graph(model, False, extras))
        known = (stamp, bind(graph, model, pure=True, inplace_modules=g.inplace_modules, class_name="Recorder"))
        with _PURE_LOCK:
            _PURE[model][key] = known
    return known[1]


@torch.no_grad()
def run_with_cache(model: nn.Module, x: torch.Tensor,
                   points: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One eval-mode forward pass; the logits and point name → activation (units on dim 1)."""
    names = modular_points(model)
    unknown = [p for p in points or () if p not in names]
    if unknown:
        raise ModaError(f"unknown activation point(s) {unknown}: this model's points are {names}")
    logits, acts, _ = recorder(model)(x)
    cache = dict(zip(names, acts, strict=True))
    return logits, cache if points is None else {p: cache[p] for p in points}


def masked_model(model: nn.Module, unit_masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The masked full model (eval mode): ``model`` with every unit whose mask entry is False zeroed at each named
    point (a conv channel at every position, a token unit at every token). A new module over the model's tensors."""
    units = point_units(model)
    masks = {p: torch.as_tensor(m).bool() for p, m in unit_masks.items()}
    for point, mask in masks.items():
        if point not in units:
            raise ModaError(f"unknown activation point {point!r}: this model's points are {list(units)}")
        if mask.shape != (units[point],):
            raise ModaError(f"mask of point {point!r} has shape {tuple(mask.shape)}, expected ({units[point]},)")
    param, view = next(model.parameters()), module_view(model)
    if not traceable(model):
        modules = dict(view.named_modules())
        for point, mask in masks.items():
            scale = mask.to(param.device, param.dtype)
            modules[point].register_forward_hook(
                lambda _m, _i, out, s=scale: out * s.view(1, -1, *[1] * (out.dim() - 2)))
        return view
    g = graph_of(model)
    g.check_composable()
    graph, env = fx.Graph(), dict[str, fx.Node]()
    for node in g.graph.nodes:
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])
        site = g.point_at(node)
        if site is not None and site.name in masks:
            target = f"_moda_mask_{len(view._buffers)}"
            view.register_buffer(target, masks[site.name].to(param.device, param.dtype).view(
                [-1 if d == site.axis else 1 for d in range(len(site.shape))]))
            env[node.name] = graph.call_function(torch.mul, (env[node.name], graph.get_attr(target)))
    return bind(graph, view, pure=True, inplace_modules=g.inplace_modules, class_name="MaskedModel").eval()


def units_firing(activation: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """B×N bool: which units fire per sample (units on dim 1): a unit fires where its activation exceeds ``threshold``
    at some position (a conv channel anywhere in its map, a token unit at any token); for ReLU and 0: non-zero."""
    return (activation.flatten(2).amax(2) if activation.dim() > 2 else activation) > threshold


__all__ = ["TraceError", "firing_threshold", "masked_model", "modular_points", "nonnegative_points", "point_units",
           "recorder", "run_with_cache", "traceable", "units_firing"]
