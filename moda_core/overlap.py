"""Weight overlap between class modules, from the masks alone (docs/design.md, Weight overlap): the composition's
walks (``moda_core.compose``) run with one mask row per class, and for a layer keeping output rows R and input
columns C per class, classes i and j both keep ``(R Rᵀ)[i, j] · (C Cᵀ)[i, j] · kernel`` of its weights: every pair's
shared weights in one pass, checked against a brute-force count of the composed modules' weights in the tests.
"""
from __future__ import annotations

import math
from typing import Literal, Mapping, overload

import torch
from torch import nn

from moda_core.compose import _Analysis, _checked_graph, _live, check_masks
from moda_core.graph import attribute
from moda_core.oprules import target_name

__all__ = ["layer_of", "overlap_counts"]


def layer_of(model: nn.Module, name: str) -> str:
    """The layer a parameter belongs to, for overlap by layer: the model's child holding it, or inside a container
    (``nn.Sequential``, ``nn.ModuleList``/``ModuleDict``) the container's child, and so on down."""
    module, path = model, []
    for part in name.split(".")[:-1]:
        child = module._modules.get(part)
        if child is None:
            break
        path.append(part)
        if not isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            break
        module = child
    return ".".join(path) or name


def _shared(parameter: torch.Tensor, uses: list, k: int) -> torch.Tensor:
    """Class×class count of ``parameter``'s entries both classes' modules keep; ``uses``: one per call of its
    module, None = whole, or (rows, cols): K × units bool or None = all."""
    if len(uses) == 1 and uses[0] is not None:
        rows, cols = uses[0]
        r = rows.double() if rows is not None else torch.ones(k, parameter.shape[0], dtype=torch.float64)
        if parameter.dim() < 2:
            return r @ r.T
        c = cols.double() @ cols.double().T if cols is not None else parameter.shape[1]
        return (r @ r.T) * c * math.prod(parameter.shape[2:])
    kept = torch.zeros(k, *parameter.shape, dtype=torch.bool)  # used in several places: count entries
    for use in uses:
        rows, cols = use or (torch.ones(k, parameter.shape[0], dtype=torch.bool), None)
        rows = torch.ones(k, parameter.shape[0], dtype=torch.bool) if rows is None else rows
        view = rows.view(k, -1, *[1] * (parameter.dim() - 1))
        if cols is not None and parameter.dim() >= 2:
            view = view & cols.view(k, 1, -1, *[1] * (parameter.dim() - 2))
        kept |= view.expand_as(kept)
    return kept.flatten(1).double() @ kept.flatten(1).double().T


@overload
def overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   by_layer: Literal[False] = False) -> torch.Tensor: ...
@overload
def overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   by_layer: Literal[True]) -> dict[str, torch.Tensor]: ...
@overload
def overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   by_layer: bool) -> torch.Tensor | dict[str, torch.Tensor]: ...
def overlap_counts(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   by_layer: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Class×class counts (float64) of full-model parameters that both single-class modules keep, from the masks
    alone, every class in one pass; the diagonal is each single-class module's parameter count. With ``by_layer``:
    ``{layer: matrix}`` (``layer_of``), which sum to the whole."""
    g = _checked_graph(model)
    k = check_masks(model, masks, g)
    a = _Analysis(g, model, {p: torch.as_tensor(m).bool() for p, m in masks.items()}, torch.eye(k, dtype=torch.bool))
    uses: dict[torch.Tensor, list] = {}
    names: dict[torch.Tensor, str] = {}
    for node in _live(g):
        op = g.ops[node.name]
        if node.op == "get_attr" and isinstance(attribute(model, target_name(node)), nn.Parameter):
            uses.setdefault(attribute(model, target_name(node)), []).append(None)
            names[attribute(model, target_name(node))] = target_name(node)
        elif node.op == "call_module":
            module = model.get_submodule(target_name(node))
            sliced = {} if op.whole or op.axis is None else op.rule.uses(module, *a.sliced_rows(node))
            for name, parameter in (module.named_parameters() if module._modules else module._parameters.items()):
                if parameter is not None:
                    uses.setdefault(parameter, []).append(sliced.get(name))
                    names.setdefault(parameter, f"{node.target}.{name}")
    layers: dict[str, torch.Tensor] = {}
    layer = g.cached("layers", lambda: {})
    for tensor, entries in uses.items():
        shared = torch.full((k, k), float(tensor.numel()), dtype=torch.float64) \
            if all(entry is None for entry in entries) else _shared(tensor, entries, k)
        name = names[tensor]
        key = layer[name] if name in layer else layer.setdefault(name, layer_of(model, name))
        layers[key] = layers[key] + shared if key in layers else shared
    return layers if by_layer else sum(layers.values(), torch.zeros(k, k, dtype=torch.float64))
