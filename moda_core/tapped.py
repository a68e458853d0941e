"""A model of any definition, made ready for MODA: its traced graph with a *tap* after every activation site.

``tap_sites(model, example_input)`` traces ``model`` (``moda_core.graph.trace``) and inserts after each
activation call site an identity module, a ``Tap``, named by the site. Training, decomposition and the
dashboard hook the taps exactly as they hook a zoo model's ``nn.ReLU`` modules, so a model that calls
``F.relu``, calls one ``nn.ReLU`` at two places or uses ReLU6 is recorded and masked site by site.

The tapped model is an ``fx.GraphModule`` that *shares* the original model's modules, parameters and buffers
(the same objects, the same hierarchy), so its ``state_dict`` has exactly the original model's keys and
training it trains the original. Tracing a tapped model again finds its taps as its sites, under the original
names (``moda_core.graph.trace``): composition and the masked full model work on it directly.
The graph is traced in eval mode: a forward that branches on ``self.training`` in Python runs its eval branch
(``nn.Dropout``/``nn.BatchNorm`` modules still follow ``.train()``/``.eval()``, being called as modules).

Each tap knows its site's unit dimension and hands the recorder its activation with the units on dim 1
(token activations B×T×F become B×F×T), so the losses and the firing rule see every site alike.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import fx, nn

from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD, Tap, trace


class TappedModule(fx.GraphModule):
    """The tapped model's class: a ``GraphModule`` whose deep copy keeps the whole module hierarchy (a plain
    ``GraphModule`` copy keeps only what its graph calls), its taps and its ``arch``/``input_shape``."""

    def __deepcopy__(self, memo: dict) -> TappedModule:
        copied = super().__deepcopy__(memo)  # deep-copies all of __dict__ into memo first
        for name, child in self.named_children():
            copied._modules[name] = copy.deepcopy(child, memo)
        for name, parameter in self.named_parameters(recurse=False):
            copied._parameters[name] = copy.deepcopy(parameter, memo)
        for name, buffer in self.named_buffers(recurse=False):
            copied._buffers[name] = copy.deepcopy(buffer, memo)
        for key in ("moda_taps", "arch", "input_shape"):
            if key in self.__dict__:
                copied.__dict__[key] = copy.deepcopy(self.__dict__[key], memo)
        return copied


def tap_sites(model: nn.Module, example_input: torch.Tensor, points: str | Sequence[str] = "relu",
              threshold: float = DEFAULT_THRESHOLD) -> fx.GraphModule:
    """``model`` traced, with a ``Tap`` after every activation site of the kinds ``points``.

    Raises ``ModaError`` when fx cannot trace the model or it has no such site."""
    traced = trace(model, points, example_input)
    if not traced.sites:
        kinds = points if isinstance(points, str) else ", ".join(points)
        raise ModaError(f"{type(model).__name__} has no activation point: no {kinds} call in its forward pass "
                        "(MODA's objectives act on ReLU activations; GELU or SiLU count only with --points gelu/silu)")
    module, graph = traced.module, traced.module.graph
    taps: dict[str, Tap] = {}
    for index, (name, site) in enumerate(traced.sites.items()):
        tap = Tap(site, threshold)
        target = f"moda_tap_{index}"
        module.add_module(target, tap)
        node = traced.node(name)
        with graph.inserting_after(node):
            tapped = graph.call_module(target, (node,))
        node.replace_all_uses_with(tapped, delete_user_cb=lambda user, keep=tapped: user is not keep)
        taps[name] = tap
    graph.lint()
    module = TappedModule(module, graph, type(model).__name__)
    # share the whole original hierarchy (GraphModule copies only what the graph calls, through placeholders)
    for name, child in model.named_children():
        module._modules[name] = child
    for name, parameter in model.named_parameters(recurse=False):
        module._parameters[name] = parameter
    for name, buffer in model.named_buffers(recurse=False):
        module._buffers[name] = buffer
        if name in model._non_persistent_buffers_set:
            module._non_persistent_buffers_set.add(name)
    module.__dict__["moda_taps"] = taps  # a plain attribute: the taps are already submodules
    module.train(model.training)
    return module


def is_tapped(model: nn.Module) -> bool:
    return "moda_taps" in getattr(model, "__dict__", {})


def taps_of(model: nn.Module) -> dict[str, Tap]:
    """Site name → tap of a tapped model (empty for any other model)."""
    return dict(model.__dict__.get("moda_taps", {}))
